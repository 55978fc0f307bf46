"""The plots shared by the notebooks, so every figure has the same look: one colour per variant
(in the experiment's order), a panel per phase, labelled axes, a legend of the variants, and the
unigram-entropy reference line on MLM-loss panels.

The notebooks in ``notebooks/`` read results through :mod:`ablations.results` and draw with the
functions here; this module also hands them where results and figures live (``REPO``,
:func:`paths`, :func:`experiments`, from :mod:`ablations.analysis.locations`). The headless
runner of the notebooks is :mod:`ablations.analysis.notebooks`; its command keeps this module's
name::

    python -m ablations.analysis.figures run --results results --out results/figures [--experiment
    NAME ...]
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ablations.analysis import stats
from ablations.analysis.facets import is_number, seed_bands, smoothed, toggle_factors
from ablations.analysis.locations import REPO, experiments, figures_root, paths
from ablations.analysis.report import report_table
from ablations.analysis.style import (
    MAX_WIDTH,
    distinct_colors,
    label,
    palette,
    save,
    setup,
    wrap_variant_ticks,
)
from ablations.core.status import Status

__all__ = [
    "REPO",
    "divergence_plot",
    "experiments",
    "figures_root",
    "final_metric_plot",
    "label",
    "loss_panels",
    "palette",
    "paths",
    "profile_plot",
    "save",
    "setup",
    "trust_ratio_panels",
    "wrap_variant_ticks",
]


def _trials(runs: pd.DataFrame | None, stage: str | None) -> set[int] | None:
    return None if runs is None else set(stats.select_runs(runs, stage)["trial"])


#: Most panel columns of a faceted figure; a wrapped one (a single metric) wraps at WRAP.
MAX_COLUMNS = 6
WRAP = 3
#: Room beside the panels for the legend (inches), inside MAX_WIDTH.
_LEGEND_WIDTH = 2.8


def loss_panels(
    curves: pd.DataFrame,
    metrics: Sequence[str] = ("train/loss", "val/mlm_loss"),
    *,
    phases: Sequence[int] | None = None,
    runs: pd.DataFrame | None = None,
    stage: str | None = "auto",
    reference: pd.DataFrame | None = None,
    x: str = "phase_step",
    smooth: int = 1,
    errorbar: Any = ("ci", 95),
    title: str | None = None,
) -> Any:
    """Curves per variant: the mean over seeds, and its 95% t-interval as a band.

    Named variants: a row per metric, a column per phase, a colour per variant. A grid of
    toggles (:func:`toggle_factors`) is faceted by the toggles' own columns: the one with most
    values across the panels (wrapped at :data:`WRAP` for a single metric and phase), the next
    as colour, the next as line style, a fourth as rows (several metrics or phases take the rows
    instead, and further toggles join the colour). Never wider than :data:`MAX_WIDTH`; the
    legend beside the panels, never over them.

    Args:
        curves: :func:`ablations.results.load_curves`.
        metrics: curve metrics, one row of panels each.
        phases: phases to show (default: every phase in the data).
        runs: with ``stage``, which trials to draw (:func:`ablations.analysis.stats.select_runs`):
            by default the seed reruns if any, so a band is seed-to-seed spread.
        reference: :func:`ablations.results.reference_lines`, drawn on MLM-loss panels.
        x: ``phase_step``, ``step``, ``samples`` or ``wall_time``.
        smooth: rolling mean over this many steps of each trial, for the (noisy, per-step)
            ``train/`` metrics only.
        errorbar: ``None`` draws the means alone; anything else the 95% t-interval over seeds
            (:func:`seed_bands`; seaborn's bootstrap took minutes at 36 variants).
    """
    keep = _trials(runs, stage)
    data = curves[curves["metric"].isin(list(metrics))]
    if keep is not None:
        data = data[data["trial"].isin(keep)]
    phases = sorted(int(p) for p in data["phase"].dropna().unique()) if phases is None else phases
    phases = list(phases) or [1]
    data = smoothed(data[data["phase"].isin(phases)], x, smooth)
    bands = seed_bands(data, x)
    names = {m: label(m) for m in metrics}
    panel = {
        (m, p): names[m] + (f", phase {p}" if len(phases) > 1 else "")
        for m in metrics
        for p in phases
    }
    keys = zip(bands["metric"], bands["phase"], strict=True)
    bands = bands.assign(panel=[panel[key] for key in keys])
    panels = list(panel.values())
    factors = toggle_factors(curves)
    if not factors.empty:
        bands, facets, colors = _grid_facets(bands, factors, panels)
    else:
        bands, facets, colors = _named_facets(bands, curves, metrics, phases)
    g = _relplot(bands, x, facets, colors)
    for (i, j, _), sub in g.facet_data():
        if len(sub):
            ax = g.facet_axis(i, j)
            _panel_decor(ax, sub, x, facets, colors, reference, bands=errorbar is not None)
    _titles(g, facets, names, x, phases)
    if title:
        g.figure.suptitle(title, fontweight="bold")
    g.tight_layout()
    return g.figure


def _named_facets(
    bands: pd.DataFrame, curves: pd.DataFrame, metrics: Sequence[str], phases: Sequence[int]
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """One colour per variant; a row per metric, a column per phase."""
    colors = palette(curves["variant"])
    facets: dict[str, Any] = {"hue": "variant", "hue_order": list(colors)}
    bands = bands.assign(row=bands["metric"].map(label), col=bands["phase"].map("phase {}".format))
    if len(metrics) > 1:
        facets.update(row="row", row_order=[label(m) for m in metrics])
    facets.update(col="col", col_order=[f"phase {p}" for p in phases])
    return bands, facets, colors


def _grid_facets(
    bands: pd.DataFrame, factors: pd.DataFrame, panels: Sequence[str]
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Facets from the toggles (most values first): columns, colour, line style, rows."""
    names = list(factors)
    values = {c: [str(v) for v in factors[c].cat.categories] for c in names}
    bands = bands.assign(**{c: bands["variant"].map(factors[c].astype(str)) for c in names})
    roles = dict(zip(("col", "hue", "style", "row"), names, strict=False))
    extra = names[4:]
    if len(panels) > 1 and "row" in roles:
        extra.insert(0, roles.pop("row"))  # the rows show the metrics
    if extra:  # further toggles join the colour: one colour per combination
        hue = " · ".join([roles["hue"], *extra])
        bands[hue] = bands[[roles["hue"], *extra]].agg(" · ".join, axis=1)
        joined = factors[[roles["hue"], *extra]].astype(str).agg(" · ".join, axis=1)
        values[hue] = list(dict.fromkeys(joined))
        roles["hue"] = hue
    if len(panels) > 1:
        roles["row"] = "panel"
        values["panel"] = list(panels)
        if len(values[roles["col"]]) > MAX_COLUMNS:  # many values: down the rows instead
            roles["row"], roles["col"] = roles["col"], "panel"
    facets: dict[str, Any] = {}
    for role, column in roles.items():
        facets[role] = column
        facets[f"{role}_order"] = values[column]
    if "row" not in roles and len(values[roles["col"]]) > WRAP:
        facets["col_wrap"] = WRAP
    hue_values = values[roles["hue"]]
    ordered = all(is_number(v) for v in hue_values)
    colors = dict(
        zip(hue_values, distinct_colors(len(hue_values), sequential=ordered), strict=True)
    )
    return bands, facets, colors


def _relplot(bands: pd.DataFrame, x: str, facets: dict[str, Any], colors: dict[str, Any]) -> Any:
    """seaborn's line relplot of the means, sized so panels and legend fit in MAX_WIDTH."""
    n_col = len(facets.get("col_order") or [None])
    n_col = min(n_col, facets.get("col_wrap") or n_col)
    width = min(4.6, (MAX_WIDTH - _LEGEND_WIDTH) / n_col)
    height = max(2.6, min(3.4, width * 0.72))
    return sns.relplot(
        data=bands,
        x=x,
        y="mean",
        kind="line",
        estimator=None,
        errorbar=None,
        palette=colors,
        height=height,
        aspect=width / height,
        facet_kws={"sharey": "row" if "row" in facets else True, "legend_out": True},
        **facets,
    )


def _panel_decor(
    ax: Any,
    sub: pd.DataFrame,
    x: str,
    facets: dict[str, Any],
    colors: dict[str, Any],
    reference: pd.DataFrame | None,
    bands: bool,
) -> None:
    """The seed bands of one panel's lines and its reference line, within the means' range
    (a two-seed t-interval of a diverging run would otherwise stretch the axis)."""
    metric, phase = str(sub["metric"].iloc[0]), int(sub["phase"].iloc[0])
    if metric.endswith("mlm_loss"):
        _reference(ax, reference, phase)
    ylim = ax.get_ylim()
    if bands:
        for _, line in sub.groupby("variant", sort=False, observed=True):
            line = line.sort_values(x)
            ax.fill_between(
                line[x],
                line["low"],
                line["high"],
                color=colors[line[facets["hue"]].iloc[0]],
                alpha=0.18,
                linewidth=0,
            )
    ax.set_ylim(ylim)


def _titles(
    g: Any, facets: dict[str, Any], names: dict[str, str], x: str, phases: Sequence[int]
) -> None:
    """Short titles (``lr = 0.006``, ``phase 1``) over the columns; a metric row's metric as its
    y label, else the metric (the toggle of a row joins its panels' titles)."""
    row, col = facets.get("row"), facets.get("col")

    def named(var: str | None, value: str) -> str:
        return value if var in ("row", "col", "panel") else f"{var} = {value}"

    metric = next(iter(names.values()))
    if row is None:
        own = col in ("col", "panel")
        g.set_titles(col_template="{col_name}" if own else "{col_var} = {col_name}")
        g.set_ylabels(metric)
    else:
        top, first = facets["row_order"][0], facets["col_order"][0]
        for (r, c), ax in g.axes_dict.items():
            if row in ("row", "panel"):  # a metric per row
                ax.set_title(named(col, c) if r == top else "")
                ax.set_ylabel(r if c == first else "")
            else:
                ax.set_title(f"{named(row, r)}, {named(col, c)}")
                ax.set_ylabel(metric if c == first else "")
    xlabel = label(x)
    if x == "phase_step" and len(phases) == 1:
        xlabel = f"{xlabel} (phase {phases[0]})"
    if len(g.axes.flat) > 2:  # once under the figure: a dozen copies collide side by side
        g.set_xlabels("")
        g.figure.supxlabel(xlabel)
    else:
        g.set_xlabels(xlabel)
    for ax in g.axes.flat:  # long metric names on two lines, beside short panels
        ax.set_ylabel(textwrap.fill(ax.get_ylabel(), 24))


def _reference(ax: Any, reference: pd.DataFrame | None, phase: int) -> None:
    if reference is None or reference.empty:
        return
    for _, line in reference.iterrows():
        if pd.isna(line["phase"]) or int(line["phase"]) == phase:
            ax.axhline(line["value"], color="0.3", ls="--", lw=1, label=line["label"])


def _one_legend(axes: Sequence[Any], on: Any) -> None:
    """One legend for a figure, on ``on``: every variant and reference line of ``axes``."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(text, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if handles:  # beside the figure's panels: 36 variants would cover the data inside them
        on.figure.legend(
            list(handles.values()),
            list(handles),
            title="variant",
            fontsize="small",
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            ncols=1 + (len(handles) - 1) // 20,
        )


def final_metric_plot(
    runs: pd.DataFrame, summary: pd.DataFrame, metric: str, *, baseline: str | None = None
) -> Any:
    """A row per variant (the experiment's order, so a grid's toggles stay grouped): left, each
    complete run's final ``metric`` (dots) and the mean with its 95% t-interval (black); right,
    the difference from ``baseline`` (default: the first variant) paired by seed with its
    t-interval, as :func:`ablations.analysis.report.report_table` gives it. Variant names run
    along the y axis, where they never collide."""
    colors = palette(runs["variant"])
    order = [v for v in colors if v in summary.index.astype(str)]
    done = runs[runs["status"] == Status.COMPLETE]
    done = done.assign(variant=lambda d: d["variant"].astype(str))
    height = 1.6 + 0.3 * max(len(order), 2)
    fig, (ax, dax) = plt.subplots(
        1, 2, figsize=(11, height), sharey=True, gridspec_kw={"width_ratios": [3, 2]}
    )
    name = label(metric.removeprefix("final_").replace("_", "/", 1))
    if order:
        ys = np.arange(len(order))
        where = dict(zip(order, ys, strict=True))
        done = done[done["variant"].isin(order)]
        jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(done))
        ax.scatter(
            done[metric],
            done["variant"].map(where) + jitter,
            c=[colors[v] for v in done["variant"]],
            s=18,
            alpha=0.8,
        )
        s = summary.copy()
        s.index = s.index.astype(str)
        s = s.loc[order]
        _ranges(ax, ys, s["mean"], s["ci_low"], s["ci_high"], "mean, 95% t-interval")
        table = report_table(runs, baseline, metric)
        t = table.loc[order]
        dax.axvline(0, color="0.4", lw=1)
        _ranges(dax, ys, t["delta"], t["delta_low"], t["delta_high"], "paired difference")
        base = textwrap.fill(str(table.attrs["baseline"]).replace(",", ", "), 40)
        dax.set_title(f"minus {base}\n(paired by seed)", fontsize="medium")
        ax.set_yticks(ys, order, fontsize="small")
        ax.set_ylim(len(order) - 0.5, -0.5)  # the first variant on top
    ax.set(xlabel=f"final {name}", ylabel="")
    ax.set_title(
        "each complete run (dots);\nmean, 95% t-interval over seeds (black)", fontsize="medium"
    )
    dax.set(xlabel=f"difference in final {name}")
    fig.tight_layout()
    return fig


def _ranges(
    ax: Any, ys: np.ndarray, mean: pd.Series, low: pd.Series, high: pd.Series, text: str
) -> None:
    """Means (black dots) with their intervals as horizontal bars; a missing bound draws none."""
    mean, low, high = (np.asarray(v, dtype=float) for v in (mean, low, high))
    err = np.nan_to_num(np.vstack([mean - low, high - mean]))
    ax.errorbar(mean, ys, xerr=err, fmt="o", color="k", capsize=3, ms=4, label=text)


def divergence_plot(summary: pd.DataFrame) -> Any:
    """Divergence rate per variant (diverged / finished runs), a horizontal bar each annotated
    with the counts; variant names along the y axis."""
    s = summary.copy()
    s.index = s.index.astype(str)
    colors = palette(list(s.index))
    fig, ax = plt.subplots(figsize=(8, 1.4 + 0.3 * max(len(s), 2)))
    if s.empty:
        ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
        s = pd.DataFrame(columns=["divergence_rate", "complete", "diverged"])
    ys = np.arange(len(s))
    bars = ax.barh(ys, s["divergence_rate"].fillna(0), color=[colors[v] for v in s.index])
    for bar, (_, row) in zip(bars, s.iterrows(), strict=True):
        finished = row["complete"] + row["diverged"]
        ax.annotate(
            f" {row['diverged']:.0f}/{finished:.0f}",
            (bar.get_width(), bar.get_y() + bar.get_height() / 2),
            ha="left",
            va="center",
            fontsize="small",
        )
    ax.set_yticks(ys, list(s.index), fontsize="small")
    ax.set_ylim(len(s) - 0.5, -0.5)
    ax.set(xlabel="divergence rate (diverged / finished)", xlim=(0, 1.15))
    ax.set_title("diverged runs per variant")
    fig.tight_layout()
    return fig


def trust_ratio_panels(
    layers: pd.DataFrame,
    *,
    runs: pd.DataFrame | None = None,
    stage: str | None = "auto",
    weights_only: bool = True,
) -> Any:
    """Per-layer trust-ratio telemetry: top row, the median trust ratio of each block of the
    model (embeddings, encoder layers, heads; median over the run's logged steps, tensors and
    seeds) per variant; bottom row, the trust ratio over training (median over tensors, band:
    interquartile range). One column per phase; log scale."""
    keep = _trials(runs, stage)
    data = layers if keep is None else layers[layers["trial"].isin(keep)]
    if weights_only:
        data = data[data["tensor"].astype(str).str.endswith(".weight")]
        data = data[~data["tensor"].astype(str).str.contains("LayerNorm")]
    data = data[np.isfinite(data["trust_ratio"]) & (data["trust_ratio"] > 0)]
    data = data.assign(variant=data["variant"].astype(str), block=data["block"].astype(str))
    phases = sorted(int(p) for p in data["phase"].dropna().unique()) or [1]
    colors = palette(layers["variant"])
    order = [v for v in colors if v in set(data["variant"])]
    fig, axes = plt.subplots(2, len(phases), figsize=(6 * len(phases), 7.2), squeeze=False)
    blocks = list(data.sort_values("index")["block"].drop_duplicates())
    for col, phase in enumerate(phases):
        d = data[data["phase"] == phase]
        top, bottom = axes[0][col], axes[1][col]
        if len(d):
            sns.pointplot(
                data=d,
                x="block",
                y="trust_ratio",
                hue="variant",
                order=blocks,
                hue_order=order,
                palette=colors,
                estimator="median",
                errorbar=None,
                dodge=0.3,
                ax=top,
            )
            sns.lineplot(
                data=d,
                x="phase_step",
                y="trust_ratio",
                hue="variant",
                hue_order=order,
                palette=colors,
                estimator="median",
                errorbar=("pi", 50),
                ax=bottom,
            )
            top.set_yscale("log")
            bottom.set_yscale("log")
        top.tick_params(axis="x", labelrotation=45)
        top.set(xlabel="block of the model", ylabel="trust ratio (median)", title=f"phase {phase}")
        bottom.set(xlabel=f"optimizer step (phase {phase})", ylabel="trust ratio (median, IQR)")
    _one_legend(axes.flat, on=axes[0][-1])
    fig.tight_layout()
    return fig


def profile_plot(profile: pd.DataFrame, scores: pd.Series | None = None) -> Any:
    """Performance profiles ``rho(tau)`` per variant (AlgoPerf); the legend gives each score."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    colors = palette(profile["variant"]) if "variant" in profile else {}
    for name, group in profile.groupby("variant", observed=True, sort=False):
        text = str(name)
        if scores is not None and name in scores.index:
            text += f" (score {scores[name]:.2f})"
        ax.step(group["tau"], group["rho"], where="post", label=text, color=colors.get(str(name)))
    ax.set(
        xlabel="τ: time to target / fastest variant's",
        ylabel="fraction of problems within τ",
        ylim=(-0.02, 1.05),
        title="performance profile",
    )
    n = len(ax.get_legend_handles_labels()[1])
    ax.legend(  # beside the axes, never over the curves
        title="variant",
        fontsize="small",
        loc="center left",
        bbox_to_anchor=(1.02, 0.5),
        ncols=1 + (n - 1) // 20 if n else 1,
    )
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    # ``python -m ablations.analysis.figures run``: the runner's command under its older name
    # (the Makefile and README call it so); imported here only, so that a notebook importing
    # the plots does not load papermill.
    from ablations.analysis.notebooks import main

    sys.exit(main())
