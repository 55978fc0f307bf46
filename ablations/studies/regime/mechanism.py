"""What the telemetry shows behind a paired effect of the regime map: the ε-dominated share of
the model, the applied step of the tensors no trust ratio acts on, and the lr mass.

- ε-dominated share: the share of the model's elements with √v̂ ≤ ε, each tensor's fraction
  (:mod:`lamb_variants.telemetry`) weighted by its elements, averaged over the sampled steps and
  seeds.
- no-decay step: the applied ‖Δw‖ of the bias and LayerNorm tensors (NVIDIA's no-decay group:
  plain Adam steps in ``apex`` mode), one variant over another, at the first sampled step (step
  50, where bias correction's factor is furthest from 1) and the median over the run.
- lr mass: Σ lr of one variant over another's (the decay-degree comparisons).

Variants are keys into the layer and curve tables (which hold no setting columns), found from
the settings by :func:`ablations.studies.selection.variant_with`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: NVIDIA's no-decay group (lamb_variants.NVIDIA_NO_DECAY): biases and LayerNorm.
NO_DECAY = ("bias", "LayerNorm")


def eps_dominated_share(layers: pd.DataFrame, sizes: dict[str, int]) -> pd.Series:
    """Per variant, the share of the model's elements with √v̂ ≤ ε: each tensor's fraction
    weighted by its elements, averaged over the sampled steps and seeds."""
    df = layers.dropna(subset=["eps_dominated"])
    weight = df["tensor"].astype(str).map(sizes).astype(float)
    df = df.assign(w=weight, wf=weight * df["eps_dominated"])
    per_sample = df.groupby([df["variant"].astype(str), "trial", "step"])[["wf", "w"]].sum()
    share = per_sample["wf"] / per_sample["w"]
    return share.groupby(level=0).mean()


def nodecay_step_ratio(layers: pd.DataFrame | None, a: str, b: str) -> tuple[float, float]:
    """The applied ‖Δw‖ (relative update × ‖w‖) of the bias and LayerNorm tensors, mean over
    them and seeds, of variant ``a`` over ``b``: at the first sampled step and the median over
    the sampled steps where the lr is not 0 (absolute steps: biases start at 0, so their
    relative steps would mostly say how large their norm has grown)."""
    if layers is None or "relative_update" not in layers:
        return math.nan, math.nan
    sel = layers[layers["tensor"].str.contains("|".join(NO_DECAY))]
    sel = sel.assign(step_norm=sel["relative_update"] * sel["weight_norm"])
    by = sel.groupby([sel["variant"].astype(str), "step"])["step_norm"].mean().unstack(0)
    if a not in by or b not in by:
        return math.nan, math.nan
    ratio = (by[a] / by[b]).replace([np.inf, -np.inf], np.nan).dropna()
    if ratio.empty:
        return math.nan, math.nan
    return float(ratio.iloc[0]), float(ratio.median())


def lr_mass_ratio(curves: pd.DataFrame | None, a: str, b: str) -> float:
    """Σ lr over the run of variant ``a`` over ``b`` (each the mean over seeds)."""
    if curves is None:
        return math.nan
    lr = curves[curves["metric"] == "optim/lr"]
    mass = lr.groupby([lr["variant"].astype(str), "seed"])["value"].sum()
    mass = mass.groupby(level=0).mean()
    return float(mass[a] / mass[b]) if a in mass and b in mass else math.nan
