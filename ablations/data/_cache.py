"""Build-once cache entries: a data file plus a JSON metadata file, written atomically.

Each entry is built by at most one process: builders take an exclusive ``fcntl`` lock on
``<file>.lock`` and re-check for the entry once they hold it, so a second process building the
same key waits and then reads the first one's result. Files are written to a temporary name in
the same directory and moved into place with ``os.replace``; the metadata file is moved last, so
its presence means the entry is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablations.core.fileio import flocked, read_json, write_json


@dataclass(frozen=True)
class Entry:
    """A cache entry: the data file, its metadata, and whether this call built it."""

    path: Path
    meta: dict[str, Any]
    built: bool


def key_of(*parts: Any) -> str:
    """A short stable key (sha256 of the JSON of ``parts``)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _locked(path: Path) -> AbstractContextManager[None]:
    return flocked(path.with_name(path.name + ".lock"))


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def cached(
    path: Path, build: Callable[[Path], dict[str, Any]], meta_path: Path | None = None
) -> Entry:
    """Return the entry at ``path``, building it first if it is missing.

    Args:
        path: the data file.
        build: writes the data file to the temporary path it is given and returns the metadata.
        meta_path: where the metadata goes (default ``<path>.json``).
    """
    meta_path = meta_path or path.with_name(path.name + ".json")
    if meta_path.exists() and path.exists():
        return Entry(path, read_json(meta_path), built=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        if meta_path.exists() and path.exists():
            return Entry(path, read_json(meta_path), built=False)
        tmp = _tmp(path)
        try:
            meta = build(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        write_json(meta_path, meta, sort_keys=True)
    return Entry(path, meta, built=True)


def cached_json(path: Path, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A JSON-only entry: the dict at ``path``, computed once (same locking as :func:`cached`)."""
    if path.exists():
        return read_json(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        if path.exists():
            return read_json(path)
        result = compute()
        write_json(path, result, sort_keys=True)
    return result
