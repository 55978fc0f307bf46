"""The reader notebooks use: an experiment's parquet tables, collected first when stale.

The tables (``curves``, ``runs``, ``layers``, ``reference``; their columns and the input
layout) are written by :func:`ablations.results.collect.collect`, re-exported here as
:func:`collect` so that a notebook or script needs this one module. The loaders
(:func:`load_curves`, :func:`load_runs`, :func:`load_layers`, :func:`reference_lines`,
:func:`load_report`) read the parquet and collect first when it is missing or older than the
trial files; committed results without trial directories are read as they are (a missing table
there is an error, not an empty collection). :func:`load_spec`, :func:`describe` and
:func:`variant_table` read sweep.json. ``time_to_target`` is in :mod:`ablations.results.tables`
(it fills the runs' ``steps_to_<t>`` columns); the statistics notebooks use are in
:mod:`ablations.analysis.stats`: ``summarize`` (final-metric mean and 95% t-interval per
variant, divergence rate) and ``performance_profile`` (AlgoPerf's, r_max = 4).

Command line: ``python -m ablations.results collect results/<experiment> [...] [--force]``: a
collect never replaces a table with one of fewer trials or rows without ``--force``, and never
writes into committed results (a folder marked by ``fileio.FROZEN``).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ablations.core.errors import fail
from ablations.core.fileio import read_json
from ablations.results.collect import collect
from ablations.results.layout import (
    CURVES,
    EXPERIMENT_INPUTS,
    INPUTS,
    LAYERS,
    REFERENCE,
    REPORT,
    RUNS,
    SCHEMA,
    TABLES,
    ResultsError,
    trial_dirs,
)
from ablations.results.outcomes import with_outcomes
from ablations.results.report import CollectReport

__all__ = [
    "CURVES",
    "LAYERS",
    "REFERENCE",
    "REPORT",
    "RUNS",
    "SCHEMA",
    "CollectReport",
    "ResultsError",
    "collect",
    "collect_main",
    "describe",
    "is_stale",
    "load_curves",
    "load_layers",
    "load_report",
    "load_runs",
    "load_spec",
    "main",
    "reference_lines",
    "variant_table",
]


def is_stale(exp_dir: Path | str) -> bool:
    """Whether the tables are missing, of an older schema, or older than a run file.

    Only an experiment with trial curves on disk can be stale: committed results that keep the
    parquet and not the trial directories are read as they are.
    """
    exp_dir = Path(exp_dir)
    dirs = trial_dirs(exp_dir) if exp_dir.is_dir() else {}
    if not any(
        (d / "metrics.jsonl").exists() or (d / "status.json").exists() for d in dirs.values()
    ):
        return False
    tables = [exp_dir / n for n in TABLES]
    if not all(t.exists() for t in tables):
        return True
    if (read_json(exp_dir / REPORT, tolerant=True) or {}).get("schema") != SCHEMA:
        return True
    written = min(t.stat().st_mtime_ns for t in tables)
    return any(p.stat().st_mtime_ns > written for p in _input_files(exp_dir, dirs))


def _input_files(exp_dir: Path, dirs: Mapping[int, Path]) -> Iterator[Path]:
    for name in EXPERIMENT_INPUTS:
        if (exp_dir / name).exists():
            yield exp_dir / name
    for d in dirs.values():
        yield from (d / name for name in INPUTS if (d / name).exists())


def _load(exp_dir: Path | str, filename: str) -> pd.DataFrame:
    path = Path(exp_dir)
    if not path.is_dir():
        raise ResultsError(f"{path}: no such experiment directory")
    missing = not (path / filename).exists()
    if missing and not trial_dirs(path) and any((path / t).exists() for t in TABLES):
        # committed tables without their trial directories: collecting would empty the others
        raise ResultsError(f"{path / filename}: missing, and no trial directories to collect")
    if missing or is_stale(path):
        report = collect(path)
        if report.missing or report.torn:
            warnings.warn(str(report), stacklevel=3)
    return pd.read_parquet(path / filename)


def load_curves(exp_dir: Path | str) -> pd.DataFrame:
    """The experiment's curves (long format; see :mod:`ablations.results.collect`), collected if
    stale."""
    return _load(exp_dir, CURVES)


def load_runs(exp_dir: Path | str) -> pd.DataFrame:
    """One row per trial (settings, status, final and best metrics, outcome), collected if
    stale. A table collected before outcomes existed (committed studies without their trial
    directories) gets them here, from its own curves and reference lines
    (:func:`ablations.results.outcomes.with_outcomes`): the same computation as collect's."""
    runs = _load(exp_dir, RUNS)
    if "outcome" not in runs:
        runs = with_outcomes(runs, _load(exp_dir, CURVES), _load(exp_dir, REFERENCE))
    return runs


