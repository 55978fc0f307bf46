"""The regime table: each claim's paired effect in each regime of the map, with the mechanism
the telemetry shows (:mod:`ablations.studies.regime.mechanism`).

A row compares two settings of one experiment, the intervention (``a``) against the recipe
(``b``): :func:`ablations.analysis.stats.paired_difference` of the final validation MLM loss, a
minus b, paired by seed; "resolved" when the 95% interval's half-width is at most 0.01 nats (the
issue's bar). Each side is picked by its settings (:mod:`ablations.studies.selection`), so a
row holds whatever the sweep named the variant; a row whose runs are missing is left out, never
invented.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablations.analysis import stats
from ablations.analysis.verdicts import paired
from ablations.config import LR_SCALE_BIAS_CORRECTION
from ablations.core.status import Status
from ablations.studies.regime.experiments import METRIC, Tables
from ablations.studies.regime.lr import INTERVENTIONS
from ablations.studies.regime.mechanism import (
    eps_dominated_share,
    lr_mass_ratio,
    nodecay_step_ratio,
)
from ablations.studies.selection import (
    BIAS_CORRECTION,
    DECAY_POWER,
    EPS,
    EPS_MODE,
    LR,
    NODECAY_BIAS_CORRECTION,
    NODECAY_LR_SCALE,
    PRESET,
    WARMUP,
    variant_with,
)

#: The issue's bar for a resolved difference: a 95% interval half-width of at most this (nats).
RESOLVED = 0.01
#: A row's prediction for Δ = a − b (final val MLM loss), as its verdict's claim says it.
_PREDICTION = {
    "lower": "Δ < 0",
    "higher": "Δ > 0",
    "none": f"Δ within ±{RESOLVED:g}",
}
#: The lr the recipe uses (NVIDIA phase 1) and the map's reference point.
RECIPE_LR = 6.0e-3
#: The peaks of ``decay_equal_mass`` that give each degree the other's Σlr at :data:`RECIPE_LR`
#: (sweeps/regime_map.yaml): degree 1.0 peaked up, degree 0.5 peaked down.
EQUAL_MASS_PEAK = {1.0: 8.2214e-3, 0.5: 4.3788e-3}


@dataclass(frozen=True)
class Row:
    """One comparison of the regime table: the runs with settings ``a`` minus those with ``b``
    (toggle path -> value) in ``experiment``; ``lr_mass``: the Σlr ratio is part of it."""

    claim: str
    regime: str
    experiment: str
    a: Mapping[str, Any]
    b: Mapping[str, Any]
    lr_mass: bool = False
    #: (verdict id, predicted sign of a − b: "lower", "higher" or "none") where a hypothesis of
    #: sweeps/regime_map.yaml, stated before the runs, predicts this row
    verdict: tuple[str, str] | None = None


def _lr_row(claim: str, name: str, preset: str) -> Row:
    """``name``'s intervention against the recipe in ``preset`` mode at the recipe's lr (H1:
    in nvlamb mode, no effect at any lr)."""
    at = {PRESET: preset, LR: RECIPE_LR}
    recipe = {**at, **INTERVENTIONS["baseline"]}
    verdict = (f"H1.nvlamb.{name}.lr6e-3", "none") if preset == "nvlamb" else None
    a = {**at, **INTERVENTIONS[name]}
    return Row(claim, f"{preset}, lr 6e-3", "lr_sensitivity", a, recipe, verdict=verdict)


def _eps_rows(claim: str, name: str) -> list[Row]:
    """``name``'s intervention over ε (``eps_calibrated``) and without it (``eps_free``), against
    NVIDIA's clip and bias correction (H3: no effect at ε 1e-6 nor without ε; its "growing with
    the ε-dominated share" is read from the rows, not given a verdict)."""
    shares = ((1e-6, "~0%"), (1.8e-5, "BERT-large's ~0.1%"), (1e-4, "~18%"), (1e-3, "~90%"))
    on, off = INTERVENTIONS[name], INTERVENTIONS["baseline"]
    rows = [
        Row(
            claim,
            f"nvlamb, ε {eps:g} ({share} ε-dominated)",
            "eps_calibrated",
            {EPS: eps, **on},
            {EPS: eps, **off},
            verdict=(f"H3.{name}.eps1e-6", "none") if eps == 1e-6 else None,
        )
        for eps, share in shares
    ]
    free = {EPS_MODE: "atan2"}
    verdict = (f"H3.{name}.atan2", "none")
    rows.append(
        Row(
            claim,
            "nvlamb, ε-free (atan2)",
            "eps_free",
            {**free, **on},
            {**free, **off},
            False,
            verdict,
        )
    )
    return rows


