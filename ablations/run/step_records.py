"""The lines of ``metrics.jsonl`` and ``layers.jsonl`` of applied steps, from their device numbers.

``PretrainingModule`` keeps each applied update as a :class:`PendingStep`: its host-side numbers
(step, lr, counters) and one float64 device tensor, the micro-batch sums of :data:`TRAIN`
(:func:`train_sums`) followed by the optimizer's numbers (``step_stats.OPTIM``). When the module
reads the pending steps (one host transfer) it turns each row into its lines here
(:func:`metrics_record`, :func:`layers_record`) and judges divergence (:func:`diverged`). The
fields are documented with the run directory's layout in :mod:`ablations.run.curves`.

Means: a step's losses are the micro-batch losses summed over its micro-batches and ranks,
divided by their number (``accumulation * world_size``); the MLM accuracy is over all of the
step's predictions, the NSP accuracy over its ``global_batch`` examples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ablations.run.step_stats import LAYER, OPTIM

#: Per-micro-batch sums accumulated on the device, then all-reduced: loss, mlm_loss, nsp_loss
#: (each summed over micro-batches), mlm_correct, mlm_count, nsp_correct, real tokens.
TRAIN = ("loss", "mlm_loss", "nsp_loss", "mlm_correct", "mlm_count", "nsp_correct", "tokens")


@dataclass
class PendingStep:
    """One applied update whose numbers are still on the device."""

    step: int
    phase_step: int
    lr: float
    samples: int
    wall_time: float
    values: Tensor  # float64 [len(TRAIN) + len(OPTIM)]
    layers: Tensor | None  # [len(LAYER), tensors] (every log.layer_every steps)
    names: tuple[str, ...] = ()
    layer_names: tuple[str, ...] = ()


def train_sums(out: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
    """One micro-batch's :data:`TRAIN` numbers, float64 on the device (no host sync)."""
    return torch.stack(
        [
            out["loss"].detach(),
            out["mlm_loss"].detach(),
            out["nsp_loss"].detach(),
            out["mlm_correct"],
            out["mlm_count"],
            out["nsp_correct"],
            batch["attention_mask"].sum(),
        ]
    ).to(torch.float64)


def split_row(row: list[float]) -> tuple[dict[str, float], dict[str, float]]:
    """A pending step's values read on the host: its :data:`TRAIN` and its ``OPTIM`` numbers."""
    train = dict(zip(TRAIN, row[: len(TRAIN)], strict=True))
    optim = dict(zip(OPTIM, row[len(TRAIN) :], strict=True))
    return train, optim


def metrics_record(
    phase: int,
    s: PendingStep,
    train: dict[str, float],
    optim: dict[str, float],
    *,
    micro_batches: int,
    global_batch: int,
    skipped: int,
    tokens: int,
) -> dict[str, Any]:
    """The ``metrics.jsonl`` line of step ``s`` (without the ``noise/*`` fields).

    Args:
        phase: 1-based phase.
        s: the step.
        train, optim: its numbers (:func:`split_row`).
        micro_batches: micro-batches of the step over every rank.
        global_batch: examples of the step.
        skipped: fp16 windows skipped so far.
        tokens: non-padding input tokens of the applied updates so far, this step's included.
    """
    record = {
        "phase": phase,
        "step": s.step,
        "phase_step": s.phase_step,
        "train/loss": train["loss"] / micro_batches,
        "train/mlm_loss": train["mlm_loss"] / micro_batches,
        "train/nsp_loss": train["nsp_loss"] / micro_batches,
        "train/mlm_acc": train["mlm_correct"] / max(train["mlm_count"], 1.0),
        "train/nsp_acc": train["nsp_correct"] / global_batch,
        "optim/lr": s.lr,
        "optim/grad_norm": optim["grad_norm"],
        "optim/moments_grad_norm": optim["moments_grad_norm"],
        "optim/update_norm": optim["update_norm"],
        "optim/trust_ratio_min": optim["r_min"],
        "optim/trust_ratio_p50": optim["r_p50"],
        "optim/trust_ratio_max": optim["r_max"],
        "optim/skipped": skipped,
        "samples": s.samples,
        "tokens": tokens,
        "wall_time": s.wall_time,
    }
    if math.isfinite(optim["loss_scale"]):
        record["optim/loss_scale"] = optim["loss_scale"]
    return record


def layers_record(phase: int, s: PendingStep) -> dict[str, Any]:
    """The ``layers.jsonl`` line of step ``s``, which sampled the per-tensor numbers."""
    return {
        "phase": phase,
        "step": s.step,
        "phase_step": s.phase_step,
        "tensors": list(s.names),
        "layers": list(s.layer_names),
        **dict(zip(LAYER, s.layers.tolist(), strict=True)),
    }


def diverged(loss: float, first: float | None, factor: float) -> str | None:
    """Why a step with training loss ``loss`` diverged, or None: a non-finite loss, or one above
    ``factor`` (``config.divergence_factor``) times the run's first loss ``first``."""
    if not math.isfinite(loss):
        return f"non-finite loss ({loss})"
    if first is not None and loss > factor * first:
        return f"loss {loss:.6g} > {factor:g} x the first step's loss {first:.6g}"
    return None
