"""The run config's per-parameter-group overrides (``optimizer.groups``): NVIDIA's two groups,
the knobs each may override over ``optimizer.overrides``, and its lr multiplier ``lr_scale``,
validated strictly (one-line :class:`~ablations.core.errors.ConfigError` naming the key path).
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import lamb_variants
from ablations.config.build import check
from ablations.core.errors import ConfigError

__all__ = ["GROUP_NAMES", "LR_SCALE_BIAS_CORRECTION", "GroupOverrides", "check_knobs"]

#: NVIDIA's two parameter groups, in :func:`lamb_variants.nvidia_param_groups`' order:
#: ``decay`` (λ) and ``no_decay`` (biases and LayerNorm, λ = 0).
GROUP_NAMES = ("decay", "no_decay")
#: ``lr_scale`` value that multiplies a group's lr by the bias-correction ratio
#: c_t = (1 - β1^t)/√(1 - β2^t) of its own betas and step t: with it and bias correction on, a
#: group without a trust ratio takes the step it would take with bias correction off (exactly at
#: ε = 0; m̂/(√v̂+ε)·c_t = m/(√v + ε√(1-β2^t))).
LR_SCALE_BIAS_CORRECTION = "c_t"


#: Knobs a run config may override (lr comes from the phases, λ from ``weight_decay``).
_OVERRIDABLE = frozenset(lamb_variants.KNOB_NAMES) - {"lr", "weight_decay"}


def check_knobs(where: str, knobs: Mapping[str, Any], expected: str = "a knob in") -> None:
    """Every key of ``knobs`` an overridable knob and every value one it allows; one-line
    errors under ``where`` (``optimizer.overrides``, ``optimizer.groups.no_decay``)."""
    for key in knobs:
        check(key in _OVERRIDABLE, f"{where}.{key}", f"{expected} {sorted(_OVERRIDABLE)}", key)
    try:
        lamb_variants.knobs.validate(dict(knobs))
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def _check_group(name: str, knobs: Mapping[str, Any]) -> None:
    """One group's overrides: knobs (as ``overrides``) and ``lr_scale``."""
    where = f"optimizer.groups.{name}"
    if "weight_decay" in knobs:
        raise ConfigError(
            f"{where}.weight_decay: not a group override; set optimizer.weight_decay "
            "(λ of the decayed group; the no_decay group gets 0)"
        )
    if "lr_scale" in knobs:
        scale = knobs["lr_scale"]
        number = isinstance(scale, int | float) and not isinstance(scale, bool)
        ok = scale == LR_SCALE_BIAS_CORRECTION or (number and 0 < scale < math.inf)
        expected = f"a number > 0 or {LR_SCALE_BIAS_CORRECTION!r}"
        check(ok, f"{where}.lr_scale", expected, scale)
    rest = {k: v for k, v in knobs.items() if k != "lr_scale"}
    check_knobs(where, rest, "'lr_scale' or a knob in")


@dataclass(frozen=True)
class GroupOverrides:
    """Per parameter group, knob overrides over ``optimizer.overrides`` (the knobs already live
    per group in :class:`lamb_variants.Lamb`) and ``lr_scale``: the group's lr is the phase's
    scheduled lr times this number, or times c_t (:data:`LR_SCALE_BIAS_CORRECTION`).

    E.g. ``optimizer.groups.no_decay.bias_correction=false``: bias correction off for biases and
    LayerNorm only. Stage 1's global gradient norm G and the trust ratios still span every group.
    """

    #: Knob overrides and ``lr_scale`` of the decayed group: every tensor but the biases and
    #: LayerNorm.
    decay: Mapping[str, Any] = field(default_factory=dict)
    #: Knob overrides and ``lr_scale`` of the biases and LayerNorm (λ = 0).
    no_decay: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in GROUP_NAMES:
            knobs = types.MappingProxyType(dict(getattr(self, name)))
            object.__setattr__(self, name, knobs)
            _check_group(name, knobs)

    def knobs(self, name: str) -> dict[str, Any]:
        """Group ``name``'s knob overrides (without ``lr_scale``)."""
        return {k: v for k, v in getattr(self, name).items() if k != "lr_scale"}

    def lr_scale(self, name: str) -> float | str:
        """Group ``name``'s lr multiplier: a number, or :data:`LR_SCALE_BIAS_CORRECTION`."""
        scale = getattr(self, name).get("lr_scale", 1.0)
        return scale if isinstance(scale, str) else float(scale)

    def __bool__(self) -> bool:
        return any(getattr(self, name) for name in GROUP_NAMES)
