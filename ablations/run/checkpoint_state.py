"""What a phase's checkpoint holds besides Lightning's own state: ``checkpoint["ablations"]``.

``PretrainingModule`` saves there the run's counters (:class:`Progress`), the phase's outcome,
its last curve lines, and the global RNG states (:func:`capture_rng`), so that a resume, and
phase 2 starting from phase 1's ``end.ckpt``, go on exactly where the run was: the counters go
on, and the model's dropout draws what it would have drawn without the interruption
(:func:`restore_rng`, right before the first training step).

Every value is a tensor or a plain Python value: the checkpoints load with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Progress:
    """Counters of the run, saved in every checkpoint (``checkpoint["ablations"]``)."""

    phase_step: int = 0  # applied updates in this phase
    skipped: int = 0  # fp16 windows skipped by the GradScaler, whole run
    samples: int = 0  # examples of applied updates, whole run
    tokens: int = 0  # non-padding input tokens of applied updates, whole run
    wall_time: float = 0.0  # seconds inside fit, whole run, over every attempt
    first_loss: float | None = None  # loss of step 1 of the run (divergence reference)
    noise: dict[str, float | None] | None = None  # NoiseScale's averages (log.noise_scale)
    reached: int | None = None  # the step whose validation reached config.stop_at

    @classmethod
    def from_state(cls, state: dict[str, Any], **changes: Any) -> Progress:
        """The counters saved in ``state`` (a checkpoint's ``"ablations"`` dict, which holds
        other keys too), with ``changes`` applied."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in state.items() if k in names}, **changes})


def capture_rng() -> dict[str, Any]:
    """Global RNG states as tensors and plain values (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set the global RNGs to a state of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
