"""Stage 5 of a LAMB-family step: the trust ratio, from per-layer norms, over every tensor at once.

One group's stage-5 knobs are a :class:`RatioRow` (chosen by :func:`lamb_variants.stages.build`,
the one place knobs are read); a step lays the rows of its tensors out as vectors
(:class:`RatioInputs`) and computes every ratio in one go (:func:`trust_ratios`), on small device
vectors and without a host sync. Every path (reference, fast, compiled) shares this stage.

Notation as in :mod:`lamb_variants.stages`: w weights, d the direction, u the update whose norm
enters the ratio, λ the weight decay, r the trust ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class RatioRow:
    """One group's stage-5 values. φ = identity is φ clamped to [0, ∞); no ``trust_clip`` is
    [0, ∞); ``adapt`` says whether the group's tensors get a trust ratio at all."""

    layer_split: str
    weight_decay: float
    adapt: bool
    phi_min: float
    phi_max: float
    clip_min: float
    clip_max: float
    coeff: float
    eps: float
    split: bool  # ratio_denominator == "split" (LARS: ‖d‖ + λ‖w‖)


@dataclass
class Norms:
    """Squared L2 norms of one tensor: weights, update u, direction d."""

    w: Tensor
    u: Tensor
    d: Tensor


def squared_norm(t: Tensor) -> Tensor:
    """‖t‖², as a 0-d tensor on t's device (no host sync)."""
    # Half precision would overflow the square of any norm above 256: square in float32.
    low = t.dtype in (torch.float16, torch.bfloat16)
    n = torch.linalg.vector_norm(t, dtype=torch.float32 if low else None)
    return n * n


@dataclass
class RatioInputs:
    """:class:`RatioRow` values as vectors over the step's tensors (one row per tensor)."""

    weight_decay: Tensor
    adapt: Tensor  # bool: does this tensor get a trust ratio?
    phi_min: Tensor
    phi_max: Tensor
    clip_min: Tensor
    clip_max: Tensor
    coeff: Tensor
    eps: Tensor
    split: Tensor  # bool: ratio_denominator == "split"


def ratio_inputs(rows: list[RatioRow], device: torch.device, dtype: torch.dtype) -> RatioInputs:
    """The rows of the step's tensors as :class:`RatioInputs` on ``device``."""

    def vec(name: str) -> Tensor:
        return torch.tensor([getattr(r, name) for r in rows], dtype=dtype, device=device)

    return RatioInputs(
        weight_decay=vec("weight_decay"),
        adapt=torch.tensor([r.adapt for r in rows], device=device),
        phi_min=vec("phi_min"),
        phi_max=vec("phi_max"),
        clip_min=vec("clip_min"),
        clip_max=vec("clip_max"),
        coeff=vec("coeff"),
        eps=vec("eps"),
        split=torch.tensor([r.split for r in rows], device=device),
    )


def trust_ratios(w_norm: Tensor, u_norm: Tensor, d_norm: Tensor, x: RatioInputs) -> Tensor:
    """Stage 5: one ratio per tensor from the norms of its layer.

    p = φ(‖w‖) = clamp(‖w‖, φ_min, φ_max) (identity: no clamp; the LAMB paper's φ);
    q = ‖u‖, or ‖d‖ + λ‖w‖ for the LARS denominator;
    r = clamp(c·p/(q + eps_r), trust_clip) (DeepSpeed [0.01, 10], timm LAMBC (0, 1));
    r = 1 if p = 0 or the gradient-side norm is 0 (every implementation's zero guard), and
    r = 1 for tensors that ``adapt`` leaves out.
    """
    p = torch.clamp(w_norm, x.phi_min, x.phi_max)
    q = torch.where(x.split, d_norm + x.weight_decay * w_norm, u_norm)
    ratio = torch.clamp(x.coeff * p / (q + x.eps), x.clip_min, x.clip_max)
    guard = (p > 0) & (torch.where(x.split, d_norm, u_norm) > 0)
    one = torch.ones_like(ratio)
    return torch.where(guard & x.adapt, ratio, one)
