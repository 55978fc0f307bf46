"""Named presets: the knob settings that reproduce public implementations exactly.

Each preset names the implementation and the version it reproduces. Its knobs are the upstream
constructor defaults (eps, weight_decay, betas, clipping); ``lr`` is always given by the caller.
Sources: ``shared/reference/lamb-implementations.md`` (section numbers below).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from . import knobs as K
from .optimizer import Lamb


@dataclass(frozen=True)
class Preset:
    """A named, validated knob setting.

    Attributes:
        name: the preset's name in :data:`PRESETS`.
        reproduces: the public implementation and version it matches.
        knobs: every knob that differs from :data:`lamb_variants.knobs.DEFAULTS`.
        notes: where the match is exact and what it leaves out.
    """

    name: str
    reproduces: str
    knobs: Mapping[str, Any] = field(default_factory=dict)
    notes: str = ""

    def __post_init__(self) -> None:
        if "lr" in self.knobs:
            raise ValueError(f"preset {self.name!r}: lr is always given by the caller")
        object.__setattr__(self, "knobs", MappingProxyType(K.validate(dict(self.knobs))))

    def resolved(self) -> dict[str, Any]:
        """All knobs of this preset (defaults filled in), without lr."""
        out = {**K.DEFAULTS, **self.knobs}
        out.pop("lr")
        return out


_NO_CLIP = {"prenorm": "none"}

_PRESETS = (
    Preset(
        "nvlamb",
        "NVIDIA apex FusedLAMB(use_nvlamb=True) @6424da3b (§2.1); the NVLAMB algorithm of NVIDIA's "
        "BERT blog with ε outside the sqrt as in all NVIDIA code",
        {},
        "global clip at 1.0, bias correction, u = m̂/(√v̂+ε)+λw, per-tensor ratio on every tensor",
    ),
    Preset(
        "apex",
        "NVIDIA apex FusedLAMB defaults @6424da3b (§2.1), as wired in DeepLearningExamples BERT",
        {"adapt": "decayed"},
        "trust ratio only on λ≠0 tensors (use_nvlamb=False)",
    ),
    Preset(
        "timm",
        "timm.optim.Lamb defaults, timm 1.0.31 (§2.7)",
        {"adapt": "decayed"},
        "always_adapt=False: tensors with λ=0 get plain Adam steps",
    ),
    Preset(
        "torch_optimizer",
        "torch_optimizer.Lamb defaults, torch-optimizer 0.3.0 (§2.8)",
        {
            **_NO_CLIP,
            "bias_correction": False,
            "weight_decay": 0.0,
            "phi": "clip",
            "phi_min": 0.0,
            "phi_max": 10.0,
        },
        "debias=False, φ = clamp(‖w‖, 0, 10); debias=True is bias_correction='step_size'",
    ),
    Preset(
        "pytorch_lamb",
        "cybertronai/pytorch-lamb Lamb @d3ab8dc (§2.9)",
        {
            **_NO_CLIP,
            "bias_correction": False,
            "weight_decay": 0.0,
            "phi": "clip",
            "phi_min": 0.0,
            "phi_max": 10.0,
        },
        "no debiasing, φ = clamp(‖w‖, 0, 10) hard-coded",
    ),
    Preset(
        "optax",
        "optax.lamb defaults @2edbcbe2 (§2.10)",
        {**_NO_CLIP, "weight_decay": 0.0},
        "no clipping unless chained; trust ratio on every leaf; eps_root=0",
    ),
    Preset(
        "deepspeed",
        "DeepSpeed FusedLamb defaults, fused_lamb.py @077e6740 (§2.11)",
        {
            **_NO_CLIP,
            "eps": 1e-8,
            "weight_decay": 0.0,
            "bias_correction": "step_size",
            "trust_clip": (0.01, 10.0),
        },
        "max_grad_norm=0 means off upstream; coefficient clamped to [0.01, 10]",
    ),
    Preset(
        "tfa",
        "TensorFlow Addons LAMB defaults @d208d752 (§2.12)",
        {**_NO_CLIP, "weight_decay": 0.0},
        "exclusion lists are param groups here: excluded tensors get λ=0; with tfa's default "
        "exclude_from_layer_adaptation=exclude_from_weight_decay use adapt='decayed'",
    ),
    Preset(
        "bert_adam",
        "Google BERT AdamWeightDecayOptimizer + clip_by_global_norm(1.0), google-research/bert "
        "@eedf571 optimization.py (§2.6)",
        {"bias_correction": False, "adapt": "none"},
        "no bias correction, no trust ratio, update += λw (decoupled through the lr)",
    ),
    Preset(
        "adamw",
        "torch.optim.AdamW defaults, torch 2.13.0",
        {
            **_NO_CLIP,
            "eps": 1e-8,
            "weight_decay": 0.01,
            "decay": "decoupled",
            "adapt": "none",
        },
        "w ← w(1-ηλ) then w ← w - η m̂/(√v̂+ε)",
    ),
    Preset(
        "lars",
        "timm.optim.Lars defaults, timm 1.0.31 (§2.7): LARS of You et al. 2017 (apex LARC)",
        {
            **_NO_CLIP,
            "moments": "momentum",
            "momentum": 0.0,
            "weight_decay": 0.0,
            "adapt": "decayed",
            "trust_coeff": 0.001,
            "trust_eps": 1e-8,
            "ratio_denominator": "split",
        },
        "r = c‖w‖/(‖g‖+λ‖w‖+ε) on g+λw, then SGD momentum; timm's trust_clip (LARC) is not a knob",
    ),
)

#: Every preset by name.
PRESETS: Mapping[str, Preset] = MappingProxyType({p.name: p for p in _PRESETS})


def create(
    name: str, params: Iterable[Any], *, lr: float, impl: str = "fast", **overrides: Any
) -> Lamb:
    """Build the optimizer of preset ``name`` with ``lr`` and knob ``overrides``.

    Raises:
        ValueError: unknown preset, unknown override key (listing the valid ones) or bad value.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    unknown = sorted(set(overrides) - (set(K.KNOB_NAMES) - {"lr"}))
    if unknown:
        valid = sorted(set(K.KNOB_NAMES) - {"lr"})
        raise ValueError(
            f"unknown override(s) {unknown} for preset {name!r}; valid keys are {valid}"
        )
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr):
        raise ValueError(f"lr={lr!r} is not allowed; expected a finite number")
    knobs = {**PRESETS[name].resolved(), **overrides}
    return Lamb(params, lr=lr, impl=impl, **knobs)
