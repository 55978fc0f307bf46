"""The slots of an experiment: every trial it needs, what each is (its parameters, as Optuna
parameters), queueing them, their states, and how far the experiment is.

Every trial the experiment needs is a *slot* (``"<variant>/tune/<i>"``, ``"<variant>/seed/<s>"``)
carried in the trial's ``user_attrs`` with its variant, stage and seed. Slots whose parameters are
known in advance (quasi-random, random or grid points; seeds without tuning) are queued as
``WAITING`` trials when the study is prepared (:func:`slots_ahead`); a variant's seed reruns are
queued once all its tuning slots are finished (the best point by the objective,
:func:`best_point`); ``tpe`` slots are sampled when a worker asks for work
(:mod:`ablations.sweep.schedule`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from ablations.core.status import RETRIED, Status
from ablations.sweep.plan import Plan
from ablations.sweep.spec import RetryConfig

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass(frozen=True)
class Slot:
    """One trial the experiment needs: its key, variant, stage, seed and tuned parameters."""

    key: str
    variant: str
    stage: str  # "tune" | "seed"
    seed: int
    params: dict[str, Any] | None  # None: sampled when claimed (tpe)
    #: Why ``extend`` added it (:mod:`ablations.sweep.extend`); the trial's ``added_by``.
    reason: str | None = None


def slots_ahead(plan: Plan) -> list[Slot]:
    """The slots whose parameters are known before anything ran."""
    exp, out = plan.experiment, []
    for variant in plan.variants:
        if not plan.tuned:
            out += [Slot(f"{variant}/seed/{s}", variant, "seed", s, {}) for s in range(exp.seeds)]
        elif plan.points is not None:
            out += [
                Slot(f"{variant}/tune/{i}", variant, "tune", 0, p)
                for i, p in enumerate(plan.points)
            ]
    return out


def total_slots(plan: Plan) -> int:
    """The slots the file's design has (``extend`` may add more: :func:`progress` counts them
    once queued)."""
    exp = plan.experiment
    per_variant = exp.seeds + (exp.search.budget if plan.tuned else 0)
    if plan.tuned and plan.points is not None:
        per_variant = exp.seeds + len(plan.points)
    return len(plan.variants) * per_variant


def tuned_distributions(plan: Plan) -> dict[str, Any]:
    dists: dict[str, Any] = {}
    for path, r in plan.experiment.tune.items():
        if r.values is not None:
            dists[path] = CategoricalDistribution(list(r.values))
        else:
            dists[path] = FloatDistribution(r.low, r.high, log=r.log)
    return dists


def choice(value: Any) -> Any:
    """A toggle value as an Optuna categorical choice (None, bool, int, float or str)."""
    return value if value is None or isinstance(value, bool | int | float | str) else repr(value)


def _toggle_params(plan: Plan) -> dict[str, dict[str, Any]]:
    """Per variant, every toggle path with its value, as categorical choices."""
    return {v: {k: choice(x) for k, x in plan.toggles(v).items()} for v in plan.all_variants}


def _distributions(plan: Plan, toggles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The study's parameters: ``variant``, one categorical per toggle path (what the
    dashboard's slice, parallel-coordinate and importance views read) and the tuned ones."""
    dists: dict[str, Any] = {"variant": CategoricalDistribution(list(plan.all_variants))}
    for path in dict.fromkeys(p for values in toggles.values() for p in values):
        choices = list(dict.fromkeys(values[path] for values in toggles.values()))
        dists[path] = CategoricalDistribution(choices)
    return {**dists, **tuned_distributions(plan)}


def tuned_params(params: Mapping[str, Any], plan: Plan) -> dict[str, Any]:
    """The tuned hyperparameters among a trial's parameters (not its variant or toggles, which
    the variant's name already sets)."""
    return {k: v for k, v in params.items() if k in plan.experiment.tune}


def queue_slots(study: optuna.Study, plan: Plan, slots: list[Slot]) -> None:
    present = {t.user_attrs.get("slot") for t in study.get_trials(deepcopy=False)}
    toggles = _toggle_params(plan)
    dists = _distributions(plan, toggles)
    for slot in slots:
        if slot.key in present:
            continue
        params = {"variant": slot.variant, **toggles[slot.variant], **(slot.params or {})}
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=params,
                distributions={k: dists[k] for k in params},
                user_attrs={
                    "slot": slot.key,
                    "variant": slot.variant,
                    "stage": slot.stage,
                    "seed": slot.seed,
                    **({"added_by": slot.reason} if slot.reason else {}),
                },
            )
        )


def origin(trial: FrozenTrial) -> int:
    """The trial number whose directory (and checkpoint) a trial uses: the original's."""
    # the attributes RetryHeartbeatStaleTrialCallback writes (read directly: its static
    # readers warn as experimental)
    first = trial.system_attrs.get("failed_trial")
    return trial.number if first is None else first


