"""The batch-scaling study's figures (``notebooks/batch_scaling.ipynb``): steps and samples to
a target against the batch size per optimizer (log-log, with perfect linear scaling drawn from
each optimizer's smallest batch and the fitted McCandlish curve), and the measured gradient
noise scale B_simple over training. Inputs are the tables of :mod:`ablations.studies.scaling`."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import ticker

from ablations.studies import scaling


def scaling_plot(table: pd.DataFrame, study: scaling.Study, target: float) -> Any:
    """Two panels: steps to ``target`` and samples to it against the batch (log-log), one line
    per optimizer (mean over the seeds that reached it; each seed a faint dot), a dotted line of
    perfect linear scaling from the smallest batch, the fitted S = S_min (1 + B_noise/B) dashed;
    a batch where no seed reached the target is an ✕ near the top edge (one row per optimizer,
    so that they do not hide each other). The fit is drawn from three batches on: through two it
    is only the line joining them."""
    steps_col, samples_col = f"steps to {target:g}", f"samples to {target:g}"
    fig, (ax_s, ax_e) = plt.subplots(1, 2, figsize=(11, 4.2))
    column = scaling.target_column("steps", target)
    for i, (opt, g) in enumerate(table.groupby("optimizer", sort=True)):
        color = f"C{i}"
        g = g.sort_values("batch")
        ok = g[np.isfinite(g[steps_col])]
        ax_s.plot(ok["batch"], ok[steps_col], "o-", color=color, label=opt)
        ax_e.plot(ok["batch"], ok[samples_col], "o-", color=color, label=opt)
        runs = study.seeds[study.seeds["optimizer"] == opt]
        ax_s.scatter(runs[scaling.BATCH], runs[column], color=color, alpha=0.3, s=12)
        ax_e.scatter(
            runs[scaling.BATCH], runs[column] * runs[scaling.BATCH], color=color, alpha=0.3, s=12
        )
        if len(ok):
            b0, s0 = ok["batch"].iloc[0], ok[steps_col].iloc[0]
            grid = np.array(sorted(table["batch"].unique()), dtype=float)
            ax_s.plot(grid, s0 * b0 / grid, ":", color=color, alpha=0.6)
            fit = scaling.fit(ok["batch"].to_numpy(), ok[steps_col].to_numpy())
            if np.isfinite(fit.s_min) and len(ok) >= 3:
                ax_s.plot(grid, fit.s_min * (1 + fit.b_noise / grid), "--", color=color, alpha=0.5)
                ax_e.plot(grid, fit.e_min * (1 + grid / fit.b_noise), "--", color=color, alpha=0.5)
        missed = g[~np.isfinite(g[steps_col])]
        for ax in (ax_s, ax_e):
            for b in missed["batch"]:
                ax.annotate(
                    "✕",
                    (b, 1.0 - 0.04 * i),
                    xycoords=("data", "axes fraction"),
                    color=color,
                    ha="center",
                    va="top",
                )
    for ax, ylabel in ((ax_s, "steps"), (ax_e, "samples")):
        ax.set(xscale="log", yscale="log", xlabel="batch size")
        ax.set_ylabel(f"{ylabel} to val MLM loss {target:g}")
        ax.grid(True, which="both", alpha=0.3)
        batches = sorted(table["batch"].unique())
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        plain = ticker.FuncFormatter(lambda v, _: f"{v:,.0f}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)  # a decade or less: label the 2..9 ticks too
    ax_s.set_title("steps (dotted: perfect scaling; dashed: fit)")
    ax_e.set_title("samples = batch × steps")
    ax_e.legend(title="optimizer", fontsize=8)
    fig.tight_layout()
    return fig


def noise_plot(study: scaling.Study) -> Any:
    """B_simple over training (the smoothed two-batch estimate), one panel per optimizer, one
    line per batch (mean over seed runs), against the samples seen; the batch sizes of the
    study as horizontal lines, so a batch above the curve is past the noise scale."""
    c = study.curves[study.curves["metric"] == "noise/b_simple"].dropna(subset=["value"])
    c = c.merge(study.seeds[["optimizer", "trial"]], on=["optimizer", "trial"])  # seed runs
    optimizers = sorted(c["optimizer"].unique())
    fig, axes = plt.subplots(
        1, max(len(optimizers), 1), figsize=(3.8 * max(len(optimizers), 1), 3.6), sharey=True
    )
    axes = np.atleast_1d(axes)
    batches = sorted(study.seeds[scaling.BATCH].unique())
    for ax, opt in zip(axes, optimizers, strict=False):
        sub = c[c["optimizer"] == opt]
        for j, (batch, g) in enumerate(sub.groupby(scaling.BATCH, sort=True)):
            curve = g.groupby("samples")["value"].mean()
            ax.plot(curve.index, curve.values, color=f"C{j + 1}", label=f"batch {batch}")
        for b in batches:
            ax.axhline(b, color="0.8", lw=0.8, zorder=0)
        ax.set(title=opt, xlabel="samples seen", yscale="log")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("B_simple (smoothed)")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig
