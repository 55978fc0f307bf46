"""Handing out work: which waiting trial a worker gets (:func:`claim_next`), and what becomes
runnable meanwhile: a variant's seed reruns once its tuning is finished, the retries of lost
trials, the next TPE point.

Queueing, claiming and reaping happen under one file lock in the experiment's directory
(:func:`ablations.sweep.study.locked`), so every slot is run once however many workers ask at the
same time. A lost trial (:func:`ablations.sweep.leases.reap`) is re-queued with the same
parameters and Optuna's retry attributes (``system_attrs["failed_trial"]`` is the original trial
number: the retry resumes in the original trial's directory, from its checkpoint).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from ablations.core.fileio import read_json
from ablations.core.internals import study_storage, trial_id
from ablations.sweep import extend
from ablations.sweep.leases import Claim, reap, write_lease
from ablations.sweep.plan import Plan
from ablations.sweep.slots import (
    GRANTS,
    Slot,
    best_point,
    crashes,
    objective_value,
    origin,
    queue_slots,
    retry_history,
    slot_state,
    tuned_distributions,
    tuned_params,
)
from ablations.sweep.spec import Sweep
from ablations.sweep.study import locked


def claim_next(study: optuna.Study, plan: Plan, sweep: Sweep, exp_dir: Path) -> Claim | None:
    """Under the lock: reap lost trials, queue what became known, claim a waiting trial."""
    with locked(exp_dir):
        trials, states = _reap_and_retry(study, sweep, exp_dir)
        queue_slots(study, plan, _slots_now(plan, trials, states))
        _extend(study, plan, trials, states, exp_dir)
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not waiting and plan.points is None:
            waiting = _sample_tpe(study, plan, sweep)
        for t in sorted(waiting, key=lambda t: t.number):
            storage = study_storage(study)
            if storage.set_trial_state_values(trial_id(t), TrialState.RUNNING):
                frozen = storage.get_trial(trial_id(t))
                claim = _claim(frozen, plan)
                write_lease(exp_dir, claim.number)
                return claim
    return None


def _claim(t: FrozenTrial, plan: Plan) -> Claim:
    history = retry_history(t)
    return Claim(
        number=t.number,
        trial_id=trial_id(t),
        origin=origin(t),
        variant=t.user_attrs["variant"],
        stage=t.user_attrs["stage"],
        seed=int(t.user_attrs["seed"]),
        slot=t.user_attrs["slot"],
        params=tuned_params(t.params, plan),
        attempts=[*history, t.number],
    )


def queue_retries(
    study: optuna.Study, sweep: Sweep, exp_dir: Path, plan: Plan | None = None
) -> None:
    """Reap lost trials and queue their retries now (a preempted worker, the collect job); with
    ``plan``, also what ``extend`` adds from the finished trials."""
    with locked(exp_dir):
        trials, states = _reap_and_retry(study, sweep, exp_dir)
        if plan is not None:
            _extend(study, plan, trials, states, exp_dir)


def _extend(
    study: optuna.Study,
    plan: Plan,
    trials: list[FrozenTrial],
    states: dict[str, str],
    exp_dir: Path,
) -> None:
    """Queue what the ``extend`` rule adds (:func:`ablations.sweep.extend.decide`), each slot
    with its reason, and append the decisions to the study's record."""
    if plan.experiment.extend is None:
        return
    data = read_json(exp_dir / "data.json", tolerant=True)
    line = extend.reference_line(data, len(plan.base.phases))
    added = extend.decide(plan, extend.results_of(trials, plan, line), states)
    if not added:
        return
    queue_slots(study, plan, [dataclasses.replace(slot, reason=why) for slot, why in added])
    record = list(study.user_attrs.get(extend.RECORD) or [])
    record += [{"slot": slot.key, "reason": why} for slot, why in added]
    study.set_user_attr(extend.RECORD, record)


