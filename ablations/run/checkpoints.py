"""A phase's checkpoint files: where they are, when they are written, and that they appear whole.

::

    <run_dir>/checkpoints/phase1/last.ckpt   every ``checkpoint_every`` steps (the resume point)
    <run_dir>/checkpoints/phase1/end.ckpt    the phase is complete (last.ckpt is then removed)
    <run_dir>/checkpoints/phase1/hpc_ckpt_*  Lightning's SLURM auto-requeue (a resume point too)

Every file is written through :class:`AtomicCheckpointIO` (by global rank 0, as Lightning's
strategies do) and read with ``weights_only=True`` (:func:`load`): what ``PretrainingModule``
adds is plain data (:mod:`ablations.run.checkpoint_state`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins import TorchCheckpointIO

from ablations.core.fileio import replacing
from ablations.core.status import Status
from ablations.run import writer
from ablations.run.module import PretrainingModule

#: The checkpoint of a complete phase (phase 2 starts from phase 1's).
END = "end.ckpt"


def load(path: Path | str) -> dict[str, Any]:
    """A checkpoint loaded on the CPU, plain data and tensors only (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def resume_path(phase_dir: Path) -> str | None:
    """The newest of ``last.ckpt`` and SLURM's ``hpc_ckpt_*.ckpt`` in ``phase_dir``."""
    found = [*phase_dir.glob("last*.ckpt"), *phase_dir.glob("hpc_ckpt_*.ckpt")]
    return str(max(found, key=lambda p: p.stat().st_mtime)) if found else None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, with files that appear whole: each is written to a
    temporary file beside ``path`` and renamed over it (``fileio.replacing``), so a job killed
    mid-write leaves the previous resume point intact. Every checkpoint of a run goes through it
    (``last.ckpt``, ``end.ckpt``, SLURM's ``hpc_ckpt_*.ckpt``), written by global rank 0 as
    Lightning's strategies do."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        writer.check()
        with replacing(Path(path)) as tmp:  # removed if the write fails
            super().save_checkpoint(checkpoint, tmp, storage_options)


class ResumePoints(ModelCheckpoint):
    """``ModelCheckpoint`` that writes ``last.ckpt`` every ``checkpoint_every`` steps only."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """No ``last.ckpt`` at the end of fit: a complete phase has ``end.ckpt`` (PhaseEnd)."""


class PhaseEnd(Callback):
    """Saves ``end.ckpt`` when the module completed its phase; then drops the resume points."""

    def __init__(self, phase_dir: Path) -> None:
        self.phase_dir = phase_dir

    def on_train_end(self, trainer: L.Trainer, pl_module: PretrainingModule) -> None:
        if pl_module.outcome != Status.COMPLETE:
            return
        _save_atomic(trainer, str(self.phase_dir / END))
        if trainer.is_global_zero:
            for path in [*self.phase_dir.glob("last*.ckpt"), *self.phase_dir.glob("hpc_ckpt_*")]:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        trainer.strategy.barrier("phase_end")  # every rank sees end.ckpt before phase 2 loads it


def save_resume_point(trainer: L.Trainer) -> None:
    """Write the current phase's ``last.ckpt`` now (every rank calls it, at a step boundary)."""
    _save_atomic(trainer, str(Path(trainer.default_root_dir) / "last.ckpt"))


def _save_atomic(trainer: L.Trainer, filepath: str) -> None:
    # every rank calls it (hooks, barrier); rank 0 writes, atomically (AtomicCheckpointIO)
    trainer.save_checkpoint(filepath, weights_only=False)
