"""An experiment's Optuna study journal (``study.journal``), opened the one way every writer
and reader opens it: the sweep's workers and driver (:mod:`ablations.sweep.study`) and collect
(:mod:`ablations.results.trials`) share the file and its lock."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock


def open_journal(exp_dir: Path) -> optuna.storages.JournalStorage:
    """The experiment's journal file (``study.journal``), with the lock every worker uses."""
    path = str(exp_dir / "study.journal")
    # the O_EXCL lock works on NFSv3+ (the symlink lock's NFSv2 support is not needed)
    return optuna.storages.JournalStorage(
        JournalFileBackend(path, lock_obj=JournalFileOpenLock(path))
    )
