"""The stages of one LAMB-family step, each in a plain reference form and a fast multi-tensor form.

One step is the pipeline (``Lamb.step``)::

    pre-normalize -> moments -> direction -> weight decay -> trust ratio -> apply

Notation: g gradient, G global L2 norm of every gradient of every group, w weights, m / v first
and second moments, t the group's step count (1-based), bc1 = 1 - beta1^t, bc2 = 1 - beta2^t,
d the direction (Adam's m̂/(√v̂+ε), or the gradient for SGD momentum), u the update whose norm
enters the trust ratio, r the trust ratio.

The reference functions work on one tensor and write the math literally; they are the
specification. The fast functions work on *blocks*: lists of tensor pieces processed by
``torch._foreach_*`` ops with the bias corrections folded into scalars. On CPU a block is a
cache-sized set of chunks (each op then reads cache, not DRAM: a LAMB step cannot be one pass,
since G must exist before m is updated and ‖u‖ before w is); on CUDA a block is a whole group.
Tests prove the two forms equal for every knob value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

Scalar = float | Tensor


# ----------------------------------------------------------------------------------------------
# Per-group scalars of one step (shared by both paths)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupScalars:
    """Everything one group's step needs besides tensors.

    ``pre`` multiplies every gradient (pre-normalization). ``bc1``/``bc2`` are the Adam bias
    corrections used on m and v (1 unless ``bias_correction=True``); ``step_size`` is
    lr·√bc2/bc1 for ``bias_correction="step_size"`` (DeepSpeed, torch-optimizer ``debias``) and lr
    otherwise.
    """

    knobs: dict[str, Any]
    pre: Scalar
    bc1: float
    bc2: float
    step_size: float
    first_step: bool

    @property
    def lr(self) -> float:
        return float(self.knobs["lr"])

    @property
    def beta3(self) -> float:
        return 1.0 - self.knobs["betas"][0] if self.knobs["grad_averaging"] else 1.0


def global_grad_norm(grads: list[Tensor]) -> Tensor:
    """G = ‖concat(all gradients)‖₂, accumulated in at least float32 (apex multi_tensor_l2norm)."""
    if not grads:
        return torch.zeros(())
    dtype = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
    norms = torch._foreach_norm(grads)
    device = grads[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(device, dtype) for n in norms]))


def prenorm_factor(knobs: dict[str, Any], grad_norm: Tensor) -> Scalar:
    """The gradient multiplier of stage 1 (pre-normalization).

    - ``"none"``: 1.
    - ``"clip"``: 1/max(1, G/M), M = ``max_grad_norm`` (apex FusedLAMB, timm Lamb, NVLAMB's
      "normalize if ‖g‖ > 1", Google BERT's clip_by_global_norm).
    - ``"normalize"``: 1/G always (the NVLAMB text read literally); 1 when G = 0.
    """
    how = knobs["prenorm"]
    if how == "none":
        return 1.0
    g = grad_norm
    if how == "clip":
        factor = 1.0 / torch.clamp(g / knobs["max_grad_norm"], min=1.0)
    else:
        factor = torch.where(g > 0, 1.0 / g, torch.ones_like(g))
    # A CPU scalar is free to read, and Python floats let the fast path fold it into other
    # scalars; on an accelerator it stays a device tensor so the step never waits on the host.
    return factor.item() if factor.device.type == "cpu" else factor


def group_scalars(knobs: dict[str, Any], step: int, pre: Scalar) -> GroupScalars:
    beta1, beta2 = knobs["betas"]
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    how = knobs["bias_correction"]
    lr = float(knobs["lr"])
    step_size = lr * math.sqrt(bc2) / bc1 if how == "step_size" else lr
    if how is not True:
        bc1 = bc2 = 1.0
    return GroupScalars(knobs, pre, bc1, bc2, step_size, first_step=step == 1)


# ----------------------------------------------------------------------------------------------
# Reference path: one tensor at a time, the math written out
# ----------------------------------------------------------------------------------------------


@dataclass
class Norms:
    """Squared L2 norms of one tensor (or piece): weights, update u, direction d."""

    w: Tensor
    u: Tensor
    d: Tensor


def ref_direction(w: Tensor, g: Tensor, state: dict, s: GroupScalars) -> tuple[Tensor, Norms]:
    """Stages 1-4 for one tensor; returns u and the squared norms the trust ratio needs.

    1. pre-normalize: ĝ = pre·g; with ``decay="l2"``: ĝ ← ĝ + λw.
    2. moments (``"adam"``): m ← β1·m + β3·ĝ, v ← β2·v + (1-β2)·ĝ², β3 = 1-β1 (or 1 without
       ``grad_averaging``); m̂ = m/bc1, v̂ = v/bc2.
    3. direction: d = m̂/(√v̂ + ε), or m̂/√(v̂ + ε) with ``eps_inside_sqrt``; d = ĝ for
       ``moments="momentum"`` (momentum is applied after the trust ratio, as LARS does).
    4. decay: ``"in_ratio"``: u = d + λw; ``"decoupled"``: w ← w·(1 - lr·λ) now, u = d;
       ``"l2"``: u = d (λw went into ĝ).
    """
    k = s.knobs
    lam = k["weight_decay"]
    g_hat = g * s.pre
    if k["decay"] == "l2" and lam != 0:
        g_hat = g_hat + lam * w
    if k["moments"] == "adam":
        beta1, beta2 = k["betas"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.mul_(beta1).add_(g_hat, alpha=s.beta3)
        v.mul_(beta2).addcmul_(g_hat, g_hat, value=1 - beta2)
        m_hat, v_hat = m / s.bc1, v / s.bc2
        if k["eps_inside_sqrt"]:
            d = m_hat / torch.sqrt(v_hat + k["eps"])
        else:
            d = m_hat / (torch.sqrt(v_hat) + k["eps"])
    else:
        d = g_hat.clone()
    if k["decay"] == "decoupled" and lam != 0:
        w.mul_(1 - s.lr * lam)
    u = d + lam * w if k["decay"] == "in_ratio" and lam != 0 else d
    norms = Norms(_sq(w), _sq(u), _sq(d))
    return u, norms


def ref_apply(w: Tensor, u: Tensor, ratio: Scalar, state: dict, s: GroupScalars) -> None:
    """Stage 6 for one tensor.

    ``"adam"``: w ← w - step_size·r·u. ``"momentum"`` (torch.optim.SGD semantics on r·u):
    b ← μ·b + (1-dampening)·r·u (b = r·u on the first step); w ← w - lr·(r·u + μ·b if nesterov
    else b).
    """
    k = s.knobs
    if k["moments"] == "adam":
        w.add_(u * ratio, alpha=-s.step_size)
        return
    step = u * ratio
    buf = state.get("momentum_buffer")
    if buf is None:
        buf = state["momentum_buffer"] = step.clone()
    else:
        buf.mul_(k["momentum"]).add_(step, alpha=1 - k["dampening"])
    step = step + k["momentum"] * buf if k["nesterov"] else buf
    w.add_(step, alpha=-s.lr)


def _sq(t: Tensor) -> Tensor:
    n = torch.linalg.vector_norm(t)
    return n * n


# ----------------------------------------------------------------------------------------------
# Stage 5, shared: trust ratios from per-layer norms (small vectors, no host sync)
# ----------------------------------------------------------------------------------------------


@dataclass
class RatioInputs:
    """Per-tensor knob values of the trust-ratio stage, as vectors over the step's tensors."""

    weight_decay: Tensor
    adapt: Tensor  # bool: does this tensor get a trust ratio?
    phi_min: Tensor
    phi_max: Tensor
    clip_min: Tensor
    clip_max: Tensor
    coeff: Tensor
    eps: Tensor
    split: Tensor  # bool: ratio_denominator == "split" (LARS: ‖d‖ + λ‖w‖)


def ratio_inputs(knobs: list[dict[str, Any]], device, dtype) -> RatioInputs:
    def vec(values):
        return torch.tensor(values, dtype=dtype, device=device)

    def adapted(k):
        return k["adapt"] == "all" or (k["adapt"] == "decayed" and k["weight_decay"] != 0)

    inf = math.inf
    identity = [k["phi"] == "identity" for k in knobs]
    return RatioInputs(
        weight_decay=vec([k["weight_decay"] for k in knobs]),
        adapt=torch.tensor([adapted(k) for k in knobs], device=device),
        phi_min=vec([0.0 if i else k["phi_min"] for i, k in zip(identity, knobs, strict=True)]),
        phi_max=vec([inf if i else k["phi_max"] for i, k in zip(identity, knobs, strict=True)]),
        clip_min=vec([k["trust_clip"][0] if k["trust_clip"] else 0.0 for k in knobs]),
        clip_max=vec([k["trust_clip"][1] if k["trust_clip"] else inf for k in knobs]),
        coeff=vec([k["trust_coeff"] for k in knobs]),
        eps=vec([k["trust_eps"] for k in knobs]),
        split=torch.tensor([k["ratio_denominator"] == "split" for k in knobs], device=device),
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


# ----------------------------------------------------------------------------------------------
# Fast path: blocks of tensor pieces through torch._foreach_* ops
# ----------------------------------------------------------------------------------------------


@dataclass
class Block:
    """Pieces (flat views) of tensors of one group, device and dtype, processed together."""

    group: int
    tensor: list[int]  # the step-order index of each piece's tensor
    w: list[Tensor]
    g: list[Tensor]
    u: list[Tensor]  # views of the persistent update buffer
    tmp: list[Tensor]  # views of a block-sized scratch buffer
    exp_avg: list[Tensor] = field(default_factory=list)
    exp_avg_sq: list[Tensor] = field(default_factory=list)
    buf: list[Tensor] = field(default_factory=list)
    index: Tensor | None = None  # tensor ids as a device tensor, for index_add_


def fast_direction(b: Block, s: GroupScalars) -> tuple[Tensor, Tensor, Tensor]:
    """Stages 1-4 on a block, writing u into ``b.u``; returns squared norms per piece (w, u, d).

    Same math as :func:`ref_direction`, with bias corrections folded into two scalars:
    m̂/(√v̂ + ε) = (√bc2/bc1)·m/(√v + ε√bc2) and m̂/√(v̂ + ε) = (√bc2/bc1)·m/√(v + ε·bc2).
    """
    k = s.knobs
    lam = k["weight_decay"]
    pre, grads = s.pre, b.g
    if isinstance(pre, Tensor):  # device scalar: scale once, then use 1 as the multiplier
        grads, pre = torch._foreach_mul(grads, pre), 1.0
    src, coef = grads, pre
    if k["decay"] == "l2" and lam != 0:
        torch._foreach_copy_(b.u, b.w)
        torch._foreach_mul_(b.u, lam)
        torch._foreach_add_(b.u, grads, alpha=pre)
        src, coef = b.u, 1.0
    if k["moments"] == "adam":
        beta1, beta2 = k["betas"]
        torch._foreach_mul_(b.exp_avg, beta1)
        torch._foreach_add_(b.exp_avg, src, alpha=s.beta3 * coef)
        torch._foreach_mul_(b.exp_avg_sq, beta2)
        torch._foreach_addcmul_(b.exp_avg_sq, src, src, value=(1 - beta2) * coef * coef)
        denom = b.tmp
        torch._foreach_copy_(denom, b.exp_avg_sq)
        if k["eps_inside_sqrt"]:
            torch._foreach_add_(denom, k["eps"] * s.bc2)
            torch._foreach_sqrt_(denom)
        else:
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, k["eps"] * math.sqrt(s.bc2))
        torch._foreach_zero_(b.u)
        torch._foreach_addcdiv_(b.u, b.exp_avg, denom, value=math.sqrt(s.bc2) / s.bc1)
    elif src is not b.u:
        torch._foreach_copy_(b.u, src)
        if coef != 1.0:
            torch._foreach_mul_(b.u, coef)
    d_norms = _stack_sq(torch._foreach_norm(b.u)) if k["ratio_denominator"] == "split" else None
    if k["decay"] == "decoupled" and lam != 0:
        torch._foreach_mul_(b.w, 1 - s.lr * lam)
    if k["decay"] == "in_ratio" and lam != 0:
        torch._foreach_add_(b.u, b.w, alpha=lam)
    w_norms = _stack_sq(torch._foreach_norm(b.w))
    u_norms = _stack_sq(torch._foreach_norm(b.u))
    return w_norms, u_norms, u_norms if d_norms is None else d_norms


def fast_apply(b: Block, scale: list[Scalar], s: GroupScalars, fresh: list[bool]) -> None:
    """Stage 6 on a block; ``scale`` is each piece's trust ratio, ``fresh`` marks new buffers."""
    k = s.knobs
    if k["moments"] == "adam":
        factor = _times(scale, -s.step_size)
        torch._foreach_mul_(b.u, factor)
        torch._foreach_add_(b.w, b.u)
        return
    torch._foreach_mul_(b.u, scale)
    mu, damp = k["momentum"], k["dampening"]
    for u, buf, new in zip(b.u, b.buf, fresh, strict=True):
        if new:
            buf.copy_(u)
        else:
            buf.mul_(mu).add_(u, alpha=1 - damp)
    if k["nesterov"]:
        torch._foreach_add_(b.u, b.buf, alpha=mu)
        torch._foreach_add_(b.w, b.u, alpha=-s.lr)
    else:
        torch._foreach_add_(b.w, b.buf, alpha=-s.lr)


def _times(scale: list[Scalar], c: float) -> list[Scalar]:
    return [x * c for x in scale]


def _stack_sq(norms: list[Tensor]) -> Tensor:
    n = torch.stack(norms)
    return n * n
