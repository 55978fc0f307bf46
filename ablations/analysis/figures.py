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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ablations.analysis import stats
from ablations.analysis.locations import REPO, experiments, figures_root, paths
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

_LABELS = {
    "train/loss": "training loss (MLM + NSP, nats)",
    "train/mlm_loss": "training MLM loss (nats)",
    "val/loss": "validation loss (MLM + NSP, nats)",
    "val/mlm_loss": "validation MLM loss (nats)",
    "val/nsp_loss": "validation NSP loss (nats)",
    "val/mlm_acc": "validation MLM accuracy",
    "optim/grad_norm": "global gradient norm",
    "optim/lr": "learning rate",
    "phase_step": "optimizer step",
    "step": "optimizer step (run)",
    "samples": "samples seen",
    "wall_time": "training time (s)",
}


def setup() -> None:
    """The shared seaborn theme (white grid, notebook context)."""
    sns.set_theme(style="whitegrid", context="notebook")


def label(name: str) -> str:
    """An axis label for a metric or coordinate name."""
    return _LABELS.get(name, name)


def palette(variants: Sequence[str] | pd.Series) -> dict[str, Any]:
    """One colour per variant, in the variants' (categorical) order: stable across figures."""
    names = _order(variants)
    return dict(zip(names, sns.color_palette(n_colors=max(len(names), 1)), strict=False))


def _order(variants: Sequence[str] | pd.Series) -> list[str]:
    if isinstance(variants, pd.Series) and isinstance(variants.dtype, pd.CategoricalDtype):
        present = set(variants.dropna().astype(str))
        return [str(c) for c in variants.cat.categories if str(c) in present]
    return list(dict.fromkeys(str(v) for v in variants))


def _trials(runs: pd.DataFrame | None, stage: str | None) -> set[int] | None:
    return None if runs is None else set(stats.select_runs(runs, stage)["trial"])


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
    """Curves per variant, a row per metric and a column per phase; bands over seeds.

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
        errorbar: seaborn's (``("ci", 95)``: mean and a 95% bootstrap band over trials).
    """
    keep = _trials(runs, stage)
    data = curves[curves["metric"].astype(str).isin(metrics)]
    if keep is not None:
        data = data[data["trial"].isin(keep)]
    phases = sorted(int(p) for p in data["phase"].dropna().unique()) if phases is None else phases
    phases = list(phases) or [1]
    colors = palette(curves["variant"])
    fig, axes = plt.subplots(
        len(metrics), len(phases), figsize=(5.2 * len(phases), 3.6 * len(metrics)), squeeze=False
    )
    for row, metric in enumerate(metrics):
        for col, phase in enumerate(phases):
            ax = axes[row][col]
            d = data[(data["metric"].astype(str) == metric) & (data["phase"] == phase)]
            d = _smoothed(d, x, smooth if metric.startswith("train/") else 1)
            order = [v for v in colors if v in set(d["variant"].astype(str))]
            if len(d):
                sns.lineplot(
                    data=d.assign(variant=d["variant"].astype(str)),
                    x=x,
                    y="value",
                    hue="variant",
                    hue_order=order,
                    palette=colors,
                    errorbar=errorbar,
                    seed=0,
                    ax=ax,
                )
            else:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            if metric.endswith("mlm_loss"):
                _reference(ax, reference, phase)
            xlabel = f"{label(x)} (phase {phase})" if x == "phase_step" else label(x)
            ax.set(xlabel=xlabel, ylabel=label(metric), title=f"phase {phase}")
    _one_legend(axes.flat, on=axes[0][-1])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _smoothed(d: pd.DataFrame, x: str, window: int) -> pd.DataFrame:
    if window <= 1 or d.empty:
        return d
    d = d.sort_values(["trial", x])
    rolled = d.groupby("trial")["value"].transform(
        lambda v: v.rolling(window, min_periods=1).mean()
    )
    return d.assign(value=rolled)


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
    if handles:
        on.legend(list(handles.values()), list(handles), title="variant", fontsize="small")


def wrap_variant_ticks(ax: Any) -> None:
    """Grid variant names (``prenorm=none,eps=1e-06``) one toggle per line, so that a dozen
    variants stay readable side by side."""
    labels = [t.get_text() for t in ax.get_xticklabels()]
    if any("," in name for name in labels):
        ax.set_xticks(ax.get_xticks(), [n.replace(",", "\n") for n in labels], fontsize="small")


def final_metric_plot(runs: pd.DataFrame, summary: pd.DataFrame, metric: str) -> Any:
    """Each complete run's final ``metric`` (dots) and the mean with its 95% t-interval."""
    colors = palette(runs["variant"])
    order = [v for v in colors if v in summary.index.astype(str)]
    done = runs[runs["status"] == Status.COMPLETE]
    done = done.assign(variant=lambda d: d["variant"].astype(str))
    fig, ax = plt.subplots(figsize=(1.4 * max(len(order), 2) + 2.5, 3.8))
    if order:
        sns.stripplot(
            data=done, x="variant", y=metric, hue="variant", order=order, palette=colors, ax=ax
        )
        s = summary.copy()
        s.index = s.index.astype(str)
        s = s.loc[order]
        xs = np.arange(len(order))
        err = np.vstack([s["mean"] - s["ci_low"], s["ci_high"] - s["mean"]])
        ax.errorbar(xs + 0.25, s["mean"], yerr=np.nan_to_num(err), fmt="o", color="k", capsize=4)
        ax.plot([], [], "ko", label="mean, 95% t-interval")
        ax.legend(fontsize="small")
    name = label(metric.removeprefix("final_").replace("_", "/", 1))
    ax.set(xlabel="variant", ylabel=f"final {name}", title="final value of each complete run")
    wrap_variant_ticks(ax)
    fig.tight_layout()
    return fig


def divergence_plot(summary: pd.DataFrame) -> Any:
    """Divergence rate per variant (diverged / finished runs), annotated with the counts."""
    s = summary.copy()
    s.index = s.index.astype(str)
    colors = palette(list(s.index))
    fig, ax = plt.subplots(figsize=(1.4 * max(len(s), 2) + 2.5, 3.4))
    if s.empty:
        ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
        s = pd.DataFrame(columns=["divergence_rate", "complete", "diverged"])
    bars = ax.bar(s.index, s["divergence_rate"].fillna(0), color=[colors[v] for v in s.index])
    for bar, (_, row) in zip(bars, s.iterrows(), strict=True):
        finished = row["complete"] + row["diverged"]
        ax.annotate(
            f"{row['diverged']:.0f}/{finished:.0f}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
        )
    ax.set(xlabel="variant", ylabel="divergence rate (diverged / finished)", ylim=(0, 1.1))
    ax.set_title("diverged runs per variant")
    wrap_variant_ticks(ax)
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
    ax.legend(title="variant", fontsize="small")
    fig.tight_layout()
    return fig


def save(fig: Any, figures_dir: Path | str, name: str) -> Path:
    """Write ``fig`` as ``<figures_dir>/<name>.png`` (folder created) and return the path."""
    out = Path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


if __name__ == "__main__":
    # ``python -m ablations.analysis.figures run``: the runner's command under its older name
    # (the Makefile and README call it so); imported here only, so that a notebook importing
    # the plots does not load papermill.
    from ablations.analysis.notebooks import main

    sys.exit(main())
