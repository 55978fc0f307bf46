"""A design that extends itself (``extend:`` of an experiment, :class:`ExtendConfig`): after each
round, points beyond a grid edge where the optimum or the first failing value lies, and seeds
for comparisons whose interval is wider than the target (issue 20, item 3).

The rule (:func:`decide`) is a pure function of finished trials: deterministic given the
results, blind to running ones (a curve or a pair is decided only when none of its slots is
pending), and bounded (``max_steps`` values beyond each end, ``max_seeds`` seeds). What it adds
is queued as ordinary slots (:func:`ablations.sweep.slots.queue_slots`) whose trials carry the
reason in ``user_attrs["added_by"]``; the study's ``extensions`` attribute lists every decision in
order. Added slots resume, retry and collect like every other one. Every value it may add is a
candidate variant known when the experiment is resolved (:attr:`ablations.sweep.plan.Plan.
candidates`), so a restarted sweep takes the same decisions from the same results.

Definitions, per *curve* (the variants that differ only in ``axis``) over its *active* values
(the file's, and those already added):

* a value's score: the mean over its seeds of the ranked objective (the trial's value: the
  final objective, or the first-target rank); a diverged seed scores inf;
* ``optimum``: the value of lowest score (ties: the smaller value); at the largest active value
  the next value up is added, at the smallest the next value down; a curve with no finite
  score (every run diverged or was given up) has no optimum;
* ``failure``: a value *fails* when one of its seeds diverged or failed to train
  (:func:`ablations.results.outcomes.finished_outcome`: above the data's reference line, or
  risen from its best); with no failing value the next value up is added (the edge lies above);
  when the smallest value fails, the next value down (the edge lies below);
* ``best_seeds``: when a curve adds no value (its optimum and edge bracketed, or the budget
  spent), its best value gets seeds ``0 .. best_seeds-1``;
* seeds (``against``): for a variant ``n,g`` and ``against,g`` (the same grid point), the paired
  differences over the seeds both finished with finite values; when there are at least two and
  the 95% t-interval's half-width exceeds ``half_width``, seed ``k`` (the next) is added to
  both, while ``k < max_seeds``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from ablations.core.status import Status
from ablations.results.outcomes import DIVERGED, TRAINED, finished_outcome
from ablations.sweep.plan import Plan
from ablations.sweep.slots import Slot

#: The study's user attribute listing every decision: ``{"slot", "reason"}`` in order.
RECORD = "extensions"


@dataclass(frozen=True)
class Result:
    """One finished trial as the rule sees it."""

    variant: str
    seed: int
    value: float  # the ranked objective; inf: diverged
    outcome: str  # outcomes.TRAINED, FAILED_TO_TRAIN or DIVERGED


def results_of(trials: Sequence[FrozenTrial], plan: Plan, line: float) -> list[Result]:
    """The finished seed trials of ``trials`` (complete, or failed by diverging), with their
    outcomes against the reference ``line`` (NaN: none; the objective must be the MLM loss for
    "failed to train" to apply)."""
    out = []
    for t in trials:
        status = t.user_attrs.get("status")
        if t.user_attrs.get("stage") != "seed":
            continue
        if t.state == TrialState.COMPLETE and status == Status.COMPLETE:
            value = t.value if t.value is not None else math.inf
            final = t.user_attrs.get("final", value)
            best = min([final, *t.intermediate_values.values()])
            mlm = plan.experiment.objective == "val/mlm_loss"
            outcome, _ = finished_outcome(final, best, line if mlm else math.nan)
        elif status == Status.DIVERGED:
            value, outcome = math.inf, DIVERGED
        else:
            continue
        out.append(Result(t.user_attrs["variant"], int(t.user_attrs["seed"]), value, outcome))
    return out


def decide(
    plan: Plan, results: Sequence[Result], slots: Mapping[str, str]
) -> list[tuple[Slot, str]]:
    """What to add now: ``(slot, reason)`` pairs, none already in ``slots`` (slot key -> state
    as :func:`ablations.sweep.slots.slot_state` gives it; "pending" and "retry" are unfinished).
    """
    ext = plan.experiment.extend
    if ext is None:
        return []
    busy = {key.split("/")[0] for key, state in slots.items() if state in ("pending", "retry")}
    active = {key.split("/")[0] for key in slots}
    by_variant: dict[str, list[Result]] = {}
    for r in results:
        by_variant.setdefault(r.variant, []).append(r)
    out: list[tuple[Slot, str]] = []
    for members in _curves(plan).values():
        on = [(value, v) for value, v in members if v in active]
        if not on or any(v in busy for _, v in on):
            continue
        added = _extend_curve(plan, members, on, by_variant)
        for add, why in added:
            out += [
                (Slot(f"{add}/seed/{s}", add, "seed", s, {}), why)
                for s in range(plan.experiment.seeds)
            ]
        if ext.best_seeds is not None and not added and len(on) > 1:
            out += _best_seeds(plan, on, by_variant, slots)
    if ext.against is not None:
        out += _more_seeds(plan, by_variant, busy, slots)
    seen = set(slots)
    unique = []
    for slot, why in out:
        if slot.key not in seen:
            seen.add(slot.key)
            unique.append((slot, why))
    return unique


def _curves(plan: Plan) -> dict[str, list[tuple[float, str]]]:
    """Curve key (every toggle but the axis) -> its (axis value, variant), sorted by value."""
    axis = plan.experiment.extend.axis
    curves: dict[str, list[tuple[float, str]]] = {}
    for name, toggles in plan.all_variants.items():
        key = json.dumps({k: v for k, v in toggles.items() if k != axis}, sort_keys=True)
        curves.setdefault(key, []).append((float(toggles[axis]), name))
    return {k: sorted(v) for k, v in curves.items()}


def _extend_curve(
    plan: Plan,
    members: list[tuple[float, str]],
    on: list[tuple[float, str]],
    by_variant: Mapping[str, list[Result]],
) -> list[tuple[str, str]]:
    ext = plan.experiment.extend
    axis, metric = ext.axis, score_name(plan)
    lo, hi = on[0][0], on[-1][0]
    up = next(((x, v) for x, v in members if x > hi), None)
    down = next(((x, v) for x, v in reversed(members) if x < lo), None)
    scores = {x: _score(by_variant.get(v, [])) for x, v in on}
    label = on[0][1]
    out: list[tuple[str, str]] = []

    def add(step: tuple[float, str] | None, why: str) -> None:
        if step is None:
            return  # the budget: max_steps values beyond this end are active already
        out.append((step[1], f"{why}; next {axis}={step[0]:g}"))

    if "optimum" in ext.bracket and any(math.isfinite(x) for x in scores.values()):
        best = min(scores, key=lambda x: (scores[x], x))
        where = f"mean {metric} {scores[best]:.4g} over {len(by_variant.get(_at(on, best), []))}"
        if best == hi and len(on) > 1:
            add(up, f"optimum at the top of {_curve_name(label, axis)}: {axis}={best:g} ({where})")
        elif best == lo and len(on) > 1:
            add(
                down,
                f"optimum at the bottom of {_curve_name(label, axis)}: {axis}={best:g} ({where})",
            )
    if "failure" in ext.bracket and all(by_variant.get(v) for _, v in on):
        failing = [x for x, v in on if _fails(by_variant.get(v, []))]
        if not failing:
            add(
                up,
                f"no failing value yet on {_curve_name(label, axis)}: every seed trained up "
                f"to {axis}={hi:g}",
            )
        elif failing[0] == lo:
            add(
                down,
                f"first failing value at the bottom of {_curve_name(label, axis)}: {axis}={lo:g}",
            )
    return out


def _best_seeds(
    plan: Plan,
    on: list[tuple[float, str]],
    by_variant: Mapping[str, list[Result]],
    slots: Mapping[str, str],
) -> list[tuple[Slot, str]]:
    """Seeds up to ``best_seeds`` at a settled curve's best value (its optimum bracketed, or
    the budget beyond its end spent)."""
    ext = plan.experiment.extend
    scores = {x: _score(by_variant.get(v, [])) for x, v in on}
    if not any(math.isfinite(x) for x in scores.values()):
        return []  # nothing trained (or nothing finished): no best value to seed
    best = min(scores, key=lambda x: (scores[x], x))
    variant = _at(on, best)
    have = {int(k.rsplit("/", 1)[1]) for k in slots if k.startswith(f"{variant}/seed/")}
    why = (
        f"best value of {_curve_name(variant, ext.axis)}: {ext.axis}={best:g} (mean "
        f"{score_name(plan)} {scores[best]:.4g}); seeds up to {ext.best_seeds}"
    )
    return [
        (Slot(f"{variant}/seed/{s}", variant, "seed", s, {}), why)
        for s in range(ext.best_seeds)
        if s not in have
    ]


def _more_seeds(
    plan: Plan, by_variant: Mapping[str, list[Result]], busy: set[str], slots: Mapping[str, str]
) -> list[tuple[Slot, str]]:
    ext = plan.experiment.extend
    out: list[tuple[Slot, str]] = []
    active = {key.split("/")[0] for key in slots}
    for variant in plan.all_variants:
        name, _, point = variant.partition(",")
        ref = f"{ext.against},{point}" if point else ext.against
        if name == ext.against or ref not in plan.all_variants or variant not in active:
            continue
        if variant in busy or ref in busy:
            continue
        mine = {r.seed: r.value for r in by_variant.get(variant, [])}
        theirs = {r.seed: r.value for r in by_variant.get(ref, [])}
        seeds = sorted(s for s in set(mine) & set(theirs) if math.isfinite(mine[s] - theirs[s]))
        n = len(seeds)
        if n < 2:
            continue
        half = paired_half_width([mine[s] - theirs[s] for s in seeds])
        taken = max(
            int(k.rsplit("/", 1)[1]) + 1 for k in slots if k.startswith((f"{variant}/seed/",))
        )
        if half <= ext.half_width or taken >= ext.max_seeds:
            continue
        why = (
            f"{variant} - {ref}: 95% half-width {half:.3g} > {ext.half_width:g} with {n} paired "
            f"seeds; seed {taken} added to both"
        )
        out += [(Slot(f"{v}/seed/{taken}", v, "seed", taken, {}), why) for v in (variant, ref)]
    return out


def paired_half_width(differences: Sequence[float]) -> float:
    """The 95% t-interval's half-width of the mean of ``differences`` (n >= 2)."""
    d = np.asarray(differences, dtype=float)
    n = len(d)
    return float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n))


