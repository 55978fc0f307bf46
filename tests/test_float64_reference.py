"""Presets against float64 references written here from the documented math.

The implementations these presets reproduce are not installable here (CUDA kernels, JAX,
TensorFlow). Each reference below is the update of lamb-implementations.md written out per
tensor, independent of lamb_variants (only the parameter grouping is shared). Every row trains
the same model for 50 steps; max |difference| relative to max |param| <= 1e-10.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
import torch
from helpers import make_model, named_groups, rel_diff, stats_rows, train

import lamb_variants

STEPS = 50
TOL = 1e-10
NO_DECAY_RE = ("LayerNorm", "layer_norm", "bias")  # BERT / DLE TF exclusion lists


def norm(t: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((t * t).sum())


#: Adam-atan2's constants: Everett et al. 2024 (arXiv 2407.05872), as in the public
#: implementations (lucidrains/adam-atan2-pytorch: a = 1.27, b = 1).
ATAN2_A, ATAN2_B = 1.27, 1.0


def atan2_direction(m_hat: torch.Tensor, v_hat: torch.Tensor) -> torch.Tensor:
    """Adam-atan2's direction a·atan2(m̂, b·√v̂), written with atan instead of atan2 (so not the
    optimizer's formula): x = b·√v̂ >= 0, and atan2(y, x) = atan(y/x) for x > 0; x = 0 only where
    every gradient so far was 0, so y = 0 too, and atan2(0, 0) = 0."""
    x = ATAN2_B * torch.sqrt(v_hat)
    safe = torch.where(x > 0, x, torch.ones_like(x))
    return torch.where(x > 0, ATAN2_A * torch.atan(m_hat / safe), torch.zeros_like(x))


class Reference:
    """Minimal optimizer skeleton: groups of (name, tensor), per-tensor moments, ``step`` count."""

    def __init__(self, groups: list[dict], **hp):
        self.groups = [
            {
                "params": [p for _, p in g["params"]],
                "names": [n for n, _ in g["params"]],
                "weight_decay": g["weight_decay"],
                "step": 0,
            }
            for g in groups
        ]
        self.hp = hp
        self.state: dict[torch.Tensor, dict] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.groups:
            for p in g["params"]:
                p.grad = None

    def moments(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.state.setdefault(p, {"m": torch.zeros_like(p), "v": torch.zeros_like(p)})
        return s["m"], s["v"]

    def global_norm(self) -> torch.Tensor:
        return torch.sqrt(sum((p.grad * p.grad).sum() for g in self.groups for p in g["params"]))


class ApexFusedLamb(Reference):
    """apex FusedLAMB (§2.1): global clip g/(G/M) if G > M; Adam moments with β3 = 1-β1 (or 1);
    AdamW mode u = m̂/(√v̂+ε) + λw, or L2 mode (λw added to the clipped gradient, no λw in u);
    trust ratio ‖w‖/‖u‖ only if use_nvlamb or λ ≠ 0, 1 when either norm is 0; w ← w - η·r·u.
    ``atan2=True`` (not apex: the ε-free control) replaces m̂/(√v̂+ε) by a·atan2(m̂, b·√v̂)."""

    @torch.no_grad()
    def step(self):
        hp = {
            "lr": 1e-3,
            "betas": (0.9, 0.999),
            "eps": 1e-6,
            "bias_correction": True,
            "grad_averaging": True,
            "max_grad_norm": 1.0,
            "adam_w_mode": True,
            "use_nvlamb": False,
            "atan2": False,
            **self.hp,
        }
        b1, b2 = hp["betas"]
        big_g = self.global_norm()
        clip = big_g / hp["max_grad_norm"] if big_g > hp["max_grad_norm"] else 1.0
        for group in self.groups:
            group["step"] += 1
            t, lam = group["step"], group["weight_decay"]
            bc1, bc2 = (1 - b1**t, 1 - b2**t) if hp["bias_correction"] else (1.0, 1.0)
            b3 = 1 - b1 if hp["grad_averaging"] else 1.0
            for w in group["params"]:
                g = w.grad / clip
                if not hp["adam_w_mode"]:
                    g = g + lam * w
                m, v = self.moments(w)
                m.copy_(b1 * m + b3 * g)
                v.copy_(b2 * v + (1 - b2) * g * g)
                if hp["atan2"]:
                    u = atan2_direction(m / bc1, v / bc2)
                else:
                    u = (m / bc1) / (torch.sqrt(v / bc2) + hp["eps"])
                if hp["adam_w_mode"]:
                    u = u + lam * w
                w_norm, u_norm = norm(w), norm(u)
                r = 1.0
                if (hp["use_nvlamb"] or lam != 0) and w_norm > 0 and u_norm > 0:
                    r = w_norm / u_norm
                w.sub_(hp["lr"] * r * u)


class DeepSpeedFusedLamb(Reference):
    """DeepSpeed FusedLamb (§2.11), max_grad_norm = 0 (off, its default): uncorrected moments,
    u = m/(√v+ε) + λw, or m/√(v+ε) + λw with eps_inside_sqrt; coefficient ‖w‖/‖u‖ clamped to
    [min_coeff, max_coeff], 1 when either norm is 0, on every tensor; w ← w - η·√bc2/bc1·coeff·u.

    DeepSpeed's optional clip is ((G/scale) + 1e-6)/M, applied only when > 1: the +1e-6 makes it
    differ from prenorm="clip" (1/max(1, G/M)) by a relative 1e-6/G, so it is not compared here;
    the preset, like DeepSpeed's default, has clipping off. ``atan2=True`` (not DeepSpeed: the
    ε-free control) replaces m/(√v+ε) by a·atan2(m, b·√v), still with the step-size correction.
    """

    @torch.no_grad()
    def step(self):
        hp = {
            "lr": 1e-3,
            "betas": (0.9, 0.999),
            "eps": 1e-8,
            "eps_inside_sqrt": False,
            "bias_correction": True,
            "max_coeff": 10.0,
            "min_coeff": 0.01,
            "atan2": False,
            **self.hp,
        }
        b1, b2 = hp["betas"]
        for group in self.groups:
            group["step"] += 1
            t, lam = group["step"], group["weight_decay"]
            step_size = hp["lr"]
            if hp["bias_correction"]:
                step_size = hp["lr"] * math.sqrt(1 - b2**t) / (1 - b1**t)
            for w in group["params"]:
                g = w.grad
                m, v = self.moments(w)
                m.copy_(b1 * m + (1 - b1) * g)
                v.copy_(b2 * v + (1 - b2) * g * g)
                if hp["atan2"]:
                    u = atan2_direction(m, v) + lam * w
                else:
                    if hp["eps_inside_sqrt"]:
                        den = torch.sqrt(v + hp["eps"])
                    else:
                        den = torch.sqrt(v) + hp["eps"]
                    u = m / den + lam * w
                w_norm, u_norm = norm(w), norm(u)
                coeff = 1.0
                if w_norm > 0 and u_norm > 0:
                    coeff = torch.clamp(w_norm / u_norm, hp["min_coeff"], hp["max_coeff"])
                w.sub_(step_size * coeff * u)


class BertAdamWeightDecay(Reference):
    """Google BERT (§2.6): tf.clip_by_global_norm(grads, 1.0), i.e. g·1/max(G, 1), then
    AdamWeightDecayOptimizer: m, v without bias correction, update = m/(√v+ε) (+ λw unless the
    name matches the exclusion list), w ← w - η·update."""

    @torch.no_grad()
    def step(self):
        hp = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay_rate": 0.01, **self.hp}
        b1, b2 = hp["betas"]
        big_g = self.global_norm()
        factor = 1.0 / max(big_g, 1.0)
        for group in self.groups:
            for name, w in zip(group["names"], group["params"], strict=True):
                g = w.grad * factor
                m, v = self.moments(w)
                m.copy_(b1 * m + (1 - b1) * g)
                v.copy_(b2 * v + (1 - b2) * g * g)
                update = m / (torch.sqrt(v) + hp["eps"])
                if not any(re.search(r, name) for r in NO_DECAY_RE):
                    update = update + hp["weight_decay_rate"] * w
                w.sub_(hp["lr"] * update)


class OptaxLamb(Reference):
    """optax.lamb (§2.10) = chain(scale_by_adam(b1, b2, eps, eps_root), add_decayed_weights(λ,
    mask), scale_by_trust_ratio(), scale_by_learning_rate(η)): u = m̂/(√(v̂+eps_root)+ε) + λw
    (λ only where the mask is true: here the group's weight decay), r = ‖w‖/‖u‖ on every leaf,
    1 where either norm is 0; w ← w - η·r·u."""

    @torch.no_grad()
    def step(self):
        hp = {"lr": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-6, "eps_root": 0.0, **self.hp}
        b1, b2 = hp["b1"], hp["b2"]
        for group in self.groups:
            group["step"] += 1
            t, lam = group["step"], group["weight_decay"]
            for w in group["params"]:
                g = w.grad
                m, v = self.moments(w)
                m.copy_(b1 * m + (1 - b1) * g)
                v.copy_(b2 * v + (1 - b2) * g * g)
                m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
                u = m_hat / (torch.sqrt(v_hat + hp["eps_root"]) + hp["eps"]) + lam * w
                p, q = norm(w), norm(u)
                r = torch.where((p == 0) | (q == 0), torch.ones_like(p), p / q)
                w.sub_(hp["lr"] * r * u)


class TfaLamb(Reference):
    """TensorFlow Addons LAMB (§2.12): bias-corrected m̂/(√v̂+ε); u += λw unless the name matches
    exclude_from_weight_decay; ratio ‖w‖/‖u‖ (1 if either is not > 0) unless the name matches
    exclude_from_layer_adaptation, which defaults to exclude_from_weight_decay when falsy."""

    @torch.no_grad()
    def step(self):
        hp = {
            "lr": 1e-3,
            "beta_1": 0.9,
            "beta_2": 0.999,
            "epsilon": 1e-6,
            "weight_decay": 0.0,
            "exclude_from_weight_decay": None,
            "exclude_from_layer_adaptation": None,
            **self.hp,
        }
        b1, b2 = hp["beta_1"], hp["beta_2"]
        no_decay = hp["exclude_from_weight_decay"] or []
        no_adapt = hp["exclude_from_layer_adaptation"] or no_decay

        def excluded(name: str, patterns: Sequence[str]) -> bool:
            return any(re.search(r, name) is not None for r in patterns)

        for group in self.groups:
            group["step"] += 1
            t = group["step"]
            for name, w in zip(group["names"], group["params"], strict=True):
                g = w.grad
                m, v = self.moments(w)
                m.copy_(b1 * m + (1 - b1) * g)
                v.copy_(b2 * v + (1 - b2) * g * g)
                u = (m / (1 - b1**t)) / (torch.sqrt(v / (1 - b2**t)) + hp["epsilon"])
                if not excluded(name, no_decay):
                    u = u + hp["weight_decay"] * w
                ratio = 1.0
                if not excluded(name, no_adapt):
                    w_norm, u_norm = norm(w), norm(u)
                    if w_norm > 0 and u_norm > 0:
                        ratio = w_norm / u_norm
                w.sub_(ratio * hp["lr"] * u)


@dataclass(frozen=True)
class Row:
    id: str
    reference: Callable[[list[dict], float], Reference]
    preset: str
    overrides: dict = field(default_factory=dict)
    weight_decay: float = 0.01
    lr: float = 1e-2
    head_scale: float = 1.0


def ref(cls, **hp):
    return lambda groups, lr: cls(groups, lr=lr, **hp)


TF2_EXCLUDE = {"exclude_from_weight_decay": list(NO_DECAY_RE)}

ROWS = [
    Row("apex-defaults", ref(ApexFusedLamb), "apex"),
    Row("apex-nvlamb", ref(ApexFusedLamb, use_nvlamb=True), "nvlamb"),
    Row(
        "apex-nvlamb-l2",
        ref(ApexFusedLamb, use_nvlamb=True, adam_w_mode=False),
        "nvlamb",
        {"decay": "l2"},
    ),
    Row("apex-l2", ref(ApexFusedLamb, adam_w_mode=False), "apex", {"decay": "l2"}),
    Row(
        "apex-nvlamb-clip0.5",
        ref(ApexFusedLamb, use_nvlamb=True, max_grad_norm=0.5),
        "nvlamb",
        {"max_grad_norm": 0.5},
    ),
    Row(
        "apex-nvlamb-no_bc-no_averaging",
        ref(ApexFusedLamb, use_nvlamb=True, bias_correction=False, grad_averaging=False),
        "nvlamb",
        {"bias_correction": False, "grad_averaging": False},
    ),
    Row("deepspeed-defaults", ref(DeepSpeedFusedLamb), "deepspeed", weight_decay=0.0),
    Row("deepspeed-wd", ref(DeepSpeedFusedLamb), "deepspeed"),
    Row(
        "deepspeed-eps_inside_sqrt",
        ref(DeepSpeedFusedLamb, eps_inside_sqrt=True),
        "deepspeed",
        {"eps_inside_sqrt": True},
    ),
    # A head initialised 1000x smaller: its coefficient is clamped at min_coeff = 0.01.
    Row("deepspeed-min_coeff", ref(DeepSpeedFusedLamb), "deepspeed", head_scale=1e-3),
    Row(
        "deepspeed-eps_inside_sqrt-min_coeff",
        ref(DeepSpeedFusedLamb, eps_inside_sqrt=True),
        "deepspeed",
        {"eps_inside_sqrt": True},
        head_scale=1e-3,
    ),
    Row("bert_adam", ref(BertAdamWeightDecay), "bert_adam", lr=1e-3),
    # The ε-free control (eps_mode="atan2") in both of NVIDIA's modes, and with the bias
    # correction off or moved to the step size.
    Row(
        "atan2-nvlamb",
        ref(ApexFusedLamb, use_nvlamb=True, atan2=True),
        "nvlamb",
        {"eps_mode": "atan2"},
    ),
    Row("atan2-apex", ref(ApexFusedLamb, atan2=True), "apex", {"eps_mode": "atan2"}),
    Row(
        "atan2-nvlamb-no_bc",
        ref(ApexFusedLamb, use_nvlamb=True, atan2=True, bias_correction=False),
        "nvlamb",
        {"eps_mode": "atan2", "bias_correction": False},
    ),
    Row(
        "atan2-deepspeed",
        ref(DeepSpeedFusedLamb, atan2=True),
        "deepspeed",
        {"eps_mode": "atan2", "eps_inside_sqrt": True},  # ignored: atan2 has no ε
    ),
    Row("optax-defaults", ref(OptaxLamb), "optax", weight_decay=0.0),
    Row("optax-masked_wd", ref(OptaxLamb), "optax"),
    Row("tfa-defaults", ref(TfaLamb), "tfa", weight_decay=0.0),
    # NVIDIA TF2: exclude_from_layer_adaptation=['None'] keeps the ratio on every tensor.
    Row(
        "tfa-nvidia_tf2",
        ref(TfaLamb, weight_decay=0.01, exclude_from_layer_adaptation=["None"], **TF2_EXCLUDE),
        "tfa",
    ),
    # tfa's default: layer adaptation excluded wherever weight decay is.
    Row(
        "tfa-exclusions",
        ref(TfaLamb, weight_decay=0.01, **TF2_EXCLUDE),
        "tfa",
        {"adapt": "decayed"},
    ),
]


def run_pair(row: Row, impl: str, callback=None):
    theirs = train(
        lambda m: row.reference(named_groups(m, row.weight_decay), row.lr),
        make_model(head_scale=row.head_scale),
        STEPS,
    )
    ours = train(
        lambda m: lamb_variants.create(
            row.preset, named_groups(m, row.weight_decay), lr=row.lr, impl=impl, **row.overrides
        ),
        make_model(head_scale=row.head_scale),
        STEPS,
        callback=callback,
    )
    return theirs, ours


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_preset_matches_float64_reference(row, impl):
    theirs, ours = run_pair(row, impl)
    assert torch.isfinite(theirs).all()
    assert rel_diff(theirs, ours) <= TOL
    initial = torch.cat(
        [p.detach().reshape(-1) for p in make_model(head_scale=row.head_scale).parameters()]
    )
    assert rel_diff(theirs, initial) > 1e-3  # the run moved: the comparison has teeth


@pytest.mark.parametrize("eps_inside_sqrt", [False, True])
def test_deepspeed_min_coeff_bites(eps_inside_sqrt):
    """In the min_coeff rows the head's coefficient sits at 0.01 at every step."""
    row = next(
        r
        for r in ROWS
        if r.id.startswith("deepspeed")
        and r.head_scale != 1.0
        and r.overrides.get("eps_inside_sqrt", False) == eps_inside_sqrt
    )
    rows: list[dict] = []
    run_pair(row, "fast", callback=stats_rows(rows))
    head = rows[0]["names"].index("head.weight")
    for r in rows:
        raw = r["weight_norms"][head] / r["update_norms"][head]
        assert raw < 0.01
        assert r["trust_ratios"][head].item() == pytest.approx(0.01, rel=1e-12)


MISMATCHES = [
    Row("apex-defaults-vs-nvlamb", ref(ApexFusedLamb), "nvlamb"),
    Row("apex-l2-vs-in_ratio", ref(ApexFusedLamb, use_nvlamb=True, adam_w_mode=False), "nvlamb"),
    Row(
        "deepspeed-eps_inside-vs-outside",
        ref(DeepSpeedFusedLamb, eps_inside_sqrt=True),
        "deepspeed",
        head_scale=1e-3,
    ),
    Row(
        "deepspeed-vs-no_min_coeff",
        ref(DeepSpeedFusedLamb),
        "deepspeed",
        {"trust_clip": None},
        head_scale=1e-3,
    ),
    Row("tfa-exclusions-vs-nvidia_tf2", ref(TfaLamb, weight_decay=0.01, **TF2_EXCLUDE), "tfa"),
    Row("atan2-vs-add", ref(ApexFusedLamb, use_nvlamb=True, atan2=True), "nvlamb"),
    Row(
        "bert_adam-vs-bias_correction",
        ref(BertAdamWeightDecay),
        "bert_adam",
        {"bias_correction": True},
        lr=1e-3,
    ),
]


@pytest.mark.parametrize("row", MISMATCHES, ids=[r.id for r in MISMATCHES])
def test_mismatched_settings_are_detected(row):
    theirs, ours = run_pair(row, "fast")
    assert rel_diff(theirs, ours) > 1e-6
