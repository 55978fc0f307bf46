"""How much ε shapes a step's direction: per-tensor statistics of √v̂ against ε.

Adam's direction (stage 3, :class:`lamb_variants.stages.AdamDirection`) is d = m̂/(√v̂ + ε). Where
√v̂ ≫ ε it is Adam's per-element scaling, invariant to a common scale of the gradients; where
√v̂ ≪ ε it is m̂/ε, i.e. momentum SGD with step 1/ε, and a per-step scalar on the gradients
(pre-normalization) or on m̂ (bias correction) passes straight into d. Everett et al. 2024
(arXiv 2407.05872) show this regime reached at scale and remove ε with Adam-atan2. Per tensor,
after a step:

- ``eps_dominated``: the fraction of elements whose ε term is at least their √v̂ term, i.e.
  √v̂ ≤ ε (``eps_inside_sqrt``: v̂ ≤ ε, since d = m̂/√(v̂ + ε)).
- ``sqrt_v_over_eps``: the (lower) median over elements of √v̂/ε (``eps_inside_sqrt``:
  √v̂/√ε), so that below 1 means more than half the tensor is ε-dominated.

Both are over the elements that have had a gradient (v > 0): the others (position embeddings
beyond the sequence length, rows of tokens never seen) have m = 0 and do not move whatever ε
is; a tensor none of whose elements has had one gets NaN.

v̂ is the second moment the direction used: v/(1-β2^t) with ``bias_correction=True``, else v.
With ``eps_mode="atan2"`` there is no ε: the fraction is 0 and the ratio is NaN; tensors without
Adam moments (``moments="momentum"``) get NaN for both. Everything stays on the parameters'
device (no host sync); the medians cost one sort per tensor, so callers sample it every few
steps (``log.layer_every`` in the harness).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from . import stages


@dataclass(frozen=True)
class DirectionStats:
    """One value per tensor of the last step (the order of ``LambStats.names``), float64."""

    eps_dominated: Tensor
    sqrt_v_over_eps: Tensor


def direction_stats(
    params: Sequence[Tensor],
    group_of: Sequence[int],
    pipes: Sequence[stages.Pipeline],
    groups: Sequence[dict[str, Any]],
    state: dict[Tensor, dict[str, Any]],
) -> DirectionStats:
    """:class:`DirectionStats` of ``params`` (each in group ``group_of[i]``) from the state left
    by the step that just ran (group ``"step"`` is that step's t)."""
    if not params:
        empty = torch.zeros(0, dtype=torch.float64)
        return DirectionStats(empty, empty)
    device = params[0].device
    nan = torch.full((), math.nan, dtype=torch.float64, device=device)
    fractions, ratios = [], []
    for p, gi in zip(params, group_of, strict=True):
        pipe = pipes[gi]
        moments, direction = pipe.find(stages.AdamMoments), pipe.find(stages.AdamDirection)
        if moments is None or direction is None:
            fractions.append(nan)
            ratios.append(nan)
            continue
        if direction.atan2:
            fractions.append(torch.zeros((), dtype=torch.float64, device=device))
            ratios.append(nan)
            continue
        bc2 = moments.corrections(groups[gi]["step"])[1]
        sqrt_v = torch.sqrt(state[p]["exp_avg_sq"].float() / bc2)
        # the ε term of the denominator, on the scale of √v̂
        eps = math.sqrt(direction.eps) if direction.inside_sqrt else direction.eps
        seen = sqrt_v > 0
        fractions.append(((sqrt_v <= eps) & seen).sum().to(torch.float64) / seen.sum())
        # the lower median of the seen elements, without a host sync and without a sort (a
        # selection, ~10x cheaper): nanmedian skips the unseen ones, NaN when none is seen
        median = torch.nanmedian(torch.where(seen, sqrt_v, math.nan).flatten())
        ratios.append(median.to(torch.float64) / eps if eps > 0 else nan)
    return DirectionStats(torch.stack(fractions), torch.stack(ratios))
