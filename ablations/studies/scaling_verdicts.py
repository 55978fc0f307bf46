"""The batch-scaling question as a verdict (issue 20): does a LAMB variant keep linear scaling to a
larger batch than AdamW (You et al. 2019), reported under every reasonable reading of the data.

B_noise (:func:`ablations.studies.scaling.fit`: S = S_min (1 + B_noise/B)) orders the optimizers,
larger first (a larger B_noise keeps scaling further). The ordering is computed under:

* ``absolute``: least squares on S (the large steps counts of the small batches dominate);
* ``relative``: least squares on S/S_fit − 1 (each batch counts alike: weights 1/S, the
  first-order form of a fit in log space);
* ``drop <B>``: the absolute fit without batch B, for every batch whose removal leaves 3;
* ``model-free``: the ratio S·B / (S₀·B₀) at the largest batch both optimizers reached, B₀ the
  smallest batch (1 is perfect linear scaling; the smaller ratio scales further).

Verdict (:func:`ablations.analysis.verdicts.ordering`): ``depends on the fit`` when these
orderings disagree. ``censored`` first, when the best tuning point of either optimizer at some
batch is the largest or smallest lr tried there: that batch's steps are an upper bound, not its
tuned value, so no ordering built on it is stated. ``unresolved`` when every reading agrees but
the seeds do not: the paired bootstrap interval (:func:`paired_difference`, 95%) of
B_noise(LAMB) − B_noise(AdamW) under the absolute or the relative fit holds 0. All on the seed
runs' mean steps to the fit table's target (the lowest loss by default); a batch where a seed
missed it is left out of that optimizer's fits, and the evidence says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ablations.analysis.verdicts import Answer, Verdict, ordering
from ablations.core.errors import fail
from ablations.results.tables import target_column
from ablations.studies.scaling import BATCH, PREFIX, Study, fit, load

LR = "phases.0.lr"
#: The claim's pairs: a LAMB variant, predicted to scale further than AdamW.
PAIRS = (("nvlamb", "adamw"), ("apex", "adamw"))


def mean_steps(study: Study, optimizer: str, target: float) -> pd.Series:
    """Batch -> mean steps to ``target`` over the seeds that reached it, for batches where
    every seed did (an unreached seed makes the mean a lower bound)."""
    steps = _seed_steps(study, optimizer, target)
    return pd.Series({batch: s.mean() for batch, s in steps.items()}, dtype=float)


def relative_fit_b_noise(batches: np.ndarray, steps: np.ndarray) -> float:
    """B_noise from the fit of S = a + b/B weighted by 1/S (relative residuals); NaN when the
    intercept is not positive or fewer than two batches."""
    if len(np.unique(batches)) < 2:
        return math.nan
    slope, intercept = np.polyfit(1.0 / batches, steps, 1, w=1.0 / steps)
    return float(slope / intercept) if intercept > 0 else math.nan


def fits(study: Study, optimizers: Sequence[str], target: float) -> dict[str, dict[str, float]]:
    """Fit name -> optimizer -> B_noise (the model-free entry: minus the ratio, so that larger
    is further in every entry), for the fits defined for every one of ``optimizers``."""
    steps = {o: mean_steps(study, o, target) for o in optimizers}
    out: dict[str, dict[str, float]] = {"absolute": {}, "relative": {}}
    for o, s in steps.items():
        b, v = s.index.to_numpy(dtype=float), s.to_numpy(dtype=float)
        out["absolute"][o] = fit(b, v).b_noise
        out["relative"][o] = relative_fit_b_noise(b, v)
    common = sorted(set.intersection(*(set(s.index) for s in steps.values())))
    for drop in common:
        if len(common) - 1 < 3:
            break
        out[f"drop {drop}"] = {
            o: fit(s.drop(drop).index.to_numpy(dtype=float), s.drop(drop).to_numpy()).b_noise
            for o, s in steps.items()
        }
    if len(common) >= 2:
        b0, top = common[0], common[-1]
        out[f"model-free at {top}"] = {
            o: -float(s[top] * top / (s[b0] * b0)) for o, s in steps.items()
        }
    return {k: v for k, v in out.items() if all(np.isfinite(x) for x in v.values())}


def _seed_steps(study: Study, optimizer: str, target: float) -> dict[int, pd.Series]:
    """Batch -> the seed runs' steps to ``target`` indexed by seed, for batches where every
    seed reached it."""
    g = study.seeds[study.seeds["optimizer"] == optimizer]
    column = target_column("steps", target)
    out = {}
    for batch, runs in g.groupby(BATCH, sort=True):
        steps = runs.set_index("seed")[column].astype(float).sort_index()
        if steps.notna().all():
            out[int(batch)] = steps
    return out


def paired_difference(
    study: Study,
    optimizers: tuple[str, str],
    target: float,
    relative: bool = False,
    draws: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """B_noise(a) − B_noise(b) for ``optimizers = (a, b)`` under the absolute (or the
    ``relative``) fit, on the batches both reached with every seed, with a percentile interval.

    Each draw resamples every batch's seed runs with replacement, *jointly*: where both
    optimizers ran the same seeds at a batch (the harness's seeds fix data order, masking and
    initialization, so seed k of one is the paired twin of seed k of the other) a draw takes the
    same seeds for both; elsewhere each optimizer's seeds are drawn on their own. Returns
    (estimate, low, high); NaN when fewer than two common batches."""
    target_steps = {o: _seed_steps(study, o, target) for o in optimizers}
    a, b = (target_steps[o] for o in optimizers)
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return math.nan, math.nan, math.nan
    batches = np.array(common, dtype=float)

    def b_noise(steps: np.ndarray) -> float:
        return relative_fit_b_noise(batches, steps) if relative else fit(batches, steps).b_noise

    def difference(pick_a: list[np.ndarray], pick_b: list[np.ndarray]) -> float:
        means_a = np.array([a[B].to_numpy()[i].mean() for B, i in zip(common, pick_a, strict=True)])
        means_b = np.array([b[B].to_numpy()[i].mean() for B, i in zip(common, pick_b, strict=True)])
        return b_noise(means_a) - b_noise(means_b)

    every = [np.arange(len(a[B])) for B in common]
    estimate = difference(every, [np.arange(len(b[B])) for B in common])
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(draws):
        pick_a = [rng.integers(0, len(a[B]), len(a[B])) for B in common]
        pick_b = [
            i if a[B].index.equals(b[B].index) else rng.integers(0, len(b[B]), len(b[B]))
            for B, i in zip(common, pick_a, strict=True)
        ]
        samples.append(difference(pick_a, pick_b))
    values = np.array(samples)
    values = values[np.isfinite(values)]
    if not len(values):
        return estimate, math.nan, math.nan
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return estimate, float(low), float(high)


def unreached(study: Study, optimizer: str, target: float) -> list[str]:
    """``<optimizer> misses <target> at batch B (k/n seeds reach it; lowest loss L)`` for every
    batch left out of its fits because a seed run did not reach ``target``."""
    g = study.seeds[study.seeds["optimizer"] == optimizer]
    column = target_column("steps", target)
    out = []
    for batch, runs in g.groupby(BATCH, sort=True):
        reached = int(runs[column].notna().sum())
        if reached < len(runs):
            out.append(
                f"{optimizer} misses {target:g} at batch {int(batch)} ({reached}/{len(runs)} "
                f"seeds reach it; lowest loss {runs['best_val_mlm_loss'].mean():.3f}): "
                "left out of its fits"
            )
    return out


def _signed(estimate: float, low: float, high: float) -> str:
    return f"{estimate:+.1f} [{low:+.1f}, {high:+.1f}]"


def edge_points(study: Study) -> list[str]:
    """``optimizer at batch B: lr X is the largest (smallest) tried`` for every (optimizer,
    batch) whose seed runs use the largest or smallest lr of its tuning points."""
    out = []
    for (opt, batch), seeds in study.seeds.groupby(["optimizer", BATCH], sort=True):
        if study.tried.empty:
            continue
        tried = study.tried[(study.tried["optimizer"] == opt) & (study.tried[BATCH] == batch)][LR]
        if tried.nunique() < 2:
            continue
        best = float(seeds[LR].iloc[0])
        if np.isclose(best, tried.max()):
            out.append(f"{opt} at batch {batch}: lr {best:.3g} is the largest tried (extend up)")
        elif np.isclose(best, tried.min()):
            out.append(f"{opt} at batch {batch}: lr {best:.3g} is the smallest tried (extend down)")
    return out


def verdict_name(prefix: str = PREFIX) -> str:
    """The verdicts' id head for the experiments ``<prefix>*``: ``scaling`` for the first design
    (``batch_*``), ``scaling_<name>`` for another (``resolved_*``: ``scaling_resolved``), so two
    designs of one question give verdicts with ids of their own."""
    return "scaling" if prefix == PREFIX else f"scaling_{prefix.strip('_')}"


def verdicts(study: Study, target: float | None = None, name: str = "scaling") -> list[Verdict]:
    """The claim per pair of :data:`PAIRS` present in ``study``; ids ``<name>.<lamb>_vs_adamw``
    (``name``: :func:`verdict_name`)."""
    target = min(study.targets) if target is None else target
    present = set(study.seeds["optimizer"])
    edges = edge_points(study)
    out = []
    for lamb, adam in PAIRS:
        if not {lamb, adam} <= present:
            continue
        id = f"{name}.{lamb}_vs_adamw"
        claim = f"{lamb} keeps linear scaling to a larger batch than {adam} (You et al. 2019)"
        v = ordering(id, claim, fits(study, (lamb, adam), target), [lamb, adam])
        mine = [e for e in edges if e.startswith((f"{lamb} ", f"{adam} "))]
        if mine:
            v = Verdict(
                id,
                claim,
                Answer.CENSORED,
                f"best tuning point at a range edge: {'; '.join(mine)}; the fits: {v.evidence}",
                extend="lr past each edge named",
            )
        else:
            v = _with_seeds(study, v, (lamb, adam), target)
        out.append(v)
    return out


def _with_seeds(study: Study, v: Verdict, pair: tuple[str, str], target: float) -> Verdict:
    """``v`` (an ordering of ``pair``) with the paired intervals of the B_noise difference in
    its evidence and the batches left out of a fit; ``unresolved`` where the readings agree
    but an interval holds 0."""
    intervals = {
        name: paired_difference(study, pair, target, relative=name == "relative")
        for name in ("absolute", "relative")
    }
    shown = ", ".join(f"{name} {_signed(*iv)}" for name, iv in intervals.items())
    notes = [f"paired B_noise({pair[0]}) − B_noise({pair[1]}), 95%: {shown}"]
    notes += [line for o in pair for line in unreached(study, o, target)]
    evidence = f"{v.evidence}; {'; '.join(notes)}"
    holds_zero = [n for n, (_, lo, hi) in intervals.items() if not (lo > 0 or hi < 0)]
    if v.answer in (Answer.SUPPORTED, Answer.REFUTED) and holds_zero:
        return dataclasses.replace(
            v,
            answer=Answer.UNRESOLVED,
            evidence=f"{evidence}; the seeds do not resolve the {' and '.join(holds_zero)} "
            "difference",
            extend="more seeds at each batch's best lr",
        )
    return dataclasses.replace(v, evidence=evidence)


def verdict_table(study: Study, target: float | None = None, name: str = "scaling") -> pd.DataFrame:
    """:func:`verdicts` as a table: the verdict as a citable ``id: answer`` span, the
    ordering under each fit and what to run next."""
    return pd.DataFrame(
        [
            {
                "claim": v.claim,
                "verdict": f"`{v.id}: {v.answer}`",
                "evidence": v.evidence,
                "next": v.extend or "–",
            }
            for v in verdicts(study, target, name)
        ]
    )


def fit_table(study: Study, target: float | None = None) -> pd.DataFrame:
    """What the verdicts order, per optimizer of :data:`PAIRS`: B_noise under each fit of
    :func:`fits` and the model-free ratio S·B / (S₀·B₀) (1: perfect linear scaling), at the
    batches every one of them reached ``target`` at (the lowest target by default)."""
    target = min(study.targets) if target is None else target
    present = set(study.seeds["optimizer"])
    optimizers = sorted({o for pair in PAIRS for o in pair} & present)
    table = fits(study, optimizers, target)
    rows = []
    for o in optimizers:
        row: dict[str, object] = {"optimizer": o, "target": target}
        for name, values in table.items():
            if name.startswith("model-free"):
                row[f"S·B/(S₀·B₀) {name.removeprefix('model-free ')}"] = -values[o]
            else:
                row[f"B_noise, {name}"] = values[o]
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ablations.studies.scaling_verdicts RESULTS [--target T] [--fits]``: the
    verdict table (Markdown) of the batch-scaling study under ``RESULTS``, or with ``--fits``
    the numbers it orders (:func:`fit_table`); one ``error:`` line on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m ablations.studies.scaling_verdicts", description=__doc__
    )
    parser.add_argument("results", type=Path, help="the folder of the batch_* experiments")
    parser.add_argument("--prefix", default=PREFIX, help=f"the experiments' prefix ({PREFIX})")
    parser.add_argument("--target", type=float, help="the target (default: the lowest)")
    parser.add_argument("--fits", action="store_true", help="B_noise under each fit instead")
    args = parser.parse_args(argv)
    try:
        study = load(args.results, args.prefix)
        if args.target is not None and args.target not in study.targets:
            raise ValueError(f"--target {args.target:g}: expected one of {list(study.targets)}")
        if args.fits:
            table = fit_table(study, args.target)
        else:
            table = verdict_table(study, args.target, verdict_name(args.prefix))
    except (OSError, ValueError, KeyError) as e:
        return fail(e)
    if table.empty:
        return fail(ValueError(f"{args.results}: no pair of {PAIRS} has seed runs"))
    print(table.to_markdown(index=False, floatfmt=".3g"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
