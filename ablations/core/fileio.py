"""Atomic file writes, the JSON reader and writer, file locks and the guard of committed
results, shared by the run files (curves), the data caches, the sweep's studies and the results
tables."""

from __future__ import annotations

import fcntl
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; it replaces ``path`` (``os.replace``) when the
    block ends normally and is removed when it raises, so ``path`` is never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    # mkstemp creates 0600 files; the result must read like any other tool's output (0644 under
    # the usual umask 022), e.g. for colleagues on a shared cluster filesystem.
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (``/proc``); else set
    and restored at once (``os.umask`` can only be read by setting it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    with replacing(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: Any, *, sort_keys: bool = False) -> None:
    """Write ``data`` to ``path`` as strict JSON (indented), atomically.

    Non-finite floats (a diverging loss) are written as ``null``: every reader, ``jq`` and
    JavaScript included, can parse the file. ``sort_keys`` gives a canonical text (the data
    caches' metadata).
    """
    text = json.dumps(finite(data), indent=1, allow_nan=False, sort_keys=sort_keys)
    write_atomic(path, text + "\n")


def read_json(path: Path, *, tolerant: bool = False) -> Any:
    """The JSON in ``path``, or None when there is no such file.

    ``tolerant``: None for a file that is not valid JSON too (results read run directories that
    a crashed or running worker may have left torn); otherwise that raises
    ``json.JSONDecodeError``: the harness's own files are written atomically, so a bad one is a
    bug to see.
    """
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        if tolerant:
            return None
        raise


def finite(value: Any) -> Any:
    """``value`` with non-finite floats replaced by ``None`` (recursively): strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


@contextmanager
def flocked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (created if needed) for the block."""
    with open(lock_file, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


#: A file that marks a results folder as committed: only ``make reproduce`` (and
#: ``make reproduce-map`` / ``reproduce-scaling`` for ``reproduction/regime_map`` /
#: ``reproduction/batch_scaling``) writes there.
FROZEN = ".frozen"


class FrozenError(RuntimeError):
    """A write into a committed (frozen) results folder; one line naming the folder."""


def check_writable(path: Path | str) -> None:
    """Raise :class:`FrozenError` when ``path`` or a folder above it holds a :data:`FROZEN`
    marker: the project's committed results are written only by ``make reproduce``, never by a
    sweep, a collect or the figures a user runs on them."""
    path = Path(path).resolve()
    for folder in (path, *path.parents):
        if (folder / FROZEN).is_file():
            raise FrozenError(
                f"{folder}: committed results (marked by {FROZEN}) are not written by a sweep, "
                "collect or figures; write to another folder (e.g. results/), or regenerate "
                "them with `make reproduce` (the regime map: `make reproduce-map`; the "
                "batch-scaling study: `make reproduce-scaling`)"
            )
