"""How an experiment's variants lay out on a figure, and the bands drawn there.

:func:`toggle_factors` finds the toggles that make the variants a grid (the settings columns of
the curves or runs tables that vary between variants), so a figure can facet by them as seaborn
does (``col=``, ``hue=``, ``style=``); :func:`seed_bands` gives the mean over seeds and its
Student-t interval per step, the harness's own interval, in one grouped computation instead of
seaborn's bootstrap. Pure pandas: :mod:`ablations.analysis.figures` draws with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

__all__ = ["is_number", "seed_bands", "smoothed", "toggle_factors"]
#: The settings columns of curves and runs sit between these two
#: (:func:`ablations.results.tables.curve_columns`, :func:`~ablations.results.tables.run_columns`).
_FIRST, _AFTER = "variant", "seed"
#: Columns a faceted frame uses itself: a toggle whose short name is one keeps its full path.
_OWN = {"variant", "metric", "phase", "phase_step", "n", "mean", "low", "high", "panel", "row"}


def toggle_factors(frame: pd.DataFrame) -> pd.DataFrame:
    """The toggles that lay an experiment's variants out as a grid: one row per variant, one
    ordered categorical column per toggle (values as text, sorted), the toggle with most values
    first (ties in the table's order); empty for named variants, drawn a colour each.

    A toggle is a settings column of ``frame`` (curves or runs) that is constant within a
    variant, differs between variants, does not name each variant on its own, and is not
    determined by another (of two equivalent columns the first stays). Toggles that are not
    crossed with each other, as the named variants ``baseline``, ``no_prenorm``,
    ``no_bias_correction`` set two of them, are one toggle: ``named variant`` with those names
    (the part of the variant names before the grid's ``,key=value``) or the values joined. A
    grid needs three or more variants and two toggles that together tell every one apart."""
    cols = list(frame.columns)
    if _FIRST not in cols or _AFTER not in cols:
        return pd.DataFrame()
    settings = cols[cols.index(_FIRST) + 1 : cols.index(_AFTER)]
    raw = frame[[_FIRST, *settings]].drop_duplicates().astype({_FIRST: str})
    if raw.duplicated(_FIRST).any():
        return pd.DataFrame()  # a setting varies within a variant: tuned, not a toggle
    raw = raw.set_index(_FIRST)
    table = raw.astype(str)  # NaN and None compare as one value each
    n = len(table)
    candidates = [c for c in settings if 1 < table[c].nunique() < n]

    def determines(a: str, b: str) -> bool:
        return bool(table.groupby(a)[b].nunique().max() == 1)

    kept = [
        c
        for i, c in enumerate(candidates)
        if not any(
            determines(o, c) and (not determines(c, o) or j < i)
            for j, o in enumerate(candidates)
            if o != c
        )
    ]
    groups = _uncrossed(table, kept)
    if n < 3 or len(groups) < 2 or len(table[kept].drop_duplicates()) != n:
        return pd.DataFrame()
    short = _short(kept)
    out = {}
    for group in groups:
        if len(group) == 1:
            name, order = short[group[0]], sorted(raw[group[0]].dropna().unique(), key=_sort_key)
            out[name] = pd.Categorical(raw[group[0]].map(_text), [_text(v) for v in order])
        else:
            name, values = _joined(table[group], [short[c] for c in group])
            out[name] = pd.Categorical(values, list(dict.fromkeys(values)))
    factors = pd.DataFrame(out, index=table.index)
    return factors[sorted(factors, key=lambda c: -len(factors[c].cat.categories))]


def _uncrossed(table: pd.DataFrame, columns: list[str]) -> list[list[str]]:
    """``columns`` grouped so that any two not fully crossed (some pair of their values never
    occurs together) share a group."""
    groups: list[list[str]] = []
    for c in columns:
        joined = [g for g in groups if any(not _crossed(table, c, o) for o in g)]
        merged = [o for g in joined for o in g] + [c]
        groups = [g for g in groups if g not in joined] + [merged]
    return sorted(groups, key=lambda g: columns.index(g[0]))


def _crossed(table: pd.DataFrame, a: str, b: str) -> bool:
    pairs = len(table[[a, b]].drop_duplicates())
    return pairs == table[a].nunique() * table[b].nunique()


def _joined(table: pd.DataFrame, names: list[str]) -> tuple[str, list[str]]:
    """One toggle from several uncrossed ones: the variants' own names where those tell the
    combinations apart (``baseline,preset=apex`` -> ``baseline``), else the values joined."""
    combos = table.astype(str).agg(" · ".join, axis=1)
    heads = pd.Series([v.split(",", 1)[0] for v in table.index], index=table.index)
    one_to_one = (heads.groupby(combos).nunique() == 1).all()
    if one_to_one and (combos.groupby(heads).nunique() == 1).all():
        return "named variant", list(heads)
    return " · ".join(names), list(combos)


def _sort_key(value: Any) -> tuple[int, Any]:
    number = isinstance(value, int | float | np.number) and not isinstance(value, bool)
    return (0, float(value)) if number else (1, str(value))


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float | np.floating) else str(value)


def _short(columns: Sequence[str]) -> dict[str, str]:
    """A toggle column's name on a figure: its last dotted part (``optimizer.preset`` ->
    ``preset``), the whole path where two would read the same or a frame column has it."""
    short = {c: c.rsplit(".", 1)[-1] for c in columns}
    names = list(short.values())
    return {c: s if names.count(s) == 1 and s not in _OWN else c for c, s in short.items()}


def seed_bands(
    curves: pd.DataFrame, x: str = "phase_step", confidence: float = 0.95
) -> pd.DataFrame:
    """The mean over seeds and its Student-t interval at every (variant, metric, phase, step):
    :func:`ablations.analysis.stats.t_interval`, vectorized over the whole table; never a
    bootstrap. Columns: variant, metric, phase, phase_step, ``x``, n, mean, low, high (NaN
    bounds where fewer than two seeds reached the step). Seeds are aligned on ``phase_step``;
    another ``x`` (samples, wall time) is its mean over the seeds."""
    keys = ["variant", "metric", "phase", "phase_step"]
    d = curves.assign(variant=curves["variant"].astype(str), metric=curves["metric"].astype(str))
    d = d[np.isfinite(d["value"])]  # a diverged step has no value to average
    grouped = d.groupby(keys, sort=True, observed=True)
    out = grouped["value"].agg(["count", "mean", "std"]).reset_index()
    out = out.rename(columns={"count": "n"})
    if x != "phase_step":
        out[x] = grouped[x].mean().to_numpy()
    n = out["n"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = scipy.stats.t.ppf(0.5 + confidence / 2, np.where(n > 1, n - 1, np.nan))
        half = t * out["std"].to_numpy() / np.sqrt(n)
    return out.assign(low=out["mean"] - half, high=out["mean"] + half).drop(columns="std")


def smoothed(d: pd.DataFrame, x: str, window: int) -> pd.DataFrame:
    """A rolling mean of ``window`` steps over each trial's ``train/`` metrics (per phase)."""
    train = d["metric"].astype(str).str.startswith("train/")
    if window <= 1 or not train.any():
        return d
    d = d.sort_values(["trial", "metric", "phase", x])
    train = d["metric"].astype(str).str.startswith("train/")
    rolled = (
        d.groupby(["trial", "metric", "phase"], observed=True)["value"]
        .rolling(window, min_periods=1)
        .mean()
        .reset_index(level=[0, 1, 2], drop=True)
    )
    return d.assign(value=d["value"].where(~train, rolled))


def is_number(text: str) -> bool:
    """Whether a toggle value (as text) reads as a number: an ordered toggle, drawn as a ramp."""
    try:
        float(text)
    except ValueError:
        return False
    return True
