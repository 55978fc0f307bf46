"""Shared test helpers: small deterministic models, a fixed data stream, a training loop, and
an import of timm's optimizers that does not run ``timm/__init__.py``.

Every training run sees the same data: a generator-seeded stream of regression batches whose
loss carries a per-step scale drawn log-uniformly from [0.1, 10], so the global gradient norm is
above 1 for much of a run (clipping acts) and below it for the rest (clipping is the identity).
The stream is drawn in float64 and cast, so float32 and float64 runs see the same numbers.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from lamb_variants import nvidia_param_groups

IN, OUT = 8, 4

#: Model kinds (every one maps IN features to OUT):
#: - "mlp": Linear(8,16) -> LayerNorm -> GELU -> Linear(16,16) -> LayerNorm -> Linear(16,4);
#:   names contain "LayerNorm"/"bias", so NVIDIA's groups put LayerNorm and biases in the
#:   no-decay group. Linear weight norms are ~2.3 and LayerNorm weight norms 4 (> 1).
#: - "nobias": three bias-free Linear layers: exactly one tensor per module.
#: - "linear": a single Linear(8,4) with bias: two tensors in one module.
MODEL_KINDS = ("mlp", "nobias", "linear")


def make_model(
    kind: str = "mlp", dtype: torch.dtype = torch.float64, seed: int = 0, head_scale: float = 1.0
) -> nn.Module:
    """A small deterministic model; ``head_scale`` multiplies the last layer's initial weights."""
    torch.manual_seed(seed)
    if kind == "mlp":
        layers = OrderedDict(
            dense_in=nn.Linear(IN, 16),
            LayerNorm_in=nn.LayerNorm(16),
            act=nn.GELU(),
            dense_mid=nn.Linear(16, 16),
            LayerNorm_mid=nn.LayerNorm(16),
            head=nn.Linear(16, OUT),
        )
    elif kind == "nobias":
        layers = OrderedDict(
            dense_in=nn.Linear(IN, 16, bias=False),
            act_in=nn.GELU(),
            dense_mid=nn.Linear(16, 16, bias=False),
            act_mid=nn.GELU(),
            head=nn.Linear(16, OUT, bias=False),
        )
    elif kind == "linear":
        layers = OrderedDict(head=nn.Linear(IN, OUT))
    else:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {MODEL_KINDS}")
    model = nn.Sequential(layers).to(dtype)
    if head_scale != 1.0:
        with torch.no_grad():
            model.head.weight.mul_(head_scale)
    return model


def named_groups(model: nn.Module, weight_decay: float = 0.01) -> list[dict]:
    """NVIDIA's two groups with names: weights decayed, biases and LayerNorm not."""
    return nvidia_param_groups(model.named_parameters(), weight_decay=weight_decay)


def plain_groups(model: nn.Module, weight_decay: float = 0.01) -> list[dict]:
    """The same two groups with plain tensors, for upstream optimizers."""
    return [{**g, "params": [p for _, p in g["params"]]} for g in named_groups(model, weight_decay)]


def batches(
    steps: int, dtype: torch.dtype, seed: int = 0, batch: int = 16
) -> Iterator[tuple[Tensor, Tensor, float]]:
    """``steps`` batches ``(x, y, loss_scale)`` of a fixed teacher-student regression."""
    gen = torch.Generator().manual_seed(1000 + seed)
    teacher = torch.randn(IN, OUT, generator=gen, dtype=torch.float64)
    for _ in range(steps):
        x = torch.randn(batch, IN, generator=gen, dtype=torch.float64)
        y = 2.0 * torch.tanh(x @ teacher)
        scale = 10.0 ** (2.0 * torch.rand((), generator=gen, dtype=torch.float64).item() - 1.0)
        yield x.to(dtype), y.to(dtype), scale


def eval_loss(model: nn.Module, seed: int = 0) -> float:
    """Unscaled MSE on a fixed held-out batch (seed-dependent teacher, same as ``batches``)."""
    gen = torch.Generator().manual_seed(1000 + seed)
    teacher = torch.randn(IN, OUT, generator=gen, dtype=torch.float64)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(256, IN, generator=gen, dtype=torch.float64)
    y = 2.0 * torch.tanh(x @ teacher)
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        return torch.nn.functional.mse_loss(model(x.to(dtype)), y.to(dtype)).item()


def flat(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])


def train(
    make_opt: Callable[[nn.Module], Any],
    model: nn.Module,
    steps: int = 50,
    *,
    loss_scale: float = 1.0,
    seed: int = 0,
    batch: int = 16,
    callback: Callable[[Any, int], None] | None = None,
) -> Tensor:
    """Train ``model`` with ``make_opt(model)`` on the fixed stream; return the flat params.

    ``callback(opt, t)`` runs after every step (e.g. to read ``opt.stats``).
    """
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    opt = make_opt(model)
    for t, (x, y, scale) in enumerate(batches(steps, dtype, seed, batch)):
        x, y = x.to(device), y.to(device)
        opt.zero_grad(set_to_none=True)
        loss = (loss_scale * scale) * torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        if callback is not None:
            callback(opt, t)
    return flat(model)


def rel_diff(a: Tensor, b: Tensor) -> float:
    """max |a - b| relative to max |a|."""
    return ((a - b).abs().max() / a.abs().max()).item()


def stats_rows(into: list) -> Callable[[Any, int], None]:
    """A ``train`` callback that appends a copy of ``opt.stats`` after every step."""

    def record(opt, _t):
        s = opt.stats
        into.append(
            {
                "grad_norm": s.grad_norm.clone(),
                "names": s.names,
                "layers": s.layers,
                "weight_norms": s.weight_norms.clone(),
                "update_norms": s.update_norms.clone(),
                "trust_ratios": s.trust_ratios.clone(),
            }
        )

    return record


@functools.cache
def load_timm_optim() -> types.SimpleNamespace:
    """``timm.optim.lamb`` and ``timm.optim.lars`` without running timm's package ``__init__``s.

    timm's real ``__init__`` imports torchvision, which does not import beside this torch.
    Stub packages ``timm`` and ``timm.optim`` (with ``__path__`` set to the installed package)
    are placed in ``sys.modules`` for the import only; ``sys.modules`` is restored afterwards
    (the loaded classes keep working through their own module globals).
    """
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("timm is not installed (make setup installs timm==1.0.31 --no-deps)")
    root = list(spec.submodule_search_locations)[0]
    saved = {k: v for k, v in sys.modules.items() if k == "timm" or k.startswith("timm.")}
    timm = types.ModuleType("timm")
    timm.__path__ = [root]
    optim = types.ModuleType("timm.optim")
    optim.__path__ = [f"{root}/optim"]
    try:
        sys.modules["timm"] = timm
        sys.modules["timm.optim"] = optim
        lamb = importlib.import_module("timm.optim.lamb")
        lars = importlib.import_module("timm.optim.lars")
    finally:
        for k in [k for k in sys.modules if k == "timm" or k.startswith("timm.")]:
            del sys.modules[k]
        sys.modules.update(saved)
    return types.SimpleNamespace(Lamb=lamb.Lamb, Lars=lars.Lars)
