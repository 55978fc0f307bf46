"""The regime map's figures (``notebooks/regime_map.ipynb``): LR sensitivity, the paired effects
as a forest plot faceted by claim, and the mechanism panels. Inputs are the tables of
:mod:`ablations.studies.regime`; every panel is a small multiple, so a dozen variants never share a
legend laid over the data."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from ablations.analysis import figures
from ablations.studies.regime.effects import RESOLVED
from ablations.studies.selection import BIAS_CORRECTION, EPS, PRENORM

_STYLE = {"baseline": ("C0", "o"), "no_prenorm": ("C1", "s"), "no_bias_correction": ("C3", "^")}


def lr_sensitivity_plot(points: pd.DataFrame, loss0: float) -> Any:
    """Final validation MLM loss against peak lr (log x), one panel per mode, one line per
    intervention (mean over seeds, each seed a faint dot); a diverged seed is an ✕ on the top
    edge (the y range is that of the finite losses, so that small differences stay visible; the
    LR sensitivity counts a divergence as ℓ0)."""
    modes = sorted(points["mode"].unique())
    fig, axes = plt.subplots(1, len(modes), figsize=(5.2 * len(modes), 4), sharey=True)
    axes = np.atleast_1d(axes)
    finite = points["loss"].dropna()
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, loss0)
    pad = 0.08 * (high - low) + 0.01
    top = min(high + 2 * pad, loss0)
    for ax, mode in zip(axes, modes, strict=True):
        sub = points[points["mode"] == mode]
        for name, g in sub.groupby("intervention", sort=True):
            color, marker = _STYLE.get(name, ("C7", "D"))
            curve = g.groupby("lr")["loss"].mean()
            ax.plot(curve.index, curve.values, marker=marker, color=color, label=name)
            ok = g[~g["diverged"]]
            ax.scatter(ok["lr"], ok["loss"], color=color, alpha=0.3, s=12)
            bad = g[g["diverged"]]
            if len(bad):
                ax.scatter(
                    bad["lr"],
                    [top] * len(bad),
                    color=color,
                    marker="x",
                    s=70,
                    clip_on=False,
                    zorder=5,
                )
        ax.set_xscale("log")
        lrs = sorted(sub["lr"].unique())
        ax.set_xticks(lrs, [f"{x:g}" for x in lrs], rotation=30)
        ax.minorticks_off()
        ax.set_ylim(low - pad, top)
        ax.set(title=f"{mode} mode", xlabel="peak learning rate (phase 1)")
        ax.legend(fontsize="small", loc="upper left")
    axes[0].set_ylabel("final validation MLM loss (nats)\n✕ on the top edge: diverged")
    fig.tight_layout()
    return fig


def forest_plot(table: pd.DataFrame) -> Any:
    """Paired effects (intervention − recipe) with 95% intervals, one panel per claim, one row
    per regime; the ±0.01-nat band is the resolution the map asks for."""
    claims = list(dict.fromkeys(table["claim"]))
    heights = [max(len(table[table["claim"] == c]), 1) for c in claims]
    fig, axes = plt.subplots(
        len(claims),
        1,
        figsize=(8, 0.45 * sum(heights) + 1.2 * len(claims)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, claim in zip(axes[:, 0], claims, strict=True):
        sub = table[table["claim"] == claim].reset_index(drop=True)
        y = np.arange(len(sub))[::-1]
        for yi, (_, r) in zip(y, sub.iterrows(), strict=True):
            color = "C3" if r["resolved"] and r["low"] > 0 else "C0" if r["resolved"] else "grey"
            if np.isfinite(r["low"]):
                ax.plot([r["low"], r["high"]], [yi, yi], color=color, lw=2)
            ax.plot(r["delta"], yi, "o", color=color)
        ax.axvline(0, color="black", lw=0.8)
        ax.axvspan(-RESOLVED, RESOLVED, color="grey", alpha=0.12)
        ax.set_yticks(y, sub["regime"])
        ax.xaxis.set_major_locator(MaxNLocator(5))  # wide intervals: few ticks, none collide
        ax.set_title(claim, loc="left", fontsize="medium")
    axes[-1, 0].set_xlabel("Δ final validation MLM loss, intervention − recipe (nats, 95% CI)")
    fig.tight_layout()
    return fig


def eps_dominance_plot(layers: pd.DataFrame, sizes: dict[str, int], runs: pd.DataFrame) -> Any:
    """The share of the model's elements with √v̂ ≤ ε over training (each tensor's fraction
    weighted by its ``sizes``, mean over seeds), one panel per ε of ``eps_calibrated``, one
    line per setting of pre-normalization and bias correction, read from ``runs`` (their
    setting columns, by trial)."""
    df = layers.dropna(subset=["eps_dominated"])
    settings = runs.set_index("trial")
    eps = df["trial"].map(settings[EPS].astype(float)).map(lambda e: f"{e:g}")
    toggles = df["trial"].map(
        settings[PRENORM].astype(str)
        + ", bias correction "
        + settings[BIAS_CORRECTION].map({True: "on", False: "off"})
    )
    toggles = "prenorm " + toggles
    df = df.assign(eps=eps, toggles=toggles)
    df["w"] = df["tensor"].astype(str).map(sizes).astype(float)
    df["wf"] = df["w"] * df["eps_dominated"]
    sums = df.groupby(["eps", "toggles", "trial", "step"])[["wf", "w"]].sum()
    per_run = (sums["wf"] / sums["w"]).rename("eps_dominated").reset_index()
    mean = per_run.groupby(["eps", "toggles", "step"])["eps_dominated"].mean().reset_index()
    eps_values = sorted(mean["eps"].unique(), key=float)
    fig, axes = plt.subplots(1, len(eps_values), figsize=(3.6 * len(eps_values), 3.4), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, value in zip(axes, eps_values, strict=True):
        for label, g in mean[mean["eps"] == value].groupby("toggles"):
            ax.plot(g["step"], 100 * g["eps_dominated"], label=label)
        ax.set(title=f"ε = {value}", xlabel="step")
    axes[0].set_ylabel("elements with √v̂ ≤ ε (% of the model)")
    axes[-1].legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def nodecay_update_plot(layers: pd.DataFrame, variants: dict[str, str]) -> Any:
    """The applied ‖Δw‖ of the bias and LayerNorm tensors over training (relative update × ‖w‖,
    mean over them and seeds), one line per labelled variant: the real step where no trust
    ratio acts (apex mode)."""
    df = layers[layers["tensor"].str.contains("bias|LayerNorm")]
    df = df.assign(
        variant=df["variant"].astype(str), step_norm=df["relative_update"] * df["weight_norm"]
    )
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for variant, label in variants.items():
        g = df[df["variant"] == variant].groupby("step")["step_norm"].mean()
        if len(g):
            ax.plot(g.index, g.values, marker=".", label=label)
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="applied ‖Δw‖ of bias and LayerNorm tensors (mean)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def decay_plot(curves: pd.DataFrame) -> Any:
    """Validation MLM loss and lr over training for the decay-degree variants (mean over seeds)."""
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(11, 4))
    df = curves.assign(variant=curves["variant"].astype(str))
    lowest = np.inf
    for variant, g in df.groupby("variant", sort=True):
        val = g[g["metric"] == "val/mlm_loss"].groupby("step")["value"].mean()
        lr = g[g["metric"] == "optim/lr"].groupby("step")["value"].mean()
        ax_loss.plot(val.index, val.values, label=variant)
        ax_lr.plot(lr.index, lr.values, label=variant)
        lowest = min(lowest, float(val.min()))
    ax_loss.set(xlabel="step", ylabel=figures.label("val/mlm_loss"))
    # the end of training, where the degrees differ: from the lowest mean to the 30% quantile
    top = float(df[df["metric"] == "val/mlm_loss"]["value"].quantile(0.3))
    if np.isfinite(lowest) and lowest < top:
        ax_loss.set_ylim(lowest - 0.05 * (top - lowest), top)
    ax_lr.set(xlabel="step", ylabel=figures.label("optim/lr"))
    ax_lr.legend(fontsize="small")
    fig.tight_layout()
    return fig


__all__ = [
    "decay_plot",
    "eps_dominance_plot",
    "forest_plot",
    "lr_sensitivity_plot",
    "nodecay_update_plot",
]
