"""The knobs of the LAMB family: names, allowed values, defaults and strict validation.

Every knob lives in the optimizer's ``defaults`` and in each ``param_group`` (so it may differ per
group) and round-trips through ``state_dict``. Validation is strict: a bad value raises
``ValueError`` naming the knob and what is allowed, and an unknown knob name raises
``ValueError`` listing the valid names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

PRENORM = ("none", "clip", "normalize")
BIAS_CORRECTION = (True, False, "step_size")
PHI = ("identity", "clip")
LAYER_SPLIT = ("tensor", "module")
ADAPT = ("all", "decayed", "none")
DECAY = ("in_ratio", "decoupled", "l2")
MOMENTS = ("adam", "momentum")
RATIO_DENOMINATOR = ("update", "split")
#: Stage 3's ε: "add" (m̂/(√v̂+ε), or m̂/√(v̂+ε) with ``eps_inside_sqrt``) or "atan2" (Adam-atan2,
#: ε-free; ``eps`` and ``eps_inside_sqrt`` then do not act). See ``stages.AdamDirection``.
EPS_MODE = ("add", "atan2")

#: Knobs whose value is one of a few names.
CHOICES: dict[str, tuple] = {
    "prenorm": PRENORM,
    "bias_correction": BIAS_CORRECTION,
    "phi": PHI,
    "layer_split": LAYER_SPLIT,
    "adapt": ADAPT,
    "decay": DECAY,
    "moments": MOMENTS,
    "ratio_denominator": RATIO_DENOMINATOR,
    "eps_mode": EPS_MODE,
}
FLAGS = ("grad_averaging", "eps_inside_sqrt", "nesterov")
#: Knobs that are numbers: (low, high, low excluded, high excluded).
NUMBERS: dict[str, tuple[float, float, bool, bool]] = {
    "lr": (0.0, math.inf, False, False),  # or a tensor (a scheduler may set one)
    "eps": (0.0, math.inf, False, True),
    "weight_decay": (0.0, math.inf, False, True),
    "phi_min": (0.0, math.inf, False, True),
    "trust_eps": (0.0, math.inf, False, True),
    "dampening": (0.0, math.inf, False, True),
    "momentum": (0.0, 1.0, False, False),
    "phi_max": (0.0, math.inf, True, False),
    "trust_coeff": (0.0, math.inf, True, True),
    # M = 0 would divide every gradient by +inf (apex/timm silently zero them): rejected.
    "max_grad_norm": (0.0, math.inf, True, False),
}

#: Knob defaults: NVLAMB as in apex FusedLAMB(use_nvlamb=True), the algorithm NVIDIA published.
DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "betas": (0.9, 0.999),
    "eps": 1e-6,
    "weight_decay": 0.01,
    "prenorm": "clip",
    "max_grad_norm": 1.0,
    "bias_correction": True,
    "grad_averaging": True,
    "eps_inside_sqrt": False,
    "eps_mode": "add",
    "moments": "adam",
    "momentum": 0.9,
    "dampening": 0.0,
    "nesterov": False,
    "decay": "in_ratio",
    "adapt": "all",
    "layer_split": "tensor",
    "phi": "identity",
    "phi_min": 0.0,
    "phi_max": 10.0,
    "trust_clip": None,
    "trust_coeff": 1.0,
    "trust_eps": 0.0,
    "ratio_denominator": "update",
}

KNOB_NAMES: tuple[str, ...] = tuple(DEFAULTS)


def _choice(name: str, value: Any, allowed: tuple) -> Any:
    # `True == 1` in Python: compare types too, so bias_correction=1 is rejected, not aliased.
    for a in allowed:
        if type(value) is type(a) and value == a:
            return value
    raise ValueError(f"{name}={value!r} is not allowed; expected one of {list(allowed)}")


def _number(name: str, value: Any, lo: float, hi: float, *, lo_open=False, hi_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}={value!r} is not allowed; expected a number")
    v = float(value)
    ok_lo = v > lo if lo_open else v >= lo
    ok_hi = v < hi if hi_open else v <= hi
    if not (ok_lo and ok_hi and not math.isnan(v)):
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ValueError(
            f"{name}={value!r} is not allowed; expected a number in {left}{lo}, {hi}{right}"
        )
    return v


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not allowed; expected True or False")
    return value


def validate(knobs: Mapping[str, Any]) -> dict[str, Any]:
    """Check a full or partial knob mapping; return it with normalized values.

    Raises:
        ValueError: an unknown knob (listing the valid ones) or a bad value (naming the knob and
            the allowed values).
    """
    unknown = sorted(set(knobs) - set(KNOB_NAMES))
    if unknown:
        raise ValueError(f"unknown knob(s) {unknown}; valid knobs are {sorted(KNOB_NAMES)}")
    out = dict(knobs)
    for name, value in knobs.items():
        if name == "lr" and _is_tensor(value):
            out[name] = value
        elif name in NUMBERS:
            lo, hi, lo_open, hi_open = NUMBERS[name]
            out[name] = _number(name, value, lo, hi, lo_open=lo_open, hi_open=hi_open)
        elif name == "betas":
            if not isinstance(value, tuple | list) or len(value) != 2:
                raise ValueError(f"betas={value!r} is not allowed; expected a pair (beta1, beta2)")
            b1 = _number("betas[0]", value[0], 0.0, 1.0, hi_open=True)
            b2 = _number("betas[1]", value[1], 0.0, 1.0, hi_open=True)
            out[name] = (b1, b2)
        elif name in CHOICES:
            _choice(name, value, CHOICES[name])
        elif name in FLAGS:
            _flag(name, value)
        elif name == "trust_clip":
            out[name] = _trust_clip(value)
    if "phi_min" in out and "phi_max" in out and out["phi_min"] > out["phi_max"]:
        raise ValueError(
            f"phi_min={out['phi_min']!r} > phi_max={out['phi_max']!r}; expected phi_min <= phi_max"
        )
    if out.get("nesterov") and out.get("dampening", 0.0) != 0.0:
        raise ValueError("nesterov=True needs dampening=0 (as torch.optim.SGD)")
    return out


def allowed(name: str) -> str:
    """What knob ``name`` accepts, in words (``python -m lamb_variants list``)."""
    if name in CHOICES:
        return " | ".join(repr(v) for v in CHOICES[name])
    if name in FLAGS:
        return "True | False"
    if name in NUMBERS:
        lo, hi, lo_open, hi_open = NUMBERS[name]
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        return f"a number in {interval}" + (" (or a tensor)" if name == "lr" else "")
    if name == "betas":
        return "(beta1, beta2), each in [0, 1)"
    if name == "trust_clip":
        return "None | (lo, hi) with 0 <= lo <= hi"
    raise ValueError(f"unknown knob {name!r}; valid knobs are {sorted(KNOB_NAMES)}")


def _trust_clip(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(f"trust_clip={value!r} is not allowed; expected None or a pair (lo, hi)")
    lo = _number("trust_clip[0]", value[0], 0.0, math.inf, hi_open=True)
    hi = _number("trust_clip[1]", value[1], 0.0, math.inf, lo_open=True)
    if lo > hi:
        raise ValueError(f"trust_clip={value!r} is not allowed; expected lo <= hi")
    return (lo, hi)


def _is_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor)