def _warmup_rows(claim: str) -> list[Row]:
    """Bias correction off against on at each warmup of ``warmup_bias_correction`` (apex; H2:
    removing it hurts without warmup, does nothing with NVIDIA's 28.43%)."""
    h2 = {0.0: ("H2.warmup0", "higher"), 0.2843: ("H2.warmup28", "none")}
    return [
        Row(
            claim,
            f"apex, warmup {label}",
            "warmup_bias_correction",
            {WARMUP: warmup, BIAS_CORRECTION: False},
            {WARMUP: warmup, BIAS_CORRECTION: True},
            verdict=h2.get(warmup),
        )
        for label, warmup in (("0", 0.0), ("3%", 0.03), ("28.43%", 0.2843))
    ]


#: ``bias_correction_cause``'s arms (sweeps/regime_map.yaml, H5): bias correction everywhere and
#: in each group, and the no-decay group's lr scale (c_t, or its lr-weighted mean 2.1281).
_ARMS: dict[str, dict[str, Any]] = {
    "recipe": {BIAS_CORRECTION: True, NODECAY_BIAS_CORRECTION: True, NODECAY_LR_SCALE: 1.0},
    "off": {BIAS_CORRECTION: False, NODECAY_BIAS_CORRECTION: False, NODECAY_LR_SCALE: 1.0},
    "no_decay off": {BIAS_CORRECTION: True, NODECAY_BIAS_CORRECTION: False, NODECAY_LR_SCALE: 1.0},
    "no_decay lr×c_t": {
        BIAS_CORRECTION: True,
        NODECAY_BIAS_CORRECTION: True,
        NODECAY_LR_SCALE: LR_SCALE_BIAS_CORRECTION,
    },
    "no_decay lr×2.13": {
        BIAS_CORRECTION: True,
        NODECAY_BIAS_CORRECTION: True,
        NODECAY_LR_SCALE: 2.1281,
    },
}


def _cause_rows(claim: str) -> list[Row]:
    """H5 at lr 6e-3 and 1.2e-2 (apex): (a) bias correction off on the no-decay group alone
    against off everywhere (predicted: no difference); (b) that group's lr × c_t against (a)'s
    arm (no difference: equal at ε = 0 by construction); (c) a constant × 2.13 on that group's
    lr against the recipe (lower at 6e-3, none at 1.2e-2); and, without a verdict, the
    bias-correction effect itself and the no-decay group's share of it."""
    rows = []
    for lr, label, c in ((RECIPE_LR, "6e-3", "lower"), (1.2e-2, "1.2e-2", "none")):
        at = {PRESET: "apex", LR: lr}
        pairs = (
            ("off", "recipe", None),
            ("no_decay off", "recipe", None),
            ("no_decay off", "off", (f"H5.a.lr{label}", "none")),
            ("no_decay lr×c_t", "no_decay off", (f"H5.b.lr{label}", "none")),
            ("no_decay lr×2.13", "recipe", (f"H5.c.lr{label}", c)),
        )
        rows += [
            Row(
                claim,
                f"apex, lr {label}: {a} − {b}",
                "bias_correction_cause",
                {**at, **_ARMS[a]},
                {**at, **_ARMS[b]},
                verdict=verdict,
            )
            for a, b, verdict in pairs
        ]
    return rows


def _degree(power: float, peak: float = RECIPE_LR) -> dict[str, Any]:
    return {DECAY_POWER: power, LR: peak}


_DECAY = "decay degree 1.0 vs 0.5 (Figure 3)"