def retry_history(trial: FrozenTrial) -> list[int]:
    """The numbers of the trials a retry was retried from, oldest first (Optuna's attribute)."""
    return list(trial.system_attrs.get("retry_history", []))


#: The study's user attribute of the retries granted by ``make sweep SWEEP_FLAGS=--retry-lost``:
#: slot -> the crashes counted when the grant was made (``retry.max_retry`` more from there).
GRANTS = "retry_grants"


def crashes(attempts: list[FrozenTrial]) -> int:
    """How many of a slot's attempts were lost (the worker vanished: a crash, a kill -9, a
    hung node). Preemptions (``preempted``: the scheduler's signal, a checkpoint taken) never
    count: they do not use up the retries meant for crashes."""
    return sum(t.user_attrs.get("status") == Status.LOST for t in attempts)


def slot_state(
    trials: list[FrozenTrial], retry: RetryConfig, grants: Mapping[str, int] | None = None
) -> dict[str, str]:
    """Each slot's state: "pending" (waiting/running), "done" (complete, pruned, or failed for
    good by training), "retry" (stopped: preempted, or lost with retries left; no retry queued
    yet) or "lost" (lost more than ``retry.max_retry`` times since the last grant: given up,
    reported by the sweep, never silent)."""
    grants = grants or {}
    by_slot: dict[str, list[FrozenTrial]] = {}
    for t in trials:
        if "slot" in t.user_attrs:
            by_slot.setdefault(t.user_attrs["slot"], []).append(t)
    out = {}
    for key, ts in by_slot.items():
        states = {t.state for t in ts}
        if states & {TrialState.WAITING, TrialState.RUNNING}:
            out[key] = "pending"
        elif states & {TrialState.COMPLETE, TrialState.PRUNED}:
            out[key] = "done"
        else:
            last = max(ts, key=lambda t: t.number)
            status = last.user_attrs.get("status")
            if status not in RETRIED:
                out[key] = "done"  # training failed: final, a result of its own
            elif status == Status.PREEMPTED:
                out[key] = "retry"
            else:
                spent = crashes(ts) - grants.get(key, 0)
                out[key] = "retry" if spent <= retry.max_retry else "lost"
    return out


def given_up(study: optuna.Study, retry: RetryConfig) -> dict[str, list[int]]:
    """The slots given up (:func:`slot_state` "lost"), each with its trials' numbers."""
    trials = study.get_trials(deepcopy=False)
    states = slot_state(trials, retry, study.user_attrs.get(GRANTS))
    return {
        key: sorted(t.number for t in trials if t.user_attrs.get("slot") == key)
        for key, state in states.items()
        if state == "lost"
    }


def best_point(trials: list[FrozenTrial], variant: str, plan: Plan) -> dict[str, Any]:
    """The variant's best tuning point: lowest objective (diverged = inf), first on ties."""
    tuned = [
        t
        for t in trials
        if t.user_attrs.get("variant") == variant
        and t.user_attrs.get("stage") == "tune"
        and t.state == TrialState.COMPLETE
    ]
    if not tuned:
        tuned = [
            t
            for t in trials
            if t.user_attrs.get("variant") == variant and t.user_attrs.get("stage") == "tune"
        ]
    best = min(tuned, key=lambda t: (objective_value(t), t.number))
    return tuned_params(best.params, plan)


def objective_value(t: FrozenTrial) -> float:
    """A trial's value for ranking: its objective when complete, else inf (diverged included)."""
    return t.value if t.state == TrialState.COMPLETE and t.value is not None else math.inf


def progress(study: optuna.Study, plan: Plan, retry: RetryConfig) -> dict[str, int]:
    """Slot counts: total, done (complete/pruned/failed for good, or given up), lost (given up),
    running, diverged, failed."""
    trials = study.get_trials(deepcopy=False)
    states = slot_state(trials, retry, study.user_attrs.get(GRANTS))
    running = sum(t.state == TrialState.RUNNING for t in trials)
    status = [t.user_attrs.get("status") for t in trials if t.state in FINISHED]
    return {
        "total": max(total_slots(plan), len(states)),  # with the slots extend added
        "done": sum(s in ("done", "lost") for s in states.values()),  # nothing left to run
        "lost": sum(s == "lost" for s in states.values()),
        "running": running,
        "diverged": status.count(Status.DIVERGED),
        "failed": status.count(Status.FAILED),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "retried": sum(1 for t in trials if "failed_trial" in t.system_attrs),
    }


def finished(study: optuna.Study, plan: Plan, retry: RetryConfig) -> bool:
    p = progress(study, plan, retry)
    return p["done"] == p["total"]
