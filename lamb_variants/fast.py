"""The fast path (``impl="fast"``, the default): stages 1-4 and 6 fused over blocks of tensors.

Same math as the reference stages (:mod:`lamb_variants.stages`), with the values of the same
stage objects (:class:`~lamb_variants.blocks.GroupScalars`) and the bias corrections folded
into scalars, run by ``torch._foreach_*`` ops on *blocks*: lists of tensor pieces. On CPU a
block is a cache-sized set of chunks, so each op reads cache, not DRAM (a LAMB step cannot be
one pass: G must exist before m is updated and ‖u‖ before w is); on an accelerator a block is
a whole group (one kernel launch per op, scalars kept on the device, no host sync). Tests prove
this path equal to the reference for every knob value, and run the accelerator code path on CPU
tensors too (:attr:`FastPath.accelerator_path`).

Measurements behind the constants and the choices: ``shared/reference/optimizer-performance.md``
(allocation, passes, per-op overhead, cache blocking on CPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from . import compiled, stages
from .blocks import Block, GroupScalars
from .stages import Scalar, Work

#: Elements per fast-path block on CPU: 4 MiB of float32 per operand keeps a block's operands in
#: L2/L3 between the ~12 ops of a step (per-op overhead is ~6 µs, so much smaller chunks lose
#: more to dispatch than they gain in cache reuse).
CPU_BLOCK_NUMEL = 1 << 20
#: CPU tensors at least this large get per-piece ``out=`` ops (and BLAS dot products for their
#: norms); smaller ones share foreach ops.
CPU_PER_PIECE_MIN = 1 << 18


def global_grad_norm(grads: list[Tensor]) -> Tensor:
    """G = ‖concat(all gradients)‖₂, accumulated in at least float32 (apex multi_tensor_l2norm).

    Both paths use this G (stage 1 needs every group's gradients before any group's moments).
    """
    if not grads:
        return torch.zeros(())
    dtype = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
    device = grads[0].device
    flat = [g.reshape(-1) for g in grads]
    big = [g.device.type == "cpu" and g.numel() >= CPU_PER_PIECE_MIN for g in flat]
    parts = [
        squares(xs, per_piece).to(device, dtype)
        for per_piece in (True, False)
        if (xs := [g for g, b in zip(flat, big, strict=True) if b == per_piece])
    ]
    return torch.cat(parts).sum().sqrt()


# ----------------------------------------------------------------------------------------------
# The planner and its buffers
# ----------------------------------------------------------------------------------------------


class FastPath:
    """The fast path's plan and scratch: derived from the params and their state, never saved.

    ``accelerator_path = True`` runs the accelerator code path (device scalars, whole-group
    blocks, foreach everywhere) on CPU tensors, so CPU-only tests can prove it equal too.
    """

    def __init__(self, accelerator_path: bool = False) -> None:
        self.accelerator_path = accelerator_path
        # Persistent update buffers, so the large update temporaries are not page-faulted in
        # every step; not optimizer state (they hold nothing between steps).
        self._update_buffers: dict[Tensor, Tensor] = {}
        self._plan: list[Block] = []
        self._plan_key: tuple = ()
        self._plan_refs: list = []

    def host(self, t: Tensor) -> bool:
        """True where scalars may be read on the host for free and blocks are cache-sized (CPU)."""
        return t.device.type == "cpu" and not self.accelerator_path

    def step(
        self,
        work: Work,
        state: dict[Tensor, dict[str, Any]],
        scalars: list[GroupScalars],
        trust_ratios: Callable[[tuple[Tensor, Tensor, Tensor]], Tensor],
        fuse: bool,
    ) -> None:
        """Stages 1-4 block by block, ``trust_ratios`` (stage 5) on the per-tensor squared norms
        (w, u, d), then stage 6 block by block. ``fuse``: ``impl="compiled"``."""
        fresh = [("momentum_buffer" not in state[p]) for p in work.params]
        for p, gi in zip(work.params, work.group_of, strict=True):
            if scalars[gi].momentum is not None:
                state[p].setdefault("momentum_buffer", torch.zeros_like(p))
        blocks = self._blocks(work, state)
        n = len(work.params)
        dtype = work.norm_dtype
        device = work.params[0].device
        sq = [torch.zeros(n, dtype=dtype, device=device) for _ in range(3)]
        for b in blocks:
            s = scalars[b.group]
            if fuse and compiled.covers(s, b.per_piece, b.w[0].dtype):
                pieces = compiled.fused_direction(b, s, direction_scale(s))
            else:
                pieces = fast_direction(b, s)
            for acc, piece in zip(sq, pieces, strict=True):
                acc.index_add_(0, b.index, piece.to(device, dtype))
        ratios = trust_ratios((sq[0], sq[1], sq[2]))
        host = self.host(ratios)
        per_tensor = ratios.tolist() if host else ratios
        for b in blocks:
            ratio = [per_tensor[i] for i in b.tensor] if host else ratios[b.index]
            fast_apply(b, ratio, scalars[b.group], [fresh[i] for i in b.tensor])

    def _blocks(self, work: Work, state: dict[Tensor, dict[str, Any]]) -> list[Block]:
        """The step's tensors as blocks; views are cached, gradients are re-sliced every step.

        On CPU, tensors of at least ``CPU_PER_PIECE_MIN`` elements are cut into chunks of up to
        ``CPU_BLOCK_NUMEL`` (one chunk per block, processed with ``out=`` ops), and smaller ones
        are packed together into blocks of up to ``CPU_BLOCK_NUMEL`` elements (processed by
        foreach ops: one dispatch for many tensors). Elsewhere a block is a whole group.
        """
        refs = [
            (p, gi, *(t for t in state[p].values() if isinstance(t, Tensor)))
            for p, gi in zip(work.params, work.group_of, strict=True)
        ]
        key = tuple(tuple(id(x) for x in r) for r in refs)
        if self._plan_key != key:
            self._plan = self._plan_blocks(work, state)
            # The plan keeps these objects alive, so their ids cannot be reused by new tensors
            # (e.g. after load_state_dict) while the key still matches.
            self._plan_key, self._plan_refs = key, refs
        flat = [g.view(-1) if g.is_contiguous() else g.reshape(-1) for g in work.grads]
        for b in self._plan:
            b.g = [flat[i][lo:hi] for i, (lo, hi) in zip(b.tensor, b.spans, strict=True)]
        return self._plan

    def _plan_blocks(self, work: Work, state: dict[Tensor, dict[str, Any]]) -> list[Block]:
        blocks: list[Block] = []
        packing: dict[tuple, Block] = {}
        for i, (p, gi) in enumerate(zip(work.params, work.group_of, strict=True)):
            if not p.is_contiguous():
                raise RuntimeError(
                    "Lamb's fast path needs contiguous parameters; use impl='reference'"
                )
            st = state[p]
            flat = {
                "w": p.view(-1),
                "u": self._update_buffer(p).view(-1),
                **{name: st[name].view(-1) for name in ("exp_avg", "exp_avg_sq") if name in st},
            }
            if "momentum_buffer" in st:
                flat["buf"] = st["momentum_buffer"].view(-1)
            n = p.numel()
            cpu = self.host(p)
            if cpu and n >= CPU_PER_PIECE_MIN:
                spans = [(lo, min(n, lo + CPU_BLOCK_NUMEL)) for lo in range(0, n, CPU_BLOCK_NUMEL)]
                targets = [Block(gi, per_piece=True) for _ in spans]
                blocks.extend(targets)
            else:
                group_key = (gi, p.device, p.dtype)
                b = packing.get(group_key)
                if b is None or (cpu and b.numel + n > CPU_BLOCK_NUMEL):
                    b = packing[group_key] = Block(gi, per_piece=False)
                    blocks.append(b)
                spans, targets = [(0, n)], [b]
            for (lo, hi), b in zip(spans, targets, strict=True):
                b.tensor.append(i)
                b.spans.append((lo, hi))
                b.numel += hi - lo
                for name, t in flat.items():
                    getattr(b, name).append(t[lo:hi])
        for b in blocks:
            b.index = torch.tensor(b.tensor, device=b.w[0].device)
        return blocks

    def _update_buffer(self, p: Tensor) -> Tensor:
        buf = self._update_buffers.get(p)
        if buf is None or buf.shape != p.shape or buf.dtype != p.dtype:
            buf = self._update_buffers[p] = torch.empty_like(
                p, memory_format=torch.contiguous_format
            )
        return buf


# ----------------------------------------------------------------------------------------------
# The fused stages on one block
# ----------------------------------------------------------------------------------------------


def fast_direction(b: Block, s: GroupScalars) -> tuple[Tensor, Tensor, Tensor]:
    """Stages 1-4 on a block, writing u/k into ``b.u``; returns squared norms per piece (w, u, d).

    Same math as the reference stages, with the bias corrections folded into scalars:
    m̂/(√v̂ + ε) = k·m/(√v + ε√bc2) and m̂/√(v̂ + ε) = k·m/√(v + ε·bc2), k = √bc2/bc1. The buffer
    holds u/k = m/denom + (λ/k)·w, so k costs no pass: it scales the norms here and the step in
    :func:`fast_apply` (:func:`direction_scale`).

    Adam-atan2 (``eps_mode="atan2"``): atan2 is invariant to a common positive factor, so
    a·atan2(m̂, b·√v̂) = a·atan2(m, (b/k)·√v) (both arguments times bc1); the buffer holds
    u/a = atan2(m, (b/k)·√v) + (λ/a)·w, and the scale is a instead of k.
    """
    pre, grads = s.pre, b.g
    if isinstance(pre, Tensor):  # device scalar: scale once, then use 1 as the multiplier
        grads, pre = torch._foreach_mul(grads, pre), 1.0
    src, coef = grads, pre
    if s.l2:
        torch._foreach_copy_(b.u, b.w)
        torch._foreach_mul_(b.u, s.l2)
        torch._foreach_add_(b.u, grads, alpha=pre)
        src, coef = b.u, 1.0
    scale = direction_scale(s)
    if s.adam is not None and s.direction is not None:
        beta1, beta2, beta3 = s.adam.beta1, s.adam.beta2, s.adam.beta3
        if beta3 == 1 - beta1 and coef == 1.0:
            torch._foreach_lerp_(b.exp_avg, src, beta3)
        else:
            torch._foreach_mul_(b.exp_avg, beta1)
            torch._foreach_add_(b.exp_avg, src, alpha=beta3 * coef)
        torch._foreach_mul_(b.exp_avg_sq, beta2)
        torch._foreach_addcmul_(b.exp_avg_sq, src, src, value=(1 - beta2) * coef * coef)
        eps = s.direction.eps
        if s.direction.atan2:
            _sqrt_into(b, b.u, b.exp_avg_sq)
            den_scale = stages.ATAN2_B * s.bc1 / math.sqrt(s.bc2)  # b/k
            if den_scale != 1.0:  # b = 1 without bias correction: one pass less
                torch._foreach_mul_(b.u, den_scale)
            _atan2_into(b.u, b.exp_avg, b.u)
        else:
            if s.direction.inside_sqrt:
                _add_into(b, b.u, b.exp_avg_sq, eps * s.bc2)
                torch._foreach_sqrt_(b.u)
            else:
                _sqrt_into(b, b.u, b.exp_avg_sq)
                torch._foreach_add_(b.u, eps * math.sqrt(s.bc2))
            _div_into(b, b.u, b.exp_avg, b.u)
    elif src is not b.u:
        torch._foreach_copy_(b.u, src)
        if coef != 1.0:
            torch._foreach_mul_(b.u, coef)
    sq = scale * scale
    d_norms = None
    if s.split:  # ‖d‖ only when stage 5 uses it: one pass less
        d_norms = squares(b.u, b.per_piece) * sq
    if s.decoupled:
        torch._foreach_mul_(b.w, 1 - s.lr * s.decoupled)
    if s.in_ratio:
        torch._foreach_add_(b.u, b.w, alpha=s.in_ratio / scale)
    w_norms = squares(b.w, b.per_piece)
    u_norms = squares(b.u, b.per_piece) * sq
    return w_norms, u_norms, u_norms if d_norms is None else d_norms


def direction_scale(s: GroupScalars) -> float:
    """What the update buffer is multiplied by to give u: k = √bc2/bc1 for Adam moments with
    ``eps_mode="add"`` (1 without bias correction), a = :data:`~lamb_variants.stages.ATAN2_A`
    for Adam-atan2 (k is inside its atan2), 1 for SGD momentum."""
    if s.adam is None:
        return 1.0
    if s.direction is not None and s.direction.atan2:
        return stages.ATAN2_A
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


def _atan2_into(dst: list[Tensor], num: list[Tensor], den: list[Tensor]) -> None:
    # torch has no foreach atan2: one out= op per piece (for per-piece blocks that is what the
    # other ops do too; for packed blocks it costs one dispatch per tensor instead of one).
    for d, y, x in zip(dst, num, den, strict=True):
        torch.atan2(y, x, out=d)


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
    if s.momentum is None:
        factor = _times(ratio, -s.step_size * direction_scale(s))
        if b.per_piece:  # one pass per piece instead of two
            for w, u, f in zip(b.w, b.u, factor, strict=True):
                w.add_(u, alpha=f)
        else:
            torch._foreach_mul_(b.u, factor)
            torch._foreach_add_(b.w, b.u)
        return
    torch._foreach_mul_(b.u, _times(ratio, 1.0))
    mu, damp = s.momentum.momentum, s.momentum.dampening
    for u, buf, new in zip(b.u, b.buf, fresh, strict=True):
        if new:
            buf.copy_(u)
        else:
            buf.mul_(mu).add_(u, alpha=1 - damp)
    if s.momentum.nesterov:
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
