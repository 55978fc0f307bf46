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

The study (``sweeps/batch_scaling.yaml``) has one experiment per optimizer, ``batch_<name>``;
each (optimizer, batch) has its tuning points ranked by steps to the lowest target and its best
point rerun with seeds. The tables read the seed runs::

    python -m ablations.studies.scaling steps RESULTS     # steps and samples to each target per
    batch
    python -m ablations.studies.scaling fit RESULTS       # S_min, B_noise, E_min, B_crit per
    optimizer
    python -m ablations.studies.scaling limits RESULTS    # limit and B_crit at every target
    python -m ablations.studies.scaling noise RESULTS     # measured B_simple per optimizer and
    batch

Model-free next to the fit: the *linear-scaling limit*, the largest batch whose mean steps to
the target stay within 20% of perfect scaling from the smallest batch (S(B)·B ≤ 1.2·S(B0)·B0),
every seed having reached the target at it and at every smaller batch.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ablations import results as res
from ablations.core.errors import fail
from ablations.results.tables import target_column

#: The study's experiments: ``batch_<optimizer>`` under one results folder.
PREFIX = "batch_"
BATCH = "phases.0.global_batch"

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


def _finite_mean(values: np.ndarray) -> float:
    """The mean of the finite values (a resample may hold only unreached runs: NaN)."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else math.nan


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
    means = np.array([_finite_mean(g) for g in groups])
    estimate = fit(sizes, means)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(draws):
        resampled = [_finite_mean(rng.choice(g, len(g))) for g in groups]
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


# --- the study's tables -------------------------------------------------------------------------


@dataclass(frozen=True)
class Study:
    """The seed runs of every ``batch_<optimizer>`` experiment under a folder (``optimizer``:
    the name after the prefix), the finished tuning runs, the validation and noise curves, the
    targets, and every tuning point that ran (``tried``: pruned ones too, which lost)."""

    seeds: pd.DataFrame
    tuning: pd.DataFrame
    curves: pd.DataFrame
    targets: tuple[float, ...]
    tried: pd.DataFrame = field(default_factory=pd.DataFrame)


def load(results_dir: Path | str, prefix: str = PREFIX) -> Study:
    """Read the study's experiments, ``<prefix><optimizer>`` (collected if stale).

    Two designs: a tuning stage then seed reruns of its best point (``sweeps/batch_scaling.yaml``:
    ``seeds`` are the reruns, ``tried`` the tuning points); or an lr grid per batch with no
    tuning stage (``sweeps/batch_resolved.yaml``, extended by ``extend``): per (optimizer,
    batch) the best lr is the one whose runs reach the lowest target in the fewest mean steps
    (:func:`best_grid_runs`), its runs are ``seeds``, and every lr run is ``tried``.

    Raises:
        ValueError: no such experiment with runs, or experiments with different targets.
    """
    base = Path(results_dir)
    runs, curves, targets = [], [], set()
    for exp_dir in sorted(base.glob(f"{prefix}*")):
        if not (exp_dir / "sweep.json").exists():
            continue
        name = exp_dir.name[len(prefix) :]
        r = res.load_runs(exp_dir)
        if r.empty:
            continue
        targets.add(tuple(res.load_spec(exp_dir)["experiment"].get("targets") or ()))
        runs.append(r.assign(optimizer=name))
        c = res.load_curves(exp_dir)
        keep = c["metric"].isin(["val/mlm_loss", *NOISE_METRICS])
        curves.append(c[keep].assign(optimizer=name))
    if not runs:
        raise ValueError(
            f"{base}: no {prefix}* experiment with runs "
            "(sweeps/batch_scaling.yaml: batch_*; sweeps/batch_resolved.yaml: resolved_*)"
        )
    if len(targets) != 1:
        raise ValueError(f"{base}: the {prefix}* experiments declare different targets {targets}")
    allr = pd.concat(runs, ignore_index=True)
    allr[BATCH] = allr[BATCH].astype(int)
    done = allr[allr["status"].isin(["complete", "diverged"])]
    ran = allr[allr["status"].isin(["complete", "diverged", "pruned"])]
    ordered = tuple(sorted(targets.pop(), reverse=True))
    if (ran["stage"] == "tune").any():
        seeds, tuning, tried = (
            done[done["stage"] == "seed"],
            done[done["stage"] == "tune"],
            ran[ran["stage"] == "tune"],
        )
    else:  # an lr grid per batch: the best lr's runs are the seeds
        seeds, tuning, tried = best_grid_runs(done, min(ordered)), done, ran
    return Study(
        seeds=seeds.reset_index(drop=True),
        tuning=tuning.reset_index(drop=True),
        curves=pd.concat(curves, ignore_index=True),
        targets=ordered,
        tried=tried.reset_index(drop=True),
    )


def best_grid_runs(runs: pd.DataFrame, target: float, lr: str = "phases.0.lr") -> pd.DataFrame:
    """Per (optimizer, batch), the runs at the best lr of a grid: every run reached ``target``
    and the mean steps to it is the fewest; lrs where a run missed it rank after, by their mean
    lowest validation loss; ties go to the smaller lr (the order ``extend`` ranks by)."""
    steps = target_column("steps", target)
    keep = []
    for _, g in runs.groupby(["optimizer", BATCH], sort=True):

        def key(value: float, g: pd.DataFrame = g) -> tuple:
            at = g[np.isclose(g[lr].astype(float), value)]
            missed = bool(at[steps].isna().any())
            score = at["best_val_mlm_loss"] if missed else at[steps]
            return (missed, float(score.mean()), value)

        best = min(sorted(g[lr].astype(float).unique()), key=key)
        keep.append(g[np.isclose(g[lr].astype(float), best)])
    return pd.concat(keep) if keep else runs.iloc[:0]


def steps_table(study: Study) -> pd.DataFrame:
    """Per optimizer and batch: the best tuning point (lr, warmup), the lowest validation MLM
    loss its seed runs saw (mean over seeds: how close a run that misses the targets came; a run
    stopped at the lowest target is at or just below it), and per target the seeds that reached
    it, the mean steps and the mean samples to it (over the seeds that did)."""
    rows = []
    for (opt, batch), g in study.seeds.groupby(["optimizer", BATCH], sort=True):
        row = {
            "optimizer": opt,
            "batch": int(batch),
            "lr": float(g["phases.0.lr"].iloc[0]),
            # a grid design fixes the warmup in the workload: no column
            **({"warmup": float(g["phases.0.warmup"].iloc[0])} if "phases.0.warmup" in g else {}),
            "seeds": len(g),
            "lowest loss": float(g["best_val_mlm_loss"].mean()),
        }
        for t in study.targets:
            steps = g[target_column("steps", t)]
            row[f"reached {t:g}"] = f"{int(steps.notna().sum())}/{len(g)}"
            row[f"steps to {t:g}"] = float(steps.mean())
            row[f"samples to {t:g}"] = float(g[target_column("samples", t)].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def linear_scaling_limit(table: pd.DataFrame, target: float) -> pd.Series:
    """Per optimizer, the largest batch within 20% of perfect scaling from its smallest batch
    (:data:`OVERHEAD`; every seed reaching ``target`` there and at every smaller batch); NaN
    when the smallest batch itself does not reach it."""
    out = {}
    for opt, g in table.groupby("optimizer", sort=True):
        g = g.sort_values("batch")
        steps, reached = g[f"steps to {target:g}"], g[f"reached {target:g}"]
        all_reached = reached.map(lambda s: s.split("/")[0] == s.split("/")[1])
        limit = math.nan
        base = None
        for batch, s, ok in zip(g["batch"], steps, all_reached, strict=True):
            if not ok or not np.isfinite(s):
                break
            base = base if base is not None else s * batch
            if s * batch > (1 + OVERHEAD) * base:
                break
            limit = float(batch)
        out[opt] = limit
    return pd.Series(out, name="linear-scaling limit")


def fit_table(study: Study, target: float, draws: int = 1000) -> pd.DataFrame:
    """Per optimizer: S_min, B_noise, E_min and the critical batch fitted to the seed runs'
    steps to ``target`` (:func:`bootstrap`, 95% intervals), the batches in the fit, and the
    model-free linear-scaling limit."""
    column = target_column("steps", target)
    limits = linear_scaling_limit(steps_table(study), target)
    rows = []
    for opt, g in study.seeds.groupby("optimizer", sort=True):
        reached = g.groupby(BATCH)[column].apply(lambda s: s.notna().any())
        table = bootstrap(g, column, batch=BATCH, draws=draws)
        row: dict[str, object] = {"optimizer": opt, "batches fitted": int(reached.sum())}
        for q, label in (
            ("s_min", "S_min (steps)"),
            ("b_noise", "B_noise"),
            ("e_min", "E_min (samples)"),
            ("b_crit", "B_crit (20%)"),
        ):
            est, low, high = table.loc[q, ["estimate", "low", "high"]]
            row[label] = _interval(est, low, high)
        row["linear-scaling limit"] = limits.get(opt, math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def limits_table(study: Study, draws: int = 1000) -> pd.DataFrame:
    """Per optimizer, at every target: the linear-scaling limit and the fitted critical batch
    (:func:`fit_table`'s, each target fitted on its own). Whether an ordering of the optimizers
    holds at one target only (a single slow batch can move a limit) or at all of them."""
    rows: dict[str, dict[str, object]] = {}
    for t in study.targets:
        fits = fit_table(study, t, draws).set_index("optimizer")
        for opt in fits.index:
            row = rows.setdefault(opt, {"optimizer": opt})
            row[f"limit at {t:g}"] = fits.loc[opt, "linear-scaling limit"]
            row[f"B_crit at {t:g}"] = fits.loc[opt, "B_crit (20%)"]
    return pd.DataFrame(list(rows.values()))


#: The noise-scale curves a study reads (:mod:`ablations.run.noise`): the smoothed B_simple and
#: each step's two-batch estimates of tr Σ and |G|².
NOISE_METRICS = ("noise/b_simple", "noise/trace", "noise/grad_sq")


def pooled_b_simple(trace: np.ndarray, grad_sq: np.ndarray) -> float:
    """B_simple as a ratio of sums, Σ tr Σ̂ / Σ |Ĝ|², over the steps where both estimates are
    finite: each sum is an unbiased estimate of its expectation times the window's length, so
    the ratio is consistent (a ratio of two EMAs weights the steps unequally, and a |Ĝ|² at or
    below zero, common at small batch, leaves the EMA's ratio to its earlier steps). NaN when
    the summed |Ĝ|² is not positive."""
    ok = np.isfinite(trace) & np.isfinite(grad_sq)
    denominator = float(grad_sq[ok].sum())
    return float(trace[ok].sum()) / denominator if denominator > 0 else math.nan


def noise_table(study: Study, late: float = 0.5) -> pd.DataFrame:
    """Per optimizer and batch, mean over seed runs: B_simple (the smoothed noise scale logged
    every step) at the first logged step and as the median over the last ``late`` fraction of
    each run's steps; beside it, over the same window, the ratio of sums
    (:func:`pooled_b_simple`) and the share of steps whose |Ĝ|² estimate is at or below zero
    (over the whole run). Batches with one micro-batch measure nothing."""
    c = study.curves[study.curves["metric"].isin(NOISE_METRICS)]
    trials = study.seeds.set_index(["optimizer", "trial"])[BATCH]
    rows = []
    for (opt, trial), g in c.groupby(["optimizer", "trial"], sort=True):
        if (opt, trial) not in trials.index:
            continue
        wide = g.pivot_table(index="step", columns="metric", values="value", aggfunc="last")
        if "noise/b_simple" not in wide or wide["noise/b_simple"].dropna().empty:
            continue
        smoothed = wide["noise/b_simple"].dropna()
        start = (1 - late) * smoothed.index.max()  # the window: the logged B_simple's last steps
        tail = wide[(wide.index >= start) & (wide.index <= smoothed.index.max())]
        trace = tail.get("noise/trace", pd.Series(dtype=float)).to_numpy(dtype=float)
        grad = tail.get("noise/grad_sq", pd.Series(dtype=float)).to_numpy(dtype=float)
        every = wide.get("noise/grad_sq", pd.Series(dtype=float)).dropna()
        rows.append(
            {
                "optimizer": opt,
                "batch": int(trials[(opt, trial)]),
                "first": float(smoothed.iloc[0]),
                "late": float(smoothed[smoothed.index >= start].median()),
                "pooled": pooled_b_simple(trace, grad) if len(trace) else math.nan,
                "nonpositive": float((every <= 0).mean()) if len(every) else math.nan,
            }
        )
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    return (
        df.groupby(["optimizer", "batch"], sort=True)
        .agg(
            first=("first", "mean"),
            late=("late", "mean"),
            pooled=("pooled", "mean"),
            nonpositive=("nonpositive", "mean"),
            runs=("late", "size"),
        )
        .rename(
            columns={
                "first": "B_simple at start",
                "late": f"B_simple, last {late:.0%}",
                "pooled": f"Σtr/Σ|G|², last {late:.0%}",
                "nonpositive": "steps with |G|² ≤ 0",
            }
        )
        .reset_index()
    )


def markdown(table: pd.DataFrame) -> str:
    """A table of this module as Markdown: samples as whole numbers, the rest to 4 digits."""
    shown = table.copy()
    for c in shown.columns:
        if str(c).startswith("samples to"):
            shown[c] = shown[c].map(lambda x: f"{x:,.0f}" if np.isfinite(x) else "–")
    return shown.to_markdown(index=False, floatfmt=".4g")


def _num(x: float) -> str:
    """3 significant digits, without exponents for counts of steps and samples."""
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def _interval(estimate: float, low: float, high: float) -> str:
    if not np.isfinite(estimate):
        return "–"
    if not (np.isfinite(low) and np.isfinite(high)):
        return _num(estimate)
    return f"{_num(estimate)} [{_num(low)}, {_num(high)}]"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ablations.studies.scaling", description=__doc__
    )
    parser.add_argument("command", choices=("steps", "fit", "limits", "noise"))
    parser.add_argument("results", type=Path, help="the folder of the batch_* experiments")
    parser.add_argument("--prefix", default=PREFIX, help=f"the experiments' prefix ({PREFIX})")
    parser.add_argument("--target", type=float, help="fit: the target (default: the lowest)")
    parser.add_argument("--format", choices=("md", "csv"), default="md")
    args = parser.parse_args(argv)
    try:
        study = load(args.results, args.prefix)
        if args.command == "steps":
            table = steps_table(study)
        elif args.command == "fit":
            target = args.target if args.target is not None else min(study.targets)
            if target not in study.targets:
                raise ValueError(f"--target {target:g}: expected one of {list(study.targets)}")
            table = fit_table(study, target)
        elif args.command == "limits":
            table = limits_table(study)
        else:
            table = noise_table(study)
    except (OSError, ValueError, KeyError) as e:
        return fail(e)
    if table.empty:
        return fail(ValueError(f"{args.results}: nothing to tabulate yet (no finished seed runs)"))
    if args.format == "csv":
        print(table.to_csv(index=False), end="")
    else:
        print(markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
