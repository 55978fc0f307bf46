"""The results room: an experiment's run directories and study -> tidy parquet tables, and the
readers notebooks use.

- :mod:`~ablations.results.collect`: trial directories and the study -> ``curves``, ``runs``,
  ``layers``, ``reference`` parquet (``python -m ablations.results collect``).
- :mod:`~ablations.results.tables`: the frames' columns, types and derived columns.
- :mod:`~ablations.results.load`: the loaders (``load_runs``, ``load_curves``, ...), re-exported
  here, so ``from ablations import results; results.load_runs(d)`` is the notebooks' one import.
"""

from ablations.results.load import *  # noqa: F403 (the loaders are this room's public API)
from ablations.results.load import __all__  # noqa: F401
