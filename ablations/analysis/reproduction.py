"""The committed reproduction (``reproduction/``): what the project ships, and the one command that
writes it.

A user's sweeps write to ``results/`` (not committed). ``reproduction/`` holds the tables, study
journals and figures of the default sweep as the project ran it; a
:data:`~ablations.core.fileio.FROZEN`
marker there makes every sweep, collect and figures command refuse to write into it
(:func:`ablations.core.fileio.check_writable`). ``make reproduce`` reruns the sweep in a staging
folder
(``results/reproduction``, resumable like any sweep) and then calls :func:`publish`, which copies
each finished experiment's tables and figures over the committed ones::

    python -m ablations.analysis.reproduction publish results/reproduction reproduction
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ablations.core.errors import fail
from ablations.core.fileio import FROZEN, read_json, replacing
from ablations.core.status import FINAL

#: An experiment's files that are committed (its trial directories are not: too large).
FILES = (
    "curves.parquet",
    "runs.parquet",
    "layers.parquet",
    "reference.parquet",
    "collect.json",
    "sweep.json",
    "data.json",
    "summary.json",
    "study.journal",
)


#: Files of the staging folder itself that are committed, when present.
ROOT_FILES = ("calibration.json",)


class PublishError(RuntimeError):
    """The staging folder holds nothing publishable; one line naming it."""


def publish(
    staging: Path | str,
    target: Path | str,
    *,
    finished_only: bool = False,
    rerun: str | None = None,
    log: Any = print,
) -> list[Path]:
    """Copy every finished experiment of ``staging`` (and its figures, ``staging/figures``) into
    ``target``, each file atomically; returns the files written. Experiments of ``target`` that
    ``staging`` lacks are kept. Raises :class:`PublishError` before writing anything when an
    experiment is unfinished or uncollected; with ``finished_only`` such an experiment is left
    out instead (its committed files, if any, are kept) and named in one line each. ``rerun``
    names the command that continues an unfinished experiment (the ``make reproduce*`` target
    that wrote ``staging``) in that line."""
    staging, target = Path(staging), Path(target)
    rerun = rerun or f"rerunning the sweep into {staging}"
    experiments = sorted(p.parent for p in staging.glob("*/sweep.json"))
    if not experiments:
        raise PublishError(f"{staging}: no experiment (no */sweep.json); run the sweep first")
    ready = []
    for exp in experiments:
        try:
            _check_finished(exp, rerun)
            ready.append(exp)
        except PublishError as e:
            if not finished_only:
                raise
            log(f"left out: {e}")
    if not ready:
        raise PublishError(f"{staging}: no finished experiment to publish")
    experiments = ready
    written = []
    for exp in experiments:
        for name in FILES:
            if (exp / name).exists():
                written.append(_copy(exp / name, target / exp.name / name))
        figures = staging / "figures" / exp.name
        mine = target / "figures" / exp.name
        pngs = {p.name for p in figures.glob("*.png")}
        for old in mine.glob("*.png"):
            if old.name not in pngs:
                old.unlink()  # a panel the notebooks no longer draw
        written += [_copy(figures / name, mine / name) for name in sorted(pngs)]
    for name in ROOT_FILES:  # the staging folder's own files (the regime map's calibration)
        if (staging / name).exists():
            written.append(_copy(staging / name, target / name))
    marker = target / FROZEN
    if not marker.exists():
        marker.write_text("committed results: written only by `make reproduce`\n")
    return written


def _check_finished(exp: Path, rerun: str) -> None:
    report = read_json(exp / "collect.json")
    if report is None:
        raise PublishError(f"{exp}: not collected (no collect.json); run `make collect` first")
    unfinished = {s: n for s, n in report.get("statuses", {}).items() if n and s not in FINAL}
    if unfinished or not report.get("trials"):
        raise PublishError(f"{exp}: unfinished ({unfinished or 'no trials'}); {rerun} continues it")


def _copy(source: Path, dest: Path) -> Path:
    with replacing(dest) as tmp:
        shutil.copyfile(source, tmp)
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ablations.analysis.reproduction publish STAGING TARGET``."""
    parser = argparse.ArgumentParser(prog="python -m ablations.analysis.reproduction")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("publish", help="copy a finished staging sweep over the committed results")
    p.add_argument("staging", type=Path, help="the staging results folder (results/reproduction)")
    p.add_argument("target", type=Path, help="the committed folder (reproduction)")
    p.add_argument(
        "--finished-only",
        action="store_true",
        help="publish the finished experiments and name the others (a sweep run in parts)",
    )
    p.add_argument(
        "--rerun",
        metavar="COMMAND",
        help="the command that continues an unfinished experiment, named in its error line",
    )
    args = parser.parse_args(argv)
    try:
        written = publish(
            args.staging, args.target, finished_only=args.finished_only, rerun=args.rerun
        )
    except PublishError as e:
        return fail(e)
    print(f"published {len(written)} files into {args.target}; review with git diff --stat")
    return 0


if __name__ == "__main__":
    sys.exit(main())