def load_layers(exp_dir: Path | str) -> pd.DataFrame:
    """Per-tensor trust ratios and norms every ``log.layer_every`` steps, collected if stale."""
    return _load(exp_dir, LAYERS)


def reference_lines(exp_dir: Path | str) -> pd.DataFrame:
    """Reference values to draw on MLM-loss plots: ``name``, ``label``, ``phase`` (<NA>: every
    phase) and ``value``; today the unigram entropy of the masked tokens (nats), from the
    experiment's data.json (empty when it has none)."""
    return _load(exp_dir, REFERENCE)


def load_report(exp_dir: Path | str) -> CollectReport:
    """The report of the last :func:`collect` (collected now if stale)."""
    _load(exp_dir, RUNS)
    raw = read_json(Path(exp_dir) / REPORT, tolerant=True) or {}
    known = CollectReport.__dataclass_fields__
    return CollectReport(**{k: v for k, v in raw.items() if k in known})


def load_spec(exp_dir: Path | str) -> dict[str, Any]:
    """The experiment's sweep.json (name, variants, experiment, ...); {} if absent."""
    return read_json(Path(exp_dir) / "sweep.json", tolerant=True) or {}


def describe(exp_dir: Path | str) -> str:
    """The experiment's name, description and claim from sweep.json, as Markdown-ish text."""
    spec = load_spec(exp_dir)
    experiment = spec.get("experiment") or {}
    lines = [f"experiment: {spec.get('name') or Path(exp_dir).name}"]
    lines += [
        f"{key}: {experiment[key]}" for key in ("description", "claim") if experiment.get(key)
    ]
    return "\n".join(lines)


def variant_table(exp_dir: Path | str) -> pd.DataFrame:
    """What each variant sets: one row per variant, one column per toggle (dotted path), as
    sweep.json (which every prepared experiment has, committed ones included) says.

    Raises:
        ResultsError: sweep.json is absent or names no variant.
    """
    variants = load_spec(exp_dir).get("variants") or {}
    if not variants:
        raise ResultsError(f"{Path(exp_dir) / 'sweep.json'}: missing, or without variants")
    return pd.DataFrame.from_dict(variants, orient="index").rename_axis("variant")


# --- command line -------------------------------------------------------------------------------


def collect_main(paths: Sequence[Path | str], *, quiet: bool = False, force: bool = False) -> int:
    """``collect`` for each path: prints each report; a bad path (or a refused one: committed,
    or its tables would shrink without ``force``) prints a one-line error naming it on stderr
    and returns 2 (after the other paths are collected)."""
    code = 0
    for path in paths:
        try:
            report = collect(path, force=force)
        except ResultsError as e:
            code = fail(e)
            continue
        if not quiet:
            print(report)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ablations.results collect EXP_DIR [EXP_DIR ...] [-q] [--force]``."""
    parser = argparse.ArgumentParser(prog="python -m ablations.results")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("collect", help="trial directories -> curves/runs/layers parquet")
    p.add_argument("exp_dirs", nargs="+", type=Path, metavar="EXP_DIR", help="results/<exp>")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    p.add_argument(
        "--force", action="store_true", help="replace tables even with fewer trials or rows"
    )
    args = parser.parse_args(argv)
    return collect_main(args.exp_dirs, quiet=args.quiet, force=args.force)
