"""One training run: everything between a run config and a finished run directory.

- ``resolved``: what the run trains with (knobs per parameter group, λ, tensors, data), the one
  resolution of a config, written to ``resolved.json``;
- ``model``: BERT for pretraining; ``module``: the Lightning module of one phase;
  ``step_stats`` and ``noise``: the optimizer's numbers of each step; ``step_records``: a step's
  curve lines from those numbers; ``validation``: the module's validation; ``checkpoint_state``:
  the counters and RNG states a checkpoint carries;
- ``phase_data``: a phase's data module and batches; ``sampling``: which examples each
  micro-batch holds; ``progress``: what a run shows while it runs; ``loggers``: the Lightning
  loggers of ``log.loggers``;
- ``curves``: the run directory's files (curves, status, config, meta); ``checkpoints``: its
  checkpoint files (resume points, phase ends);
- ``train``: the phases of a run, resume and status: ``python -m ablations train``.
"""
