"""One training run: everything between a run config and a finished run directory.

- ``resolved``: what the run trains with (knobs per parameter group, λ, tensors, data), the one
  resolution of a config, written to ``resolved.json``;
- ``model``: BERT for pretraining; ``module``: the Lightning module of one phase; ``step_stats``
  and ``noise``: the optimizer's numbers of each step; ``sampling``: which examples each
  micro-batch holds; ``progress``: what a run shows while it runs;
- ``curves``: the run directory's files (curves, status, config, meta);
- ``train``: phases, checkpoints, resume, loggers: ``python -m ablations train``.
"""
