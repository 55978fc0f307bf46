"""Text corpora: the embedded English corpus, and user text files.

The embedded corpus (``DataConfig.source="embedded"``) is real English prose taken from the
documentation that ships inside the project's installed dependencies, so it is available offline
after ``make setup``, with nothing fetched, and is the same wherever the same versions are
installed:

- Packages, in the fixed order of ``EMBEDDED_PACKAGES``, whole packages only, until at least
  ``MIN_WORDS`` words are collected: first those the project pins (transformers, torch, timm,
  numpy, lightning, pytest, h5py: about 1.37 million words after deduplication), then packages
  installed with them (networkx, sympy, torchmetrics, huggingface_hub, setuptools, pydantic,
  jinja2, ...). Their files come from ``importlib.metadata`` (the installed ``RECORD``); nothing
  is imported. Test code (``tests/``, ``testing/``, ``test_*.py``) and licence files are skipped.
- From every ``.py`` file (sorted by path): the module, class and function docstrings, read with
  ``ast``. From shipped ``.md`` / ``.rst`` / ``.txt`` docs: their text.
- Code is dropped: doctest blocks (``>>>`` and the output after it), fenced blocks, rst literal
  blocks (after ``::``) and code directives, and every line that does not read as prose (fewer
  than 3 plain words, under 70% plain words, over 5% code symbols, or a Python statement).
  ``_extract.py`` has the rules.
- Markup is removed (backticks, ``[`~a.B`]`` links, rst roles, emphasis, URLs), whitespace is
  normalised, paragraphs under 8 words are dropped, and repeated paragraphs are kept once (exact
  match, first occurrence wins).
- Each source file becomes one document (split every ``MAX_PARAGRAPHS`` paragraphs).

The result is cached as ``<cache_dir>/corpus/embedded-<key>/corpus.txt``, the key being the
installed versions of ``EMBEDDED_PACKAGES`` and ``EXTRACTOR_VERSION``; ``PROVENANCE.json`` beside
it records the packages used and their versions, the file, document, paragraph and word counts,
and the sha256 of ``corpus.txt``. Files are parsed in parallel worker processes (the CPUs
available, at most 8); the order of the output does not depend on their number.

Measured (Python 3.11.7; transformers 5.23.0, torch 2.13.0+cpu, timm 1.0.31, numpy 2.4.6,
lightning 2.6.6, pytest 9.2.0, h5py 3.16.0, networkx 3.6.1, sympy 1.14.0, torchmetrics 1.9.0,
huggingface_hub 2.4.0, setuptools 84.2.1, pydantic 2.14.4, jinja2 3.1.6): 8,068 files, 5,484
documents, 83,928 paragraphs, 2,009,174 words, 12.6 MB, sha256 ``3cf7b4d3db3e...``; 15 s to
build with 2 cores (25-30 s on one).

Text format (the cache file and user corpora alike): one paragraph per line, documents separated
by blank lines. A user ``source`` is such a file, or a folder whose ``*.txt`` files (recursive,
sorted by path) are read in turn; a file boundary also ends a document.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablations.data import _cache, _extract
from ablations.data.errors import DataError
from ablations.data.status import Stage

#: Packages read for the embedded corpus, in order, until ``MIN_WORDS`` is reached.
EMBEDDED_PACKAGES = (
    # pinned by the project (pyproject.toml, Makefile)
    "transformers",
    "torch",
    "timm",
    "numpy",
    "lightning",
    "pytest",
    "h5py",
    # installed with them (dependencies of torch, lightning, transformers)
    "networkx",
    "sympy",
    "torchmetrics",
    "huggingface_hub",
    "setuptools",
    "pydantic",
    "jinja2",
    "click",
    "rich",
    "fsspec",
    "pygments",
    "aiohttp",
    "markdown_it",
    "typer",
)
MIN_WORDS = 2_000_000
#: Bump when the extraction rules change: it is part of the cache key.
EXTRACTOR_VERSION = 1
MAX_PARAGRAPHS = 100


@dataclass(frozen=True)
class Corpus:
    """Documents of paragraphs, with the sha256 of their text form (:func:`serialize`)."""

    documents: tuple[tuple[str, ...], ...]
    sha256: str
    source: str

    @property
    def words(self) -> int:
        return sum(len(p.split()) for doc in self.documents for p in doc)


def serialize(documents: Iterable[Iterable[str]]) -> str:
    """The text form: one paragraph per line, a blank line between documents."""
    return "\n\n".join("\n".join(doc) for doc in documents) + "\n"


def parse_documents(text: str) -> list[tuple[str, ...]]:
    """Split text into documents (at blank lines) of paragraphs (lines, whitespace normalised)."""
    documents: list[tuple[str, ...]] = []
    current: list[str] = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if line:
            current.append(line)
        elif current:
            documents.append(tuple(current))
            current = []
    if current:
        documents.append(tuple(current))
    return documents


def _corpus(documents: list[tuple[str, ...]], source: str) -> Corpus:
    sha = hashlib.sha256(serialize(documents).encode()).hexdigest()
    return Corpus(tuple(documents), sha, source)


def load_corpus(source: str, cache_dir: str | os.PathLike[str]) -> Corpus:
    """The corpus ``source`` names: ``"embedded"``, a text file, or a folder of ``*.txt``."""
    if source == "embedded":
        entry = build_embedded(cache_dir)
        return _corpus(parse_documents(entry.path.read_text(encoding="utf-8")), source)
    return read_text(source)


def read_text(source: str | os.PathLike[str]) -> Corpus:
    """Read a user corpus: a text file, or a folder of ``*.txt`` files (recursive, sorted)."""
    path = Path(source)
    if path.is_dir():
        files = sorted(
            (p for p in path.rglob("*.txt") if p.is_file()), key=lambda p: p.relative_to(path)
        )
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"data.source: no such file or folder: {source}")
    documents: list[tuple[str, ...]] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DataError(f"data.source: {file} is not UTF-8 text") from None
        documents.extend(parse_documents(text))
    if not documents:
        raise DataError(f"data.source: {source} holds no text")
    return _corpus(documents, str(source))


# --- the embedded corpus -----------------------------------------------------------------------

#: Test code is skipped: its docstrings are little prose for a lot of parsing.
_TEST_FILE = re.compile(r"(^|/)(tests?|testing)/|(^|/)(test_[^/]*|[^/]*_test|conftest)\.py$")


def _package_files(name: str) -> tuple[str, list[Path]] | None:
    """The version of an installed distribution and its doc-bearing files, sorted by path."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    files = []
    for rel in sorted(str(f) for f in dist.files or ()):
        parts = rel.split("/")
        if rel.startswith("..") or parts[0].endswith((".dist-info", ".egg-info")):
            continue
        if not rel.endswith((".py", ".md", ".rst", ".txt")) or _TEST_FILE.search(rel):
            continue
        if parts[-1].upper().startswith(("LICENSE", "LICENCE", "COPYING", "NOTICE")):
            continue
        files.append(Path(dist.locate_file(rel)))
    return dist.version, files


