"""Identical runs shared between experiments: a finished run is adopted, not recomputed.

Two trials are the same run when their configs resolve to the same run
(:meth:`ablations.run.resolved.Resolved.identity`: every default filled in, display keys out,
the optimizer as its resolved groups, seed included); training is deterministic for a given config
on a given machine, so a second training would redo the same curve. When a trial finishes
(complete or diverged), the worker records it in ``<results>/.runs/<key>.json``; before
training a trial, it looks there, and when a finished run with the same config exists (in this
experiment or another under the same results folder) it hard-links that run's files into the
trial's directory instead of training (a copy where links are not possible), and the trial
reports the same result. ``trial.json`` then says ``reused_from``. Only finished runs are
adopted: two workers that start the same config at the same moment both train it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ablations.config import RunConfig
from ablations.core.fileio import read_json, write_json
from ablations.core.status import DONE
from ablations.run import writer
from ablations.run.resolved import resolve

INDEX = ".runs"


def run_key(config: RunConfig) -> str:
    """The digest of what makes two runs the same run."""
    return resolve(config).key()


def record(results: Path, config: RunConfig, run_dir: Path) -> None:
    """Note the finished run in ``run_dir`` as the one to adopt for its config."""
    path = results / INDEX / f"{run_key(config)}.json"
    write_json(path, {"run_dir": os.path.relpath(run_dir, results)})


def find(results: Path, config: RunConfig, run_dir: Path) -> Path | None:
    """A finished run of the same config elsewhere under ``results``, or None."""
    entry = read_json(results / INDEX / f"{run_key(config)}.json")
    if entry is None:
        return None
    source = results / entry["run_dir"]
    if source.resolve() == run_dir.resolve():
        return None
    status = read_json(source / "status.json")
    if status is None or status.get("status") not in DONE:
        return None
    return source


def adopt(source: Path, run_dir: Path) -> None:
    """Link (or copy) every file of ``source`` into ``run_dir``, ``status.json`` last, so an
    interrupted adoption is an unfinished run that trains normally; ``trial.json`` is the
    trial's own and is kept."""
    own = ("trial.json", writer.LOCK)  # the trial's own claim, and its own writer lock
    files = [p for p in sorted(source.rglob("*")) if p.is_file() and p.name not in own]
    files.sort(key=lambda p: p.relative_to(source) == Path("status.json"))
    for src in files:
        dst = run_dir / src.relative_to(source)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.adopt")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
