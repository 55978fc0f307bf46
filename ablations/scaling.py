"""Batch scaling: steps and samples to a target against the batch size, the fitted trade-off, and
the critical batch (issue 12; ``sweeps/batch_scaling.yaml``).

McCandlish et al. 2018 (arXiv 1812.06162, §2.2): the steps S and samples E = B·S a run needs to
reach a target follow

    S = S_min (1 + B_noise / B),    E = E_min (1 + B / B_noise),    E_min = S_min · B_noise,

so S is linear in 1/B: a least-squares line S = a + b/B gives S_min = a and B_noise = b/a.
Below B_noise doubling the batch nearly halves the steps (perfect scaling); above it, it buys
little. Zhang et al. 2024 (arXiv 2410.21676) define the critical batch as where the steps exceed
perfect linear scaling from the smallest batch B0 by 20%: with the fitted curve,
S(B)·B / (S(B0)·B0) = (B + B_noise)/(B0 + B_noise) = 1.2, i.e. B_crit = 1.2·B0 + 0.2·B_noise.
Intervals: a bootstrap over seeds (each batch's runs resampled, the fit redone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Steps beyond perfect linear scaling that define the critical batch (Zhang et al.: 20%).
OVERHEAD = 0.2


@dataclass(frozen=True)
class Fit:
    s_min: float
    b_noise: float
    e_min: float
    b_crit: float  # relative to the smallest batch fitted


def fit(batches: np.ndarray, steps: np.ndarray) -> Fit:
    """The least-squares fit of S = S_min (1 + B_noise/B) to (batch, steps-to-target) points
    (NaN where it is not defined: fewer than two batch sizes, or a non-positive intercept)."""
    b = np.asarray(batches, dtype=float)
    s = np.asarray(steps, dtype=float)
    ok = np.isfinite(s) & np.isfinite(b) & (b > 0)
    b, s = b[ok], s[ok]
    if len(np.unique(b)) < 2:
        return Fit(math.nan, math.nan, math.nan, math.nan)
    slope, intercept = np.polyfit(1.0 / b, s, 1)
    if intercept <= 0:
        return Fit(math.nan, math.nan, math.nan, math.nan)
    b_noise = slope / intercept
    b0 = float(b.min())
    return Fit(
        s_min=float(intercept),
        b_noise=float(b_noise),
        e_min=float(intercept * b_noise),
        b_crit=(1 + OVERHEAD) * b0 + OVERHEAD * float(b_noise),
    )


def bootstrap(
    runs: pd.DataFrame,
    column: str,
    *,
    batch: str = "phases.0.global_batch",
    draws: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """The fit of ``column`` (steps to a target) against ``batch`` over ``runs`` (one
    optimizer's runs; unreached targets are NaN and leave their run out), with percentile
    intervals from resampling each batch's runs with replacement. One row per fitted quantity:
    estimate, low, high."""
    groups = [g[column].to_numpy(dtype=float) for _, g in runs.groupby(batch, sort=True)]
    sizes = np.array(sorted(runs[batch].unique()), dtype=float)
    means = np.array([np.nanmean(g) if np.isfinite(g).any() else np.nan for g in groups])
    estimate = fit(sizes, means)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(draws):
        resampled = [
            np.nanmean(rng.choice(g, len(g))) if np.isfinite(g).any() else np.nan for g in groups
        ]
        samples.append(fit(sizes, np.array(resampled)))
    rows = []
    alpha = (1 - confidence) / 2
    for name in ("s_min", "b_noise", "e_min", "b_crit"):
        values = np.array([getattr(f, name) for f in samples])
        values = values[np.isfinite(values)]
        low, high = np.quantile(values, [alpha, 1 - alpha]) if len(values) else (math.nan, math.nan)
        rows.append(
            {"quantity": name, "estimate": getattr(estimate, name), "low": low, "high": high}
        )
    return pd.DataFrame(rows).set_index("quantity")