def embedded_key(packages: Sequence[str] = EMBEDDED_PACKAGES) -> str:
    """The cache key of the embedded corpus: extraction rules and installed package versions."""
    versions = []
    for name in packages:
        try:
            versions.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            continue
    return _cache.key_of("embedded", EXTRACTOR_VERSION, MIN_WORDS, versions)


def build_embedded(
    cache_dir: str | os.PathLike[str],
    *,
    packages: Sequence[str] = EMBEDDED_PACKAGES,
    min_words: int = MIN_WORDS,
    workers: int | None = None,
) -> _cache.Entry:
    """Build (once) and return the cached embedded corpus; its metadata is the provenance.

    Args:
        cache_dir: ``DataConfig.cache_dir``.
        packages: the packages to read, in order (tests use a small list).
        min_words: stop after the first package that brings the total to this many words.
        workers: extraction processes (default: the CPUs available, at most 8).
    """
    key = (
        embedded_key(packages)
        if packages == EMBEDDED_PACKAGES
        else _cache.key_of(embedded_key(packages), list(packages), min_words)
    )
    folder = Path(cache_dir) / "corpus" / f"embedded-{key}"
    return _cache.cached(
        folder / "corpus.txt",
        lambda tmp: _build_embedded(tmp, packages, min_words, workers),
        meta_path=folder / "PROVENANCE.json",
    )


def _build_embedded(
    out: Path, packages: Sequence[str], min_words: int, workers: int | None
) -> dict[str, Any]:
    start = time.perf_counter()
    if workers is None:
        workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, 8)
    seen: set[bytes] = set()
    documents: list[list[str]] = []
    used = []
    words = 0
    n_files = 0
    stage = Stage("corpus (prose of the installed packages)", total=min_words, unit="words")
    with stage:
        for name in packages:
            found = _package_files(name)
            if found is None:
                continue
            version, files = found
            before = words
            for paragraphs in _extract_all(files, workers):
                kept = []
                for paragraph in paragraphs:
                    digest = hashlib.sha1(paragraph.encode()).digest()
                    if digest not in seen:
                        seen.add(digest)
                        kept.append(paragraph)
                for i in range(0, len(kept), MAX_PARAGRAPHS):
                    documents.append(kept[i : i + MAX_PARAGRAPHS])
                words += sum(len(p.split()) for p in kept)
            stage.advance(words - before)
            n_files += len(files)
            used.append(
                {"name": name, "version": version, "files": len(files), "words_total": words}
            )
            if words >= min_words:
                break
    text = serialize(documents)
    out.write_text(text, encoding="utf-8")
    return {
        "what": "English prose from the docstrings and docs of installed packages (see corpus.py)",
        "packages": used,
        "files": n_files,
        "documents": len(documents),
        "paragraphs": len(seen),
        "words": words,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "extractor_version": EXTRACTOR_VERSION,
        "python": platform.python_version(),
        "build_seconds": round(time.perf_counter() - start, 1),
    }


def _extract_all(files: list[Path], workers: int) -> list[list[str]]:
    """``_extract.extract_file`` over ``files``, in order, in ``workers`` processes."""
    if workers <= 1 or len(files) < 4 * workers:
        return [_extract.extract_file(f) for f in files]
    chunks = _split_by_size(files, 4 * workers)
    script = str(Path(_extract.__file__).resolve())

    def run(chunk: list[Path]) -> list[list[str]]:
        # -I: stdlib only, no user site, nothing from the environment; JSON keeps it ASCII.
        proc = subprocess.run(
            [sys.executable, "-I", script],
            input=json.dumps([str(f) for f in chunk]),
            capture_output=True,
            text=True,
        )
        if proc.returncode:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"corpus extraction failed in a worker: {last}")
        return json.loads(proc.stdout)

    with ThreadPoolExecutor(workers) as pool:
        return [paragraphs for result in pool.map(run, chunks) for paragraphs in result]


def _split_by_size(files: list[Path], n: int) -> list[list[Path]]:
    """Contiguous chunks of about equal total size."""
    sizes = [f.stat().st_size if f.exists() else 0 for f in files]
    target = sum(sizes) / n
    chunks: list[list[Path]] = [[]]
    acc = 0.0
    for file, size in zip(files, sizes, strict=True):
        if acc >= target and len(chunks) < n:
            chunks.append([])
            acc = 0.0
        chunks[-1].append(file)
        acc += size
    return chunks
