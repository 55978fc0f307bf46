"""The results room: an experiment's run directories and study -> tidy parquet tables, and the
readers notebooks use.

- :mod:`~ablations.results.collect`: trial directories and the study -> ``curves``, ``runs``,
  ``layers``, ``reference`` parquet (``python -m ablations.results collect``), in steps:
  :mod:`~ablations.results.trials` (directories and study attempts),
  :mod:`~ablations.results.settings` (a trial's settings), :mod:`~ablations.results.run_rows`
  (a runs row and its status), :mod:`~ablations.results.reference` (reference lines), recorded
  in a :mod:`~ablations.results.report`.
- :mod:`~ablations.results.layout`: the experiment directory's files, inputs and tables.
- :mod:`~ablations.results.tables`: the frames' columns, types and derived columns.
- :mod:`~ablations.results.load`: the loaders (``load_runs``, ``load_curves``, ...), re-exported
  here, so ``from ablations import results; results.load_runs(d)`` is the notebooks' one import.
"""

from ablations.results.load import *  # noqa: F403 (the loaders are this room's public API)
from ablations.results.load import __all__  # noqa: F401