def score_name(plan: Plan) -> str:
    """What a trial's value is, for the reasons: the final objective, or the first-target rank
    (the steps to the lowest target for a run that reached it)."""
    exp = plan.experiment
    return exp.objective if exp.rank == "final" else f"steps to {min(exp.targets):g}"


def _score(results: Sequence[Result]) -> float:
    return float(np.mean([r.value for r in results])) if results else math.inf


def _fails(results: Sequence[Result]) -> bool:
    return any(r.outcome != TRAINED for r in results)


def _at(on: list[tuple[float, str]], x: float) -> str:
    return next(v for value, v in on if value == x)


def _curve_name(variant: str, axis: str) -> str:
    """A curve named by one member with its axis label dropped (``baseline,preset=apex``)."""
    short = axis.rsplit(".", 1)[-1]
    parts = [p for p in variant.split(",") if not p.startswith((f"{short}=", f"{axis}="))]
    return ",".join(parts) or "the curve"


def reference_line(data: Mapping[str, Any] | None, phases: int) -> float:
    """The last phase's unigram entropy from ``data.json`` (NaN without one)."""
    data = data or {}
    value = data.get(f"phase{phases}_unigram_entropy", data.get("unigram_entropy"))
    return float(value) if isinstance(value, int | float) else math.nan
