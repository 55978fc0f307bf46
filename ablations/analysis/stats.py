"""Statistics for comparing variants over seeds: t-intervals, divergence rates, AlgoPerf-style
time-to-target and performance profiles. Works on the tables of :mod:`ablations.results`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.stats

from ablations.core.status import Status
from ablations.results.tables import time_to_target as time_to_target  # computed with the tables


def select_runs(runs: pd.DataFrame, stage: str | None = "auto") -> pd.DataFrame:
    """The runs to compare variants on: ``stage="auto"`` takes the seed reruns if there are any
    (the tuning trials differ in their hyperparameters, so their spread is not seed noise),
    otherwise every run; ``None`` every run; any other value that stage."""
    if stage == "auto":
        seeded = runs["stage"].astype("str") == "seed"
        return runs[seeded] if seeded.any() else runs
    if stage is None:
        return runs
    return runs[runs["stage"].astype("str") == stage]


def t_interval(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float]:
    """``(mean, low, high)``: Student-t confidence interval of the mean (NaN bounds if n < 2)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan
    half = float(scipy.stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


def difference(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """``(mean(a) - mean(b), low, high, p)``: Welch's t-interval of the difference of means and
    its two-sided p-value (unequal variances; seeds of two variants are independent samples).
    NaN where either side has fewer than 2 values."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or len(y) < 2:
        delta = float(x.mean() - y.mean()) if len(x) and len(y) else math.nan
        return delta, math.nan, math.nan, math.nan
    test = scipy.stats.ttest_ind(x, y, equal_var=False)
    ci = test.confidence_interval(confidence)
    return float(x.mean() - y.mean()), float(ci.low), float(ci.high), float(test.pvalue)


def paired_differences(
    runs: pd.DataFrame,
    a: str,
    b: str,
    metric: str = "final_val_mlm_loss",
    *,
    stage: str | None = "auto",
) -> np.ndarray:
    """Variant ``a`` minus variant ``b`` per seed, over the seeds where both completed (the
    variants of an experiment share seeds, hence initial weights and data order, so seed noise
    cancels in the difference; a divergence has no finite value and leaves its seed out)."""
    chosen = select_runs(runs, stage)
    done = chosen[chosen["status"] == Status.COMPLETE]
    table = done.pivot_table(index="seed", columns="variant", values=metric, observed=True)
    if a not in table or b not in table:
        return np.array([], dtype=float)
    return (table[a] - table[b]).dropna().to_numpy(dtype=float)


def paired_difference(
    runs: pd.DataFrame,
    a: str,
    b: str,
    metric: str = "final_val_mlm_loss",
    *,
    stage: str | None = "auto",
    confidence: float = 0.95,
) -> dict[str, float]:
    """:func:`paired_differences` summarized: ``{"n", "mean", "low", "high"}``, the Student-t
    interval of the per-seed differences."""
    d = paired_differences(runs, a, b, metric, stage=stage)
    mean, low, high = t_interval(d, confidence)
    return {"n": len(d), "mean": mean, "low": low, "high": high}


def summarize(
    runs: pd.DataFrame,
    metric: str = "final_val_mlm_loss",
    *,
    by: str = "variant",
    stage: str | None = "auto",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per variant: run counts by status, divergence rate, and ``metric``'s mean with a
    Student-t interval over the complete runs of :func:`select_runs` (``stage``: the seeds).

    Columns: runs, complete, diverged, pruned, failed (failed or interrupted), unfinished
    (running, waiting, missing), divergence_rate, n (values in the interval), mean, std,
    ci_low, ci_high, median, min, max.

    The counts and ``divergence_rate`` = diverged / (complete + diverged) are over *every* run of
    the variant, tuning trials included (a fair budget counts them); runs that failed for the
    machine's reasons, or have not finished, say nothing about the optimizer and are left out.
    """
    selected = set(select_runs(runs, stage)["trial"])
    rows = []
    for key, group in runs.groupby(by, observed=True, sort=True):
        counts = group["status"].value_counts()
        complete = int(counts.get(Status.COMPLETE, 0))
        diverged = int(counts.get(Status.DIVERGED, 0))
        failed = int(counts.get(Status.FAILED, 0) + counts.get(Status.INTERRUPTED, 0))
        pruned = int(counts.get(Status.PRUNED, 0))
        done = group[(group["status"] == Status.COMPLETE) & group["trial"].isin(selected)]
        values = done[metric].astype(float)
        values = values[np.isfinite(values)]
        mean, low, high = t_interval(values.to_numpy(), confidence)
        finished = complete + diverged
        rows.append(
            {
                by: key,
                "runs": len(group),
                "complete": complete,
                "diverged": diverged,
                "pruned": pruned,
                "failed": failed,
                "unfinished": len(group) - finished - pruned - failed,
                "divergence_rate": diverged / finished if finished else math.nan,
                "n": len(values),
                "mean": mean,
                "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                "ci_low": low,
                "ci_high": high,
                "median": float(values.median()) if len(values) else math.nan,
                "min": float(values.min()) if len(values) else math.nan,
                "max": float(values.max()) if len(values) else math.nan,
            }
        )
    return pd.DataFrame(rows).set_index(by) if rows else pd.DataFrame()


def default_target(
    runs: pd.DataFrame, metric: str = "best_val_mlm_loss", stage: str | None = "auto"
) -> float:
    """A target every variant reaches in a typical run: the largest per-variant median of
    ``metric`` over complete runs (NaN if none)."""
    runs = select_runs(runs, stage)
    done = runs[runs["status"] == Status.COMPLETE]
    medians = done.groupby("variant", observed=True)[metric].median()
    return float(medians.max()) if len(medians) else math.nan


def performance_ratios(
    times: pd.DataFrame,
    *,
    solver: str = "variant",
    problem: str = "seed",
    time: str = "time",
    r_max: float = 4.0,
) -> pd.DataFrame:
    """AlgoPerf's ratios ``r = t / min_solver t`` per problem; a solver's time on a problem is
    its fastest trial there. Ratios above ``r_max`` (or never reaching the target) are +inf.

    Returns: a table indexed by problem with one column per solver.
    """
    fastest = times.groupby([problem, solver], observed=True)[time].min().unstack(solver)
    best = fastest.min(axis=1)
    ratios = fastest.div(best.where(np.isfinite(best)), axis=0)
    ratios = ratios.where(ratios <= r_max, math.inf).fillna(math.inf)
    return ratios


def performance_profile(
    times: pd.DataFrame,
    *,
    solver: str = "variant",
    problem: str = "seed",
    time: str = "time",
    r_max: float = 4.0,
    taus: Sequence[float] | np.ndarray | None = None,
) -> pd.DataFrame:
    """AlgoPerf's performance profile: ``rho_s(tau)`` = the fraction of problems on which solver
    ``s`` is within ``tau`` times the fastest solver, for ``tau`` in [1, r_max].

    Returns: long table ``solver, tau, rho``; ``profile_scores`` integrates it.
    """
    ratios = performance_ratios(times, solver=solver, problem=problem, time=time, r_max=r_max)
    taus = np.linspace(1.0, r_max, 301) if taus is None else np.asarray(taus, dtype=float)
    rows = [
        {solver: s, "tau": float(tau), "rho": float((ratios[s].to_numpy() <= tau).mean())}
        for s in ratios.columns
        for tau in taus
    ]
    return pd.DataFrame(rows, columns=[solver, "tau", "rho"])


def profile_scores(
    times: pd.DataFrame,
    *,
    solver: str = "variant",
    problem: str = "seed",
    time: str = "time",
    r_max: float = 4.0,
) -> pd.Series:
    """AlgoPerf's score ``B_s = 1/(r_max - 1) * integral_1^r_max rho_s(tau) dtau`` in [0, 1],
    exactly: each problem with ratio ``r <= r_max`` contributes ``(r_max - r) / (r_max - 1)``."""
    ratios = performance_ratios(times, solver=solver, problem=problem, time=time, r_max=r_max)
    area = (r_max - ratios.clip(lower=1.0)).clip(lower=0.0).where(np.isfinite(ratios), 0.0)
    return (area.mean(axis=0) / (r_max - 1.0)).rename("score")


def phase_finals(curves: pd.DataFrame, metric: str = "val/mlm_loss") -> pd.DataFrame:
    """The last evaluation of ``metric`` in each phase of each trial: trial, variant, seed,
    stage, phase, step, value (whether the phase finished is for the caller to check in runs)."""
    evals = curves[curves["metric"].astype("str") == metric]
    evals = evals.sort_values(["trial", "phase", "step"])
    last = evals.groupby(["trial", "phase"], observed=True).tail(1)
    return last[["trial", "variant", "seed", "stage", "phase", "step", "value"]].reset_index(
        drop=True
    )
