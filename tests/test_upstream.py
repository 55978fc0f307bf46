"""Presets against the installed public implementations they claim to reproduce.

Each row trains the same model on the same data with an upstream optimizer and with our preset
(plus overrides) for 50 steps and compares the parameters: max |difference| relative to max
|param| <= 1e-5 in float32 and <= 1e-10 in float64, for both implementations ("fast",
"reference"). Both sides get NVIDIA's two parameter groups with the same per-group weight decay.
cybertronai/pytorch-lamb is not installed; torch_optimizer.Lamb(clamp_value=10, debias=False)
is its documented equivalent (lamb-implementations.md §2.8, §2.9).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch_optimizer
from helpers import make_model, named_groups, plain_groups, rel_diff, stats_rows, train

import lamb_variants

STEPS = 50
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
IMPLS = pytest.mark.parametrize("impl", ["fast", "reference"])


@dataclass(frozen=True)
class Row:
    """``upstream(lib, plain_groups, lr)`` builds the upstream optimizer; ``lib`` is the
    namespace of upstream classes (timm's Lamb/Lars are loaded without timm's __init__)."""

    id: str
    upstream: Callable[[Any, list[dict], float], torch.optim.Optimizer]
    preset: str
    overrides: dict = field(default_factory=dict)
    weight_decay: float = 0.01
    lr: float = 1e-2
    model: str = "mlp"


def timm_lamb(**kw):
    return lambda lib, groups, lr: lib.Lamb(groups, lr=lr, **kw)


def timm_lars(**kw):
    return lambda lib, groups, lr: lib.Lars(groups, lr=lr, **kw)


def to_lamb(**kw):
    return lambda lib, groups, lr: torch_optimizer.Lamb(groups, lr=lr, **kw)


def adamw(**kw):
    return lambda lib, groups, lr: torch.optim.AdamW(groups, lr=lr, **kw)


LARS = {"momentum": 0.9, "adapt": "all"}

ROWS = [
    # timm.optim.Lamb (§2.7). foreach=None is the single-tensor loop on CPU.
    Row("timm-defaults", timm_lamb(), "timm"),
    Row("timm-foreach", timm_lamb(foreach=True), "timm"),
    Row("timm-always_adapt", timm_lamb(always_adapt=True), "nvlamb"),
    Row("timm-always_adapt-foreach", timm_lamb(always_adapt=True, foreach=True), "nvlamb"),
    Row("timm-decoupled", timm_lamb(decoupled_decay=True), "timm", {"decay": "decoupled"}),
    Row(
        "timm-decoupled-foreach",
        timm_lamb(decoupled_decay=True, foreach=True),
        "timm",
        {"decay": "decoupled"},
    ),
    Row("timm-trust_clip", timm_lamb(trust_clip=True), "timm", {"trust_clip": (0.0, 1.0)}),
    Row(
        "timm-trust_clip-always_adapt",
        timm_lamb(trust_clip=True, always_adapt=True),
        "nvlamb",
        {"trust_clip": (0.0, 1.0)},
    ),
    Row(
        "timm-no_bias_correction",
        timm_lamb(bias_correction=False),
        "timm",
        {"bias_correction": False},
    ),
    Row(
        "timm-no_grad_averaging", timm_lamb(grad_averaging=False), "timm", {"grad_averaging": False}
    ),
    Row("timm-no_clip", timm_lamb(max_grad_norm=None), "timm", {"prenorm": "none"}),
    Row("timm-clip0.5", timm_lamb(max_grad_norm=0.5), "timm", {"max_grad_norm": 0.5}),
    # torch_optimizer.Lamb (§2.8): no clipping, φ = clamp(‖w‖, 0, clamp_value), ratio everywhere.
    Row("torch_optimizer-defaults", to_lamb(), "torch_optimizer", weight_decay=0.0),
    Row("torch_optimizer-wd", to_lamb(weight_decay=0.01), "torch_optimizer"),
    Row(
        "torch_optimizer-debias",
        to_lamb(debias=True),
        "torch_optimizer",
        {"bias_correction": "step_size"},
    ),
    Row("torch_optimizer-adam", to_lamb(adam=True), "torch_optimizer", {"adapt": "none"}),
    Row("torch_optimizer-clamp1", to_lamb(clamp_value=1.0), "torch_optimizer", {"phi_max": 1.0}),
    # cybertronai/pytorch-lamb (§2.9) through its torch-optimizer equivalent.
    Row("pytorch_lamb", to_lamb(clamp_value=10, debias=False), "pytorch_lamb", weight_decay=0.0),
    Row("pytorch_lamb-wd", to_lamb(clamp_value=10, debias=False), "pytorch_lamb"),
    # torch.optim.AdamW (torch 2.13.0).
    Row("adamw-defaults", adamw(), "adamw"),
    Row("adamw-wd0.1", adamw(amsgrad=False), "adamw", weight_decay=0.1),
    Row("adamw-foreach", adamw(foreach=True), "adamw"),
    # timm.optim.Lars (§2.7): r = c‖w‖/(‖g‖+λ‖w‖+ε) on g+λw, then SGD momentum.
    Row("lars-momentum", timm_lars(momentum=0.9, always_adapt=True), "lars", LARS, 1e-4, 1.0),
    Row(
        "lars-nesterov",
        timm_lars(momentum=0.9, nesterov=True, always_adapt=True),
        "lars",
        {**LARS, "nesterov": True},
        1e-4,
        1.0,
    ),
    Row(
        "lars-foreach",
        timm_lars(momentum=0.9, always_adapt=True, foreach=True),
        "lars",
        LARS,
        1e-4,
        1.0,
    ),
    Row("lars-defaults", timm_lars(), "lars", {}, 1e-4, 0.05),
]


def run_pair(row: Row, lib, dtype, impl: str, callback=None) -> tuple[torch.Tensor, torch.Tensor]:
    ours = train(
        lambda m: lamb_variants.create(
            row.preset, named_groups(m, row.weight_decay), lr=row.lr, impl=impl, **row.overrides
        ),
        make_model(row.model, dtype),
        STEPS,
        callback=callback,
    )
    theirs = train(
        lambda m: row.upstream(lib, plain_groups(m, row.weight_decay), row.lr),
        make_model(row.model, dtype),
        STEPS,
    )
    return theirs, ours


@IMPLS
@DTYPES
@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_preset_matches_upstream(row, dtype, impl, timm_optim):
    theirs, ours = run_pair(row, timm_optim, dtype, impl)
    assert torch.isfinite(theirs).all()
    assert rel_diff(theirs, ours) <= TOL[dtype]
    # The run moved the parameters far beyond the tolerance: the comparison has teeth.
    assert rel_diff(theirs, flat_init(row.model, dtype)) > 100 * TOL[torch.float32]


def flat_init(kind: str, dtype) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in make_model(kind, dtype).parameters()])


# Pairs that must NOT match: each differs from a passing row in exactly one setting, so a
# comparison that could not tell them apart would fail here.
MISMATCHES = [
    Row("timm-defaults-vs-nvlamb", timm_lamb(), "nvlamb"),
    Row("timm-decoupled-vs-in_ratio", timm_lamb(decoupled_decay=True), "timm"),
    Row("timm-clip0.5-vs-clip1", timm_lamb(max_grad_norm=0.5), "timm"),
    Row("torch_optimizer-clamp1-vs-clamp10", to_lamb(clamp_value=1.0), "torch_optimizer"),
    Row("torch_optimizer-debias-vs-not", to_lamb(debias=True), "torch_optimizer"),
    Row(
        "lars-nesterov-vs-not",
        timm_lars(momentum=0.9, nesterov=True, always_adapt=True),
        "lars",
        LARS,
        1e-4,
        1.0,
    ),
]


@pytest.mark.parametrize("row", MISMATCHES, ids=[r.id for r in MISMATCHES])
def test_mismatched_settings_are_detected(row, timm_optim):
    theirs, ours = run_pair(row, timm_optim, torch.float64, "fast")
    assert rel_diff(theirs, ours) > 10 * TOL[torch.float32]


def test_phi_clamp_bites_in_clamp1_row(timm_optim):
    """In the clamp_value=1 row, adapted tensors have ‖w‖ > 1 at every step, so φ acts."""
    row = next(r for r in ROWS if r.id == "torch_optimizer-clamp1")
    rows: list[dict] = []
    theirs, ours = run_pair(row, timm_optim, torch.float64, "fast", callback=stats_rows(rows))
    assert len(rows) == STEPS
    for r in rows:
        assert (r["weight_norms"] > 1.0).sum() >= 3
        # φ(‖w‖) = 1 for those tensors: r·‖u‖ = 1 (no trust_clip, no eps, ratio applied to all).
        big = r["weight_norms"] > 1.0
        torch.testing.assert_close(
            (r["trust_ratios"] * r["update_norms"])[big],
            torch.ones(int(big.sum()), dtype=torch.float64),
            rtol=1e-12,
            atol=0,
        )


def test_clipping_exercised_both_ways():
    """The shared data stream puts the global grad norm above 1 often and below it sometimes."""
    rows: list[dict] = []
    train(
        lambda m: lamb_variants.create("nvlamb", named_groups(m), lr=1e-2),
        make_model(),
        STEPS,
        callback=stats_rows(rows),
    )
    above = sum(r["grad_norm"].item() > 1.0 for r in rows)
    assert STEPS // 4 <= above <= STEPS - 5


@pytest.mark.parametrize(
    ("preset", "package", "version"),
    [
        ("timm", "timm", "1.0.31"),
        ("lars", "timm", "1.0.31"),
        ("torch_optimizer", "torch-optimizer", "0.3.0"),
    ],
)
def test_reference_packages_are_the_versions_presets_name(preset, package, version):
    assert importlib.metadata.version(package) == version
    assert version in lamb_variants.PRESETS[preset].reproduces


def test_adamw_preset_names_installed_torch():
    assert torch.__version__.split("+")[0] in lamb_variants.PRESETS["adamw"].reproduces
