"""The sweep: experiments from ``sweep.yaml`` as Optuna studies, run by workers on SLURM or here.

- :mod:`~ablations.sweep.spec`: the sweep file's top level, loaded (``load_sweep``);
  :mod:`~ablations.sweep.experiment`: an experiment's blocks; :mod:`~ablations.sweep.plan`: an
  experiment resolved (variants, tuning points), validated strictly;
- :mod:`~ablations.sweep.study`: an experiment's study opened and prepared;
  :mod:`~ablations.sweep.slots`: its slots, their states and progress;
  :mod:`~ablations.sweep.schedule`: claiming, seed reruns, retries, TPE points;
  :mod:`~ablations.sweep.leases`: claims' leases, heartbeats and reaping lost trials;
- :mod:`~ablations.sweep.worker`: the worker loop, signals, ranks;
- :mod:`~ablations.sweep.reuse`: identical runs shared between experiments;
- :mod:`~ablations.sweep.driver`: preparing experiments, local workers and their progress
  (:mod:`~ablations.sweep.progress`);
- :mod:`~ablations.sweep.slurm`: job arrays and the collect job;
- :mod:`~ablations.sweep.cli`: ``python -m ablations sweep | sweep-worker | sweep-collect``.
"""
