"""The ablation harness, in rooms that import only the rooms below them (``make lint`` checks it):

- ``studies``: one module per study (the regime map, the batch-scaling study);
- ``analysis``: statistics, reports, comparisons, figures, README tables, publishing;
- ``sweep``: sweep files, Optuna studies, workers on SLURM or here;
- ``results``: run directories and studies -> tidy parquet tables, and their readers;
- ``run``: one training run, and :mod:`ablations.run.resolved`, what a config trains with;
- ``data``: corpora, WordPiece, BERT's examples, NVIDIA's shards;
- ``config``: the run config, built strictly;
- ``core``: errors, files, YAML, the status vocabulary, other libraries' internals.

The modules of the flat layout before the rooms (``ablations.figures``, ``ablations.regime``,
...) still import, with a one-line :class:`DeprecationWarning` naming their new home.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

#: Old flat module -> its room (``from ablations import figures`` keeps working, warned).
MOVED = {
    "batch": "ablations.data.batch",
    "collect": "ablations.results.collect",
    "compare": "ablations.analysis.compare",
    "curves": "ablations.run.curves",
    "errors": "ablations.core.errors",
    "figures": "ablations.analysis.figures",
    "fileio": "ablations.core.fileio",
    "internals": "ablations.core.internals",
    "model": "ablations.run.model",
    "module": "ablations.run.module",
    "noise": "ablations.run.noise",
    "progress": "ablations.run.progress",
    "readme": "ablations.analysis.readme",
    "regime": "ablations.studies.regime",
    "regime_plots": "ablations.studies.regime_plots",
    "report": "ablations.analysis.report",
    "reproduction": "ablations.analysis.reproduction",
    "sampling": "ablations.run.sampling",
    "scaling": "ablations.studies.scaling",
    "scaling_plots": "ablations.studies.scaling_plots",
    "stats": "ablations.analysis.stats",
    "status": "ablations.core.status",
    "step_stats": "ablations.run.step_stats",
    "tables": "ablations.results.tables",
    "train": "ablations.run.train",
    "yamlio": "ablations.core.yamlio",
}


def __getattr__(name: str) -> ModuleType:
    if name not in MOVED:
        raise AttributeError(f"module 'ablations' has no attribute {name!r}")
    warnings.warn(
        f"ablations.{name} moved to {MOVED[name]}; import it from there",
        DeprecationWarning,
        stacklevel=2,
    )
    return importlib.import_module(MOVED[name])
