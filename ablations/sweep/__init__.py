"""The sweep: experiments from ``sweep.yaml`` as Optuna studies, run by workers on SLURM or here.

- :mod:`~ablations.sweep.spec`: the sweep file, validated strictly;
- :mod:`~ablations.sweep.study`: slots, claims, leases and retries in an experiment's study;
- :mod:`~ablations.sweep.worker`: the worker loop, signals, ranks;
- :mod:`~ablations.sweep.driver`: preparing experiments, local workers and their progress;
- :mod:`~ablations.sweep.slurm`: job arrays and the collect job;
- :mod:`~ablations.sweep.cli`: ``python -m ablations sweep | sweep-worker | sweep-collect``.
"""
