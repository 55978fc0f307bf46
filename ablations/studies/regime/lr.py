"""LR sensitivity of the recipe and each intervention (``lr_sensitivity``), per mode.

Wortsman et al. 2023 (arXiv 2309.14322, §3.1): for one seed's curve ℓ(η) of final validation MLM
loss over the lr grid, E_η[min(ℓ(η), ℓ0) − min_η ℓ(η)], where ℓ0 is the loss at initialization
and a diverged run counts as ℓ0. ℓ0 here: the mean training MLM loss of step 1 over the
experiment's runs (computed before any update, so it is the initial loss of each seed's weights).
Reported per curve as the mean over seeds with a t-interval, with the best loss (the lowest mean
over seeds across the grid), its lr, and the stability edge from the runs' outcomes
(:mod:`ablations.results.outcomes`): the largest lr at which no seed failed to train or diverged,
the first lr above it at which one did, and whether the grid brackets that edge or is censored
at one of its ends. Telemetry warning signs are counted beside, not mixed in.

A run's intervention is read from its settings (:data:`INTERVENTIONS`), its mode from its preset
and its lr from its phase-1 lr: never from its variant's name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ablations.analysis import stats
from ablations.core.status import Status
from ablations.results.outcomes import FAILED_TO_TRAIN
from ablations.studies.regime.experiments import METRIC, Tables
from ablations.studies.selection import BIAS_CORRECTION, LR, PRENORM, PRESET, matching

#: The recipe and each intervention on it, by the settings it trains with (the named variants of
#: sweeps/regime_map.yaml, resolved: each switches one of NVIDIA's knobs off).
INTERVENTIONS: dict[str, dict[str, Any]] = {
    "baseline": {PRENORM: "clip", BIAS_CORRECTION: True},
    "no_prenorm": {PRENORM: "none", BIAS_CORRECTION: True},
    "no_bias_correction": {PRENORM: "clip", BIAS_CORRECTION: False},
}


def intervention(settings: Mapping[str, Any]) -> str | None:
    """The intervention (:data:`INTERVENTIONS`) whose settings ``settings`` (toggle path ->
    value: a runs row, or a sweep plan's ``toggles(variant)``) has; None if none."""
    for name, wanted in INTERVENTIONS.items():
        if all(path in settings and settings[path] == v for path, v in wanted.items()):
            return name
    return None


def initial_loss(curves: pd.DataFrame) -> float:
    """ℓ0: the mean step-1 training MLM loss over the runs (before any update)."""
    first = curves[(curves["metric"] == "train/mlm_loss") & (curves["step"] == 1)]
    return float(first["value"].mean())


def lr_points(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run of ``lr_sensitivity`` with the settings of an intervention:
    mode, intervention, lr, seed, diverged, failed (finished without training), warned (a
    telemetry warning sign), loss (NaN when diverged)."""
    done = runs[runs["status"].isin([Status.COMPLETE, Status.DIVERGED])]
    names = pd.Series(pd.NA, index=done.index, dtype="object")
    for name, settings in INTERVENTIONS.items():
        names[matching(done, settings)] = name
    done, names = done[names.notna()], names[names.notna()]
    out = pd.DataFrame(
        {
            "mode": done[PRESET].astype(str),
            "intervention": names.astype(str),
            "lr": done[LR].astype(float),
            "seed": done["seed"].astype(int),
            "diverged": done["status"] == Status.DIVERGED,
            "failed": done["outcome"] == FAILED_TO_TRAIN,
            "warned": done["warning"].notna(),
            "loss": done[METRIC].astype(float).where(done["status"] == Status.COMPLETE),
        }
    )
    return out.sort_values(["mode", "intervention", "lr", "seed"]).reset_index(drop=True)


def stability_edge(bad: pd.Series) -> dict[str, Any]:
    """The stability edge of one curve from ``bad`` (lr -> runs that failed to train or
    diverged): ``max_trained_lr``, the largest lr at which no seed failed or diverged (NaN when
    every lr has a failure); ``first_failed_lr``, the smallest lr at which one did (NaN when
    none did); ``edge``: "bracketed" when the first failure lies above a clean lr, "censored
    above" when no lr of the grid failed (the edge is past its top: extend lr up), "censored
    below" when the grid's lowest lr already failed (extend lr down)."""
    lrs = bad.sort_index()
    clean, failing = lrs[lrs == 0], lrs[lrs > 0]
    first = float(failing.index.min()) if len(failing) else math.nan
    below = clean[clean.index < first] if len(failing) else clean
    if not len(failing):
        edge = "censored above"
    elif not len(below):
        edge = "censored below"
    else:
        edge = "bracketed"
    return {
        "max_trained_lr": float(below.index.max()) if len(below) else math.nan,
        "first_failed_lr": first,
        "edge": edge,
    }


def lr_sensitivity(points: pd.DataFrame, loss0: float) -> pd.DataFrame:
    """Per (mode, intervention): best loss and its lr, the largest lr with no divergence,
    Wortsman's LR sensitivity (mean over seeds, t-interval), divergences, and the paired
    difference of the sensitivity against the same mode's baseline."""
    rows = []
    per_seed: dict[tuple[str, str], pd.Series] = {}
    for (mode, name), g in points.groupby(["mode", "intervention"], sort=True):
        capped = g.assign(capped=g["loss"].fillna(loss0).clip(upper=loss0))
        sens = capped.groupby("seed").apply(
            lambda s: float((s["capped"] - s["capped"].min()).mean()), include_groups=False
        )
        per_seed[(mode, name)] = sens
        curve = g.groupby("lr")["loss"].mean()
        bad = (g["diverged"] | g["failed"]).groupby(g["lr"]).sum()
        mean, low, high = stats.t_interval(sens.to_numpy())
        rows.append(
            {
                "mode": mode,
                "intervention": name,
                "lrs": int(g["lr"].nunique()),
                "seeds": int(g["seed"].nunique()),
                "best_loss": float(curve.min()) if curve.notna().any() else math.nan,
                "best_lr": float(curve.idxmin()) if curve.notna().any() else math.nan,
                **stability_edge(bad),
                "diverged": int(g["diverged"].sum()),
                "failed": int(g["failed"].sum()),
                "warned": int(g["warned"].sum()),
                "runs": len(g),
                "sensitivity": mean,
                "sensitivity_low": low,
                "sensitivity_high": high,
            }
        )
    table = pd.DataFrame(rows)
    deltas = []
    for row in rows:
        base = per_seed.get((row["mode"], "baseline"))
        mine = per_seed[(row["mode"], row["intervention"])]
        if base is None or row["intervention"] == "baseline":
            deltas.append((math.nan, math.nan, math.nan))
            continue
        d = (mine - base).dropna().to_numpy()
        deltas.append(stats.t_interval(d))
    if len(table):
        table[["delta_sensitivity", "delta_low", "delta_high"]] = deltas
    return table


def lr_table(results_dir: Path | str) -> pd.DataFrame:
    """:func:`lr_sensitivity` of ``lr_sensitivity`` under ``results_dir`` (empty when it has no
    runs or curves)."""
    tables = Tables(Path(results_dir))
    runs, curves = tables.get("lr_sensitivity", "runs"), tables.get("lr_sensitivity", "curves")
    if runs is None or curves is None:
        return pd.DataFrame()
    return lr_sensitivity(lr_points(runs), initial_loss(curves))