#: The regime table, claim by claim: the intervention (a) against the recipe (b).
ROWS: tuple[Row, ...] = (
    _lr_row("pre-normalization off (Figure 2)", "no_prenorm", "apex"),
    _lr_row("pre-normalization off (Figure 2)", "no_prenorm", "nvlamb"),
    *_eps_rows("pre-normalization off (Figure 2)", "no_prenorm"),
    _lr_row("bias correction off", "no_bias_correction", "apex"),
    *_warmup_rows("bias correction off"),
    *_cause_rows("bias correction off: the no-decay group's lr (H5)"),
    _lr_row("bias correction off", "no_bias_correction", "nvlamb"),
    *_eps_rows("bias correction off", "no_bias_correction"),
    # H4: degree 0.5 ahead at equal peak (1.0 − 0.5 > 0), no difference at equal Σlr
    Row(
        _DECAY,
        "nvlamb, equal peak 6e-3",
        "decay_equal_mass",
        _degree(1.0),
        _degree(0.5),
        True,
        ("H4.equal_peak", "higher"),
    ),
    Row(
        _DECAY,
        "nvlamb, equal Σlr (1.0 peaked up)",
        "decay_equal_mass",
        _degree(1.0, EQUAL_MASS_PEAK[1.0]),
        _degree(0.5),
        True,
        ("H4.equal_mass.up", "none"),
    ),
    Row(
        _DECAY,
        "nvlamb, equal Σlr (0.5 peaked down)",
        "decay_equal_mass",
        _degree(1.0),
        _degree(0.5, EQUAL_MASS_PEAK[0.5]),
        True,
        ("H4.equal_mass.down", "none"),
    ),
)


def _eps_share(tables: Tables, experiment: str, variant: str) -> float:
    layers = tables.get(experiment, "layers")
    if layers is None or "eps_dominated" not in layers or layers["eps_dominated"].isna().all():
        return math.nan
    share = eps_dominated_share(layers, tables.sizes(experiment))
    return float(share.get(variant, math.nan))


def regime_table(results_dir: Path | str, rows: Sequence[Row] = ROWS) -> pd.DataFrame:
    """The regime table: one line per :data:`ROWS` entry whose runs exist (``a`` and ``b``:
    the variants the settings picked)."""
    tables = Tables(Path(results_dir))
    out = []
    for row in rows:
        runs = tables.get(row.experiment, "runs")
        if runs is None:
            continue
        finished = runs[runs["status"].isin([Status.COMPLETE, Status.DIVERGED])]
        a, b = variant_with(finished, row.a), variant_with(finished, row.b)
        if a is None or b is None:
            continue  # not run (yet): no row rather than an empty one
        diffs = stats.paired_differences(runs, a, b, METRIC)
        mean, low, high = stats.t_interval(diffs)
        d = {"n": len(diffs), "mean": mean, "low": low, "high": high}
        verdict = None
        if row.verdict is not None:
            id, predicted = row.verdict
            claim = f"{row.claim}; {row.regime}: {_PREDICTION[predicted]}"
            verdict = paired(id, claim, diffs, predicted, resolution=RESOLVED)
        counts = runs[runs["variant"].astype(str).isin([a, b])]
        diverged = counts[counts["status"] == Status.DIVERGED]["variant"].astype(str)
        first, median = nodecay_step_ratio(tables.get(row.experiment, "layers"), a, b)
        curves = tables.get(row.experiment, "curves") if row.lr_mass else None
        half = (d["high"] - d["low"]) / 2
        out.append(
            {
                "claim": row.claim,
                "regime": row.regime,
                "experiment": row.experiment,
                "a": a,
                "b": b,
                "n": d["n"],
                "delta": d["mean"],
                "low": d["low"],
                "high": d["high"],
                "resolved": bool(np.isfinite(half) and half <= RESOLVED),
                "diverged_a": int((diverged == a).sum()),
                "diverged_b": int((diverged == b).sum()),
                "eps_dominated_b": _eps_share(tables, row.experiment, b),
                "eps_dominated_a": _eps_share(tables, row.experiment, a),
                "nodecay_step_first": first,
                "nodecay_step_median": median,
                "lr_mass_ratio": lr_mass_ratio(curves, a, b),
                "verdict": verdict,
            }
        )
    return pd.DataFrame(out)
