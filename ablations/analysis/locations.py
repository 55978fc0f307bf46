"""Where results and figures live: the repository's ``results/`` (your sweeps), the committed
``reproduction/`` (never written by a notebook or the runner), the experiments of a results
folder, and the folder each experiment's figures go to. The notebooks reach these through
:mod:`ablations.analysis.figures`; the runner (:mod:`ablations.analysis.notebooks`) uses them
directly, so that neither module imports the other."""

from __future__ import annotations

from pathlib import Path

from ablations import results as res

#: The repository's root (``ablations/analysis/locations.py`` is two folders below it).
REPO = Path(__file__).resolve().parents[2]


def paths(
    experiment: str, results_dir: str | Path | None = None, figures_dir: str | Path | None = None
) -> tuple[Path, Path]:
    """``(exp_dir, figures_dir)`` from a notebook's parameters. ``results_dir=None`` means the
    repository's ``results/`` (your sweeps) when it holds the experiment, else the committed
    ``reproduction/``; ``figures_dir=None`` means ``<results_dir>/figures/<experiment>``, or
    ``results/reproduction-figures/[<folder>/]<experiment>`` for the committed results (any
    folder under ``reproduction/``, which a notebook never writes). Nothing is hard-coded
    elsewhere."""
    if results_dir is None:
        mine = REPO / "results"
        base = mine if (mine / experiment).is_dir() else REPO / "reproduction"
    else:
        base = Path(results_dir)
    out = Path(figures_dir) if figures_dir is not None else figures_root(base) / experiment
    return base / experiment, out


def figures_root(results_dir: str | Path) -> Path:
    """Where figures of ``results_dir`` go by default: ``<results_dir>/figures``, or for a
    folder under the committed ``reproduction/`` (never written by a notebook or the runner)
    ``results/reproduction-figures/<its path inside reproduction/>``."""
    base = Path(results_dir).resolve()
    committed = (REPO / "reproduction").resolve()
    if base == committed or committed in base.parents:
        return REPO / "results" / "reproduction-figures" / base.relative_to(committed)
    return Path(results_dir) / "figures"


def experiments(results_dir: Path | str) -> list[str]:
    """The experiment directories under ``results_dir`` (sorted): folders holding a sweep.json,
    a study journal, a runs table or numbered trial directories."""
    base = Path(results_dir)
    found = []
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        if path.is_dir() and not path.name.startswith(".") and _is_experiment(path):
            found.append(path.name)
    return found


def _is_experiment(path: Path) -> bool:
    marks = ("sweep.json", "study.journal", res.RUNS)
    return any((path / m).exists() for m in marks) or any(
        p.is_dir() and p.name.isdigit() for p in path.iterdir()
    )
