"""One writer per run directory: an OS lock held for as long as a process may write, and a
fence checked before every write.

- The lock: ``fcntl.flock(LOCK_EX)`` on ``<run_dir>/.writer.lock``, taken by :func:`exclusive`
  before anything is written (the sweep's worker takes it before ``trial.json``; ``train``
  takes it when called on its own) and held until the process stops writing. A second process
  waits for it, so a retry never starts writing while the old holder still can, even one that
  is stopped (SIGSTOP, a hung filesystem, a swapped node): a stopped process keeps its lock.
  On a cluster's shared filesystem ``flock`` holds across nodes where the cluster provides NFS
  locking (NFSv4, or v3 with lockd).
- The fence: a function the holder installs (the sweep's worker: "my lease file still exists
  and is mine"). :func:`check` runs it before every write of the run: curve lines, checkpoints,
  ``status.json``, ``meta.json``, ``config.yaml``, ``resolved.json``. A holder whose lease was
  taken from it (reaped as lost while it was stopped) raises :class:`LeaseLost` at its next
  write instead of writing, and its trial ends quietly: the retry owns the directory.

The lock is reentrant within a process (the worker's hold covers ``train``'s), and a process
with no fence installed (``python -m ablations train``) writes as before, under the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

LOCK = ".writer.lock"

#: A fence: None while this process owns the run directory, else why it does not.
Fence = Callable[[], str | None]

_held: dict[Path, int] = {}  # run_dir -> nesting depth of this process's hold
_fences: dict[Path, Fence] = {}


class LeaseLost(BaseException):  # noqa: N818 (a stop, not an error: nothing may catch it)
    """This process no longer owns the run directory: it stops without writing anything more.

    A ``BaseException``, like ``KeyboardInterrupt``: no ``except Exception`` handler of the
    training stack records it as a failure (which would itself be a write)."""


class WriterBusy(TimeoutError):
    """Another process held the run directory's lock for longer than the wait."""


@contextlib.contextmanager
def exclusive(run_dir: Path, fence: Fence | None = None, wait: float = 0.0) -> Iterator[None]:
    """Hold ``run_dir``'s writer lock (waiting up to ``wait`` seconds), with ``fence`` checked
    before every write, for the duration of the block.

    Raises:
        WriterBusy: another process still holds it after ``wait`` seconds.
    """
    key = Path(run_dir).resolve()
    if key in _held:  # this process holds it already (the worker's hold around train)
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    key.mkdir(parents=True, exist_ok=True)
    fd = os.open(key / LOCK, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies
    try:
        _acquire(fd, key, wait)
        _held[key] = 1
        if fence is not None:
            _fences[key] = fence
        try:
            yield
        finally:
            del _held[key]
            _fences.pop(key, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, run_dir: Path, wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise WriterBusy(
                    f"{run_dir}: another process is writing this run directory"
                ) from None
            time.sleep(0.2)


def check() -> None:
    """Before a write into a run directory: raise :class:`LeaseLost` if a fence this process
    installed says it no longer owns its run directory (a worker runs one trial at a time)."""
    for run_dir, fence in list(_fences.items()):
        if (why := fence()) is not None:
            raise LeaseLost(f"{run_dir}: {why}")
