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
    device = grads[0].device
    flat = [g.reshape(-1) for g in grads]
    big = [g.device.type == "cpu" and g.numel() >= 1 << 18 for g in flat]
    parts = [
        squares(xs, per_piece).to(device, dtype)
        for per_piece in (True, False)
        if (xs := [g for g, b in zip(flat, big, strict=True) if b == per_piece])
    ]
    return torch.cat(parts).sum().sqrt()


def prenorm_factor(knobs: dict[str, Any], grad_norm: Tensor, host: bool) -> Scalar:
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
    return factor.item() if host else factor


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
    # Half precision would overflow the square of any norm above 256: square in float32.
    low = t.dtype in (torch.float16, torch.bfloat16)
    n = torch.linalg.vector_norm(t, dtype=torch.float32 if low else None)
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


def is_adapted(knobs: dict[str, Any]) -> bool:
    """Does a tensor of a group with these knobs get a trust ratio (``adapt``)?"""
    return knobs["adapt"] == "all" or (knobs["adapt"] == "decayed" and knobs["weight_decay"] != 0)


def ratio_inputs(knobs: list[dict[str, Any]], device, dtype) -> RatioInputs:
    def vec(values):
        return torch.tensor(values, dtype=dtype, device=device)

    inf = math.inf
    identity = [k["phi"] == "identity" for k in knobs]
    return RatioInputs(
        weight_decay=vec([k["weight_decay"] for k in knobs]),
        adapt=torch.tensor([is_adapted(k) for k in knobs], device=device),
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
    """Pieces (flat views) of tensors of one group, device and dtype, processed together.

    ``per_piece`` blocks hold chunks of large CPU tensors and run ``out=`` ops piece by piece;
    the others run foreach ops over many small tensors (or a whole group on an accelerator).
    """

    group: int
    per_piece: bool
    tensor: list[int] = field(default_factory=list)  # step-order index of each piece's tensor
    spans: list[tuple[int, int]] = field(default_factory=list)  # the piece within its tensor
    numel: int = 0
    w: list[Tensor] = field(default_factory=list)
    g: list[Tensor] = field(default_factory=list)  # re-sliced every step (grads may be new)
    u: list[Tensor] = field(default_factory=list)  # views of the persistent update buffer
    exp_avg: list[Tensor] = field(default_factory=list)
    exp_avg_sq: list[Tensor] = field(default_factory=list)
    buf: list[Tensor] = field(default_factory=list)
    index: Tensor | None = None  # ``tensor`` as a device tensor, for index_add_


def fast_direction(b: Block, s: GroupScalars) -> tuple[Tensor, Tensor, Tensor]:
    """Stages 1-4 on a block, writing u/k into ``b.u``; returns squared norms per piece (w, u, d).

    Same math as :func:`ref_direction`, with the bias corrections folded into scalars:
    m̂/(√v̂ + ε) = k·m/(√v + ε√bc2) and m̂/√(v̂ + ε) = k·m/√(v + ε·bc2), k = √bc2/bc1. The buffer
    holds u/k = m/denom + (λ/k)·w, so k costs no pass: it scales the norms here and the step in
    :func:`fast_apply` (:func:`direction_scale`).
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
    scale = direction_scale(s)
    if k["moments"] == "adam":
        beta1, beta2 = k["betas"]
        if s.beta3 == 1 - beta1 and coef == 1.0:
            torch._foreach_lerp_(b.exp_avg, src, s.beta3)
        else:
            torch._foreach_mul_(b.exp_avg, beta1)
            torch._foreach_add_(b.exp_avg, src, alpha=s.beta3 * coef)
        torch._foreach_mul_(b.exp_avg_sq, beta2)
        torch._foreach_addcmul_(b.exp_avg_sq, src, src, value=(1 - beta2) * coef * coef)
        if k["eps_inside_sqrt"]:
            _add_into(b, b.u, b.exp_avg_sq, k["eps"] * s.bc2)
            torch._foreach_sqrt_(b.u)
        else:
            _sqrt_into(b, b.u, b.exp_avg_sq)
            torch._foreach_add_(b.u, k["eps"] * math.sqrt(s.bc2))
        _div_into(b, b.u, b.exp_avg, b.u)
    elif src is not b.u:
        torch._foreach_copy_(b.u, src)
        if coef != 1.0:
            torch._foreach_mul_(b.u, coef)
    sq = scale * scale
    d_norms = None
    if k["ratio_denominator"] == "split":
        d_norms = squares(b.u, b.per_piece) * sq
    if k["decay"] == "decoupled" and lam != 0:
        torch._foreach_mul_(b.w, 1 - s.lr * lam)
    if k["decay"] == "in_ratio" and lam != 0:
        torch._foreach_add_(b.u, b.w, alpha=lam / scale)
    w_norms = squares(b.w, b.per_piece)
    u_norms = squares(b.u, b.per_piece) * sq
    return w_norms, u_norms, u_norms if d_norms is None else d_norms


def direction_scale(s: GroupScalars) -> float:
    """k = √bc2/bc1 for Adam moments (1 without bias correction), 1 for SGD momentum."""
    if s.knobs["moments"] != "adam":
        return 1.0
    return math.sqrt(s.bc2) / s.bc1


# Per-piece blocks (large CPU tensors) use ``out=`` ops: the result goes where it is needed in
# one pass, while foreach has no ``out=`` and its fresh temporaries page-fault. Other blocks use
# foreach: one dispatch for many small tensors, and on accelerators one kernel launch.


def _sqrt_into(b: Block, dst: list[Tensor], src: list[Tensor]) -> None:
    if b.per_piece:
        for d, x in zip(dst, src, strict=True):
            torch.sqrt(x, out=d)
    else:
        torch._foreach_copy_(dst, torch._foreach_sqrt(src))


def _add_into(b: Block, dst: list[Tensor], src: list[Tensor], c: float) -> None:
    if b.per_piece:
        for d, x in zip(dst, src, strict=True):
            torch.add(x, c, out=d)
    else:
        torch._foreach_copy_(dst, torch._foreach_add(src, c))


def _div_into(b: Block, dst: list[Tensor], num: list[Tensor], den: list[Tensor]) -> None:
    if b.per_piece:
        for d, a, c in zip(dst, num, den, strict=True):
            torch.div(a, c, out=d)
    else:
        torch._foreach_copy_(dst, torch._foreach_div(num, den))


def fast_apply(b: Block, ratio: list[float] | Tensor, s: GroupScalars, fresh: list[bool]) -> None:
    """Stage 6 on a block.

    ``ratio`` holds each piece's trust ratio: host floats, or a device vector (no host sync);
    ``fresh`` marks momentum buffers that start this step.
    """
    k = s.knobs
    if k["moments"] == "adam":
        factor = _times(ratio, -s.step_size * direction_scale(s))
        if b.per_piece:  # one pass per piece instead of two
            for w, u, f in zip(b.w, b.u, factor, strict=True):
                w.add_(u, alpha=f)
        else:
            torch._foreach_mul_(b.u, factor)
            torch._foreach_add_(b.w, b.u)
        return
    torch._foreach_mul_(b.u, _times(ratio, 1.0))
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


def _times(ratio: list[float] | Tensor, c: float) -> list[Scalar]:
    return [x * c for x in ratio] if isinstance(ratio, list) else list((ratio * c).unbind())


def squares(xs: list[Tensor], per_piece: bool) -> Tensor:
    """Squared L2 norms of flat tensors, as one vector.

    For large CPU pieces a BLAS dot product is twice as fast as ``vector_norm`` (measured at
    BERT-base shapes); otherwise one ``_foreach_norm`` dispatch covers the list.
    """
    if per_piece and xs[0].dtype in (torch.float32, torch.float64):
        return torch.stack([torch.dot(x, x) for x in xs])
    low = xs[0].dtype in (torch.float16, torch.bfloat16)
    n = torch.stack(torch._foreach_norm(xs, dtype=torch.float32 if low else None))
    return n * n