def grant_retries(study: optuna.Study, sweep: Sweep, exp_dir: Path) -> list[str]:
    """``--retry-lost``: give every slot given up another ``retry.max_retry`` retries (its crashes
    so far stop counting) and queue its retry now; returns the slots granted."""
    with locked(exp_dir):
        reap(study, sweep, exp_dir)
        trials = study.get_trials(deepcopy=False)
        grants = dict(study.user_attrs.get(GRANTS) or {})
        states = slot_state(trials, sweep.retry, grants)
        lost = sorted(key for key, state in states.items() if state == "lost")
        for key in lost:
            grants[key] = crashes([t for t in trials if t.user_attrs.get("slot") == key])
        if lost:
            study.set_user_attr(GRANTS, grants)
            _reap_and_retry(study, sweep, exp_dir)
        return lost


def _reap_and_retry(
    study: optuna.Study, sweep: Sweep, exp_dir: Path
) -> tuple[list[FrozenTrial], dict[str, str]]:
    """Under the lock: fail the lost trials and queue their retries; returns the trials and
    slot states seen before the retries were queued (a "retry" slot is not "done" either way)."""
    reap(study, sweep, exp_dir)
    trials = study.get_trials(deepcopy=False)
    states = slot_state(trials, sweep.retry, study.user_attrs.get(GRANTS))
    _retry_lost(study, trials, states)
    return trials, states


def _slots_now(plan: Plan, trials: list[FrozenTrial], states: dict[str, str]) -> list[Slot]:
    """Seed reruns of the variants whose tuning slots are all finished."""
    if not plan.tuned:
        return []
    budget = len(plan.points) if plan.points is not None else plan.experiment.search.budget
    out = []
    for variant in plan.variants:
        keys = [f"{variant}/tune/{i}" for i in range(budget)]
        if all(states.get(k) in ("done", "lost") for k in keys):  # lost: given up, reported
            point = best_point(trials, variant, plan)
            out += [
                Slot(f"{variant}/seed/{s}", variant, "seed", s, point)
                for s in range(1, plan.experiment.seeds + 1)
            ]
    return out


def _retry_lost(study: optuna.Study, trials: list[FrozenTrial], states: dict[str, str]) -> None:
    """Queue a retry of every lost trial that has retries left (Optuna's retry attributes)."""
    for key, state in states.items():
        if state != "retry":
            continue
        last = max((t for t in trials if t.user_attrs.get("slot") == key), key=lambda t: t.number)
        system = {
            "failed_trial": origin(last),
            "retry_history": [*retry_history(last), last.number],
        }
        user = {k: last.user_attrs[k] for k in ("slot", "variant", "stage", "seed")}
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=last.params,
                distributions=last.distributions,
                user_attrs=user,
                system_attrs=system,
            )
        )


def _sample_tpe(study: optuna.Study, plan: Plan, sweep: Sweep) -> list[FrozenTrial]:
    """Queue the next TPE point of the variant with the fewest tuning slots taken.

    TPE is fit per variant: a scratch in-memory study holds that variant's tuning trials
    (running ones too, for the constant liar), so one variant's results never steer another's.
    """
    trials = study.get_trials(deepcopy=False)
    budget = plan.experiment.search.budget
    taken = {
        v: {
            t.user_attrs["slot"]
            for t in trials
            if t.user_attrs.get("variant") == v and t.user_attrs.get("stage") == "tune"
        }
        for v in plan.variants
    }
    open_ = [v for v in plan.variants if len(taken[v]) < budget]
    if not open_:
        return []
    variant = min(open_, key=lambda v: (len(taken[v]), list(plan.variants).index(v)))
    index = len(taken[variant])
    dists = tuned_distributions(plan)
    scratch = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=plan.experiment.search.seed + index),
    )
    for t in trials:
        if t.user_attrs.get("variant") != variant or t.user_attrs.get("stage") != "tune":
            continue
        if t.state not in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED):
            continue
        value = objective_value(t) if t.state == TrialState.COMPLETE else None
        if value is not None and not math.isfinite(value):
            value = 1e30  # a divergence: the worst value TPE can use
        scratch.add_trial(
            optuna.trial.create_trial(
                state=t.state,
                params={k: t.params[k] for k in dists},
                distributions=dists,
                value=value,
            )
        )
    asked = scratch.ask(dists)
    slot = Slot(f"{variant}/tune/{index}", variant, "tune", 0, dict(asked.params))
    queue_slots(study, plan, [slot])
    return study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
