"""``impl="compiled"``: stages 2-4 of the Adam family fused into one kernel per CPU chunk.

The fast path (:func:`lamb_variants.fast.fast_direction`) makes about ten passes over a chunk
that sits in cache (moments, √v, +ε, division, decay, three norms); each is cheap, but on CPU
they are bound by cache bandwidth and ``sqrt`` throughput, not DRAM. Here one function computes,
for a chunk of a large tensor,

    m ← β1·m + β3·c·g,  v ← β2·v + (1-β2)·c²·g²,  d = m/(√v + ε√bc2)  (or m/√(v + ε·bc2),
    or atan2(m, (b/k)·√v) for Adam-atan2),
    w ← (1 - lr·λ)·w  (decay="decoupled"),  u = d + (λ/s)·w  (decay="in_ratio"),
    and ‖w‖², ‖u‖², ‖d‖²,

the same folded-scalar form as the fast path (s = k = √bc2/bc1, or s = a for Adam-atan2, scales
the norms and the step), and ``torch.compile`` (Inductor, ``dynamic=True``) turns it into one
vectorised loop (``torch.atan2`` included). The scalars go in as one tensor, so a new step does
not recompile; each (direction form, decay mode, dtype) is one compiled function, compiled on
first use (seconds; Inductor needs a C++ compiler at run time).
Everything else (small tensors, SGD momentum, ``decay="l2"``, accelerators) is the fast path.
Tests prove it equal to the reference path.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .blocks import Block, GroupScalars
from .stages import ATAN2_B

#: A kernel's key: (direction form, decay mode, dtype); the form is "add" (ε outside the sqrt),
#: "inside_sqrt" or "atan2".
Key = tuple[str, str, torch.dtype]
_BUILT: set[Key] = set()  # kernels that ran once
_COMPILED: dict[Key, Callable[..., tuple[Tensor, Tensor, Tensor]]] = {}


def _kernel(form: str, decay: str) -> Callable[..., tuple[Tensor, Tensor, Tensor]]:
    def piece(w: Tensor, g: Tensor, m: Tensor, v: Tensor, u: Tensor, c: Tensor):
        # c = [β3·pre, β1, β2, (1-β2)·pre², ε term or b/k, λ/scale, 1 - lr·λ]
        m.copy_(m * c[1] + g * c[0])
        v.copy_(v * c[2] + g * g * c[3])
        if form == "atan2":
            d = torch.atan2(m, torch.sqrt(v) * c[4])
        elif form == "inside_sqrt":
            d = m / torch.sqrt(v + c[4])
        else:
            d = m / (torch.sqrt(v) + c[4])
        if decay == "decoupled":
            w.copy_(w * c[6])
        x = d + c[5] * w if decay == "in_ratio" else d
        u.copy_(x)
        return (w * w).sum(), (x * x).sum(), (d * d).sum()

    return piece


def covers(s: GroupScalars, per_piece: bool, dtype: torch.dtype) -> bool:
    """Whether a block takes the fused kernel (else the fast path handles it)."""
    return (
        per_piece
        and s.adam is not None
        and not s.l2
        and not isinstance(s.pre, Tensor)
        and dtype in (torch.float32, torch.float64)
    )


def fused_direction(b: Block, s: GroupScalars, scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """Stages 2-4 on a per-piece block (see the module doc); returns the squared norms per piece
    (w, u, d) like :func:`lamb_variants.fast.fast_direction` (u and d already times scale²)."""
    assert s.adam is not None and s.direction is not None
    lam = s.in_ratio or s.decoupled
    decay = "in_ratio" if s.in_ratio else "decoupled" if s.decoupled else "none"
    beta1, beta2, beta3 = s.adam.beta1, s.adam.beta2, s.adam.beta3
    pre = float(s.pre)
    if s.direction.atan2:  # a·atan2(m̂, b·√v̂) = a·atan2(m, (b/k)·√v); a is ``scale``
        form, c4 = "atan2", ATAN2_B * s.bc1 / math.sqrt(s.bc2)
    elif s.direction.inside_sqrt:
        form, c4 = "inside_sqrt", s.direction.eps * s.bc2
    else:
        form, c4 = "add", s.direction.eps * math.sqrt(s.bc2)
    dtype = b.w[0].dtype
    key = (form, decay, dtype)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(_kernel(*key[:2]), dynamic=True, fullgraph=True)
    fn = _COMPILED[key]
    c = torch.tensor(
        [beta3 * pre, beta1, beta2, (1 - beta2) * pre * pre, c4, lam / scale, 1 - s.lr * lam],
        dtype=dtype,
    )
    pieces = zip(b.w, b.g, b.exp_avg, b.exp_avg_sq, b.u, strict=True)
    try:
        out = [fn(w, g, m, v, u, c) for w, g, m, v, u in pieces]
    except Exception as e:
        if key in _BUILT:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise RuntimeError(
            f"impl='compiled': torch.compile could not build the fused kernel "
            f"({type(e).__name__}: {first}); it needs a C++ compiler (e.g. g++); "
            "impl='fast' needs none"
        ) from e
    _BUILT.add(key)
    sq = scale * scale
    w_sq = torch.stack([o[0] for o in out])
    u_sq = torch.stack([o[1] for o in out]) * sq
    d_sq = torch.stack([o[2] for o in out]) * sq
    return w_sq, u_sq, d_sq if s.split else u_sq
