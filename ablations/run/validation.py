"""Validation of one phase: the batches each rank evaluates, their sums, and the ``val.jsonl`` line.

``PretrainingModule`` validates at its own steps (every ``log.val_every`` and at each phase's
end), outside Lightning's validation loop, on the first ``log.val_batches`` batches of the data
module's validation loader, split over the ranks (:func:`rank_batches`). Each rank sums its
batches' numbers (:func:`sums`); the sums are all-reduced and turned into means
(:func:`record`): the masked-LM loss and accuracy over every prediction, the NSP loss and
accuracy over every example.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DistributedSampler


def rank_batches(loader: Iterable[Any] | None, limit: int, rank: int, world: int) -> list[Any]:
    """Rank ``rank``'s share of the first ``limit`` batches of ``loader`` (None: no batches).

    A loader that shards by rank itself (a ``DistributedSampler`` over the ``world`` ranks) gives
    each rank its first ``ceil(limit / world)`` batches; otherwise rank ``rank`` takes batches
    ``rank, rank + world, ...`` of the first ``limit``.
    """
    sampler = getattr(loader, "sampler", None)
    sharded = isinstance(sampler, DistributedSampler) and sampler.num_replicas == world
    batches = []
    for i, batch in enumerate(loader or ()):
        if sharded:
            if i >= -(-limit // world):
                break
            batches.append(batch)
        elif i >= limit:
            break
        elif i % world == rank:
            batches.append(batch)
    return batches


@torch.no_grad()
def sums(model: nn.Module, batches: Iterable[dict[str, Tensor]], device: torch.device) -> Tensor:
    """This rank's float64 sums over ``batches`` (moved to ``device``): masked-LM loss times
    predictions, predictions, NSP loss times examples, examples, correct predictions, correct
    NSP answers. The model is evaluated in eval mode and left in train mode."""
    model.eval()
    total = torch.zeros(6, dtype=torch.float64, device=device)
    for batch in batches:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        out = model(batch)
        n = batch["next_sentence_labels"].numel()
        total += torch.stack(
            [
                out["mlm_loss"].detach() * out["mlm_count"],
                out["mlm_count"],
                out["nsp_loss"].detach() * n,
                torch.tensor(n, device=device),
                out["mlm_correct"],
                out["nsp_correct"],
            ]
        ).to(torch.float64)
    model.train()
    return total


def record(
    total: list[float],
    *,
    phase: int,
    step: int,
    phase_step: int,
    samples: int,
    wall_time: float,
) -> dict[str, Any] | None:
    """The ``val.jsonl`` line of the sums ``total`` (:func:`sums` over every rank, read on the
    host), or None when no rank had a batch."""
    mlm_sum, mlm_count, nsp_sum, count, mlm_correct, nsp_correct = total
    if count == 0:
        return None
    mlm, nsp = mlm_sum / max(mlm_count, 1.0), nsp_sum / count
    return {
        "phase": phase,
        "step": step,
        "phase_step": phase_step,
        "val/loss": mlm + nsp,
        "val/mlm_loss": mlm,
        "val/nsp_loss": nsp,
        "val/mlm_acc": mlm_correct / max(mlm_count, 1.0),
        "val/nsp_acc": nsp_correct / count,
        "samples": samples,
        "wall_time": wall_time,
    }
