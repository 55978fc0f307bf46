"""An experiment directory's layout: the files the harness writes there, the tables collect
writes next to them, and the checks that a path holds an experiment.

Shared by the writer (:mod:`ablations.results.collect`) and the loaders
(:mod:`ablations.results.load`, which collect again when an input is newer than the tables), so
that both name the same files. The inputs, one experiment ``results/<experiment>/``::

    sweep.json      the resolved experiment (``Plan.to_dict``): {"name", "variants": {variant:
                    {dotted.path: value}}, "experiment": {"description", "claim", "tune", ...}}
    study.journal   Optuna JournalStorage (opened by ``ablations.core.journal.open_journal``);
                    study_name == experiment. Absent with an RDB storage: statuses then come
                    from status.json alone
    data.json       {"phase<i>_unigram_entropy": nats, ...}, written by the sweep's
                    ``prepare_experiments``; without it there is no reference line (and a note)
    <n>/            one per trial, n = the original Optuna trial number (a retry reuses it):
                    trial.json (the worker's claim), resolved.json (what the run trains with:
                    ablations/run/resolved.py), config.yaml, status.json, meta.json,
                    metrics.jsonl, val.jsonl, layers.jsonl (formats: ablations/run/curves.py)
"""

from __future__ import annotations

from pathlib import Path

CURVES, RUNS, LAYERS, REFERENCE, REPORT = (
    "curves.parquet",
    "runs.parquet",
    "layers.parquet",
    "reference.parquet",
    "collect.json",
)
TABLES = (CURVES, RUNS, LAYERS, REFERENCE)
#: Bumped when a table's columns change: older tables are then collected again.
SCHEMA = 1
#: Every run file whose change makes the tables stale.
INPUTS = (
    "trial.json",
    "resolved.json",
    "config.yaml",
    "status.json",
    "metrics.jsonl",
    "val.jsonl",
    "layers.jsonl",
)
#: Experiment files whose change makes the tables stale.
EXPERIMENT_INPUTS = ("sweep.json", "data.json", "study.journal")


class ResultsError(ValueError):
    """A path that is not a readable experiment; the message is one line naming it."""


def experiment_dir(exp_dir: Path | str) -> Path:
    """``exp_dir`` as a path, once it is known to hold an experiment (inputs or tables)."""
    path = Path(exp_dir)
    if not path.is_dir():
        raise ResultsError(f"{path}: no such experiment directory")
    has_inputs = any((path / n).exists() for n in ("sweep.json", "study.journal"))
    if not (has_inputs or trial_dirs(path) or (path / RUNS).exists()):
        raise ResultsError(
            f"{path}: not an experiment directory (no sweep.json, study.journal or trial dirs)"
        )
    return path


def trial_dirs(exp_dir: Path) -> dict[int, Path]:
    """The run directories of an experiment, by trial number (their names)."""
    return {int(p.name): p for p in exp_dir.iterdir() if p.is_dir() and p.name.isdigit()}
