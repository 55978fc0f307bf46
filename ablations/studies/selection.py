"""Runs picked by their settings, never by their names.

A study names what it compares as settings: ``{toggle path: value}``, e.g.
``{"optimizer.preset": "apex", "phases.0.lr": 6e-3, "optimizer.overrides.prenorm": "none"}``.
The collected tables (:mod:`ablations.results`) hold one column per toggle path an experiment
varies, with the value each run trained with (a knob left to the preset: the preset's, as
:mod:`ablations.run.resolved` resolves it), so a setting is found by value whatever the sweep
named its variant. The variant name a selection yields is only a key into the same experiment's
other tables (layers, curves), which have no setting columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

#: Toggle paths the studies compare on (the tables' column names).
PRESET = "optimizer.preset"
PRENORM = "optimizer.overrides.prenorm"
BIAS_CORRECTION = "optimizer.overrides.bias_correction"
EPS = "optimizer.overrides.eps"
EPS_MODE = "optimizer.overrides.eps_mode"
LR = "phases.0.lr"
WARMUP = "phases.0.warmup"
DECAY_POWER = "phases.0.decay_power"
NODECAY_BIAS_CORRECTION = "optimizer.groups.no_decay.bias_correction"
NODECAY_LR_SCALE = "optimizer.groups.no_decay.lr_scale"


def matching(frame: pd.DataFrame, settings: Mapping[str, Any]) -> pd.Series:
    """Which rows of ``frame`` have every one of ``settings`` (numbers equal to 1e-9 relative,
    anything else equal as a value); no row when ``frame`` lacks one of the columns (the
    experiment does not vary that setting, so it cannot tell its runs apart by it)."""
    mask = pd.Series(True, index=frame.index)
    for path, value in settings.items():
        if path not in frame:
            return pd.Series(False, index=frame.index)
        mask &= _equal(frame[path], value)
    return mask


def _equal(column: pd.Series, value: Any) -> pd.Series:
    if value is None:
        return column.isna()
    if isinstance(value, int | float) and not isinstance(value, bool):
        numbers = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
        return pd.Series(np.isclose(numbers, value, rtol=1e-9, atol=0.0), index=column.index)
    return column.astype(object) == value


def variant_with(runs: pd.DataFrame, settings: Mapping[str, Any]) -> str | None:
    """The variant whose runs have ``settings``; None when no run has them.

    Raises:
        ValueError: runs of several variants have them (the settings are not specific enough).
    """
    found = list(dict.fromkeys(runs.loc[matching(runs, settings), "variant"].astype(str)))
    if len(found) > 1:
        raise ValueError(f"settings {dict(settings)} match several variants: {found}")
    return found[0] if found else None
