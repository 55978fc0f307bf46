"""An experiment's study on a real Optuna journal file: slots claimed exactly once by concurrent
processes, lost trials reaped and retried under their original number, seed reruns of the best
point, TPE per variant. No training here (the sweep tests train)."""

from __future__ import annotations

import copy
import math
import multiprocessing
import os
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState
from sweep_files import TINY

from ablations.core.internals import study_storage
from ablations.sweep import study as studies
from ablations.sweep.leases import Claim, Heartbeat, reap
from ablations.sweep.schedule import claim_next
from ablations.sweep.slots import best_point, finished, slot_state, total_slots
from ablations.sweep.spec import load_sweep, plan

optuna.logging.set_verbosity(optuna.logging.WARNING)

WORKLOAD = TINY


def _sweep(
    tmp_path: Path,
    method: str = "qmc",
    budget: int = 3,
    seeds: int = 2,
    variants: int = 2,
    max_retry: int = 3,
):
    raw = {
        "results": "out",
        "retry": {"max_retry": max_retry, "heartbeat_seconds": 1, "grace_seconds": 2},
        "experiments": {
            "e": {
                "workload": WORKLOAD,
                "variants": {
                    "grid": {"optimizer.overrides.eps": [10.0**-k for k in range(6, 6 + variants)]}
                },
                "tune": {"phases.0.lr": {"low": 1e-3, "high": 1e-1, "log": True}},
                "search": {"method": method, "budget": budget},
                "seeds": seeds,
            }
        },
    }
    file = tmp_path / "sweep.yaml"
    file.write_text(yaml.safe_dump(raw, sort_keys=False))
    sweep = load_sweep(file)
    return sweep, plan(sweep, "e"), tmp_path / "out" / "e"


def _finish(study: optuna.Study, claim: Claim, value: float, status="complete") -> None:
    study_storage(study).set_trial_user_attr(claim.trial_id, "status", status)
    study.tell(claim.number, values=value)


def _value(claim: Claim) -> float:
    """A made-up objective: best at lr = 1e-2, worse for the smaller eps."""
    lr = claim.params["phases.0.lr"]
    return abs(math.log10(lr) + 2) + (claim.variant.endswith("1e-07")) * 0.1 + claim.seed * 1e-3


def _worker(file: str, results: str, out: str, start: Any = None) -> None:
    """One claiming process: claim, 'train' briefly, tell, until the experiment is finished;
    with ``start`` (a barrier), every process begins claiming at once (a loaded machine would
    otherwise let the first one spawned finish the experiment before the last has imported)."""
    sweep = load_sweep(file)
    p = plan(sweep, "e")
    exp_dir = Path(results)
    study = studies.load(sweep, p, exp_dir)
    if start is not None:
        start.wait(timeout=120)
    mine = []
    while True:
        claim = claim_next(study, p, sweep, exp_dir)
        if claim is None:
            if finished(study, p, sweep.retry):
                break
            time.sleep(0.05)
            continue
        time.sleep(0.01)
        _finish(study, claim, _value(claim))
        mine.append(claim.slot)
    Path(out).write_text("\n".join(mine))


def test_six_processes_claim_every_slot_exactly_once(tmp_path):
    sweep, p, exp_dir = _sweep(tmp_path, budget=8, seeds=3, variants=3)
    studies.prepare(sweep, p, exp_dir)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(6)
    procs = [
        ctx.Process(
            target=_worker,
            args=(str(tmp_path / "sweep.yaml"), str(exp_dir), str(tmp_path / f"w{i}.txt"), start),
        )
        for i in range(6)
    ]
    for q in procs:
        q.start()
    for q in procs:
        q.join(timeout=240)
        assert q.exitcode == 0
    claimed = [s for i in range(6) for s in (tmp_path / f"w{i}.txt").read_text().split()]
    assert len(claimed) == len(set(claimed)) == total_slots(p) == 3 * (8 + 3)
    assert sum(bool((tmp_path / f"w{i}.txt").read_text()) for i in range(6)) >= 2
    study = studies.load(sweep, p, exp_dir)
    trials = study.get_trials()
    assert len(trials) == 33 and all(t.state == TrialState.COMPLETE for t in trials)
    # the seed reruns use each variant's best tuning point, with seeds 1..3
    for variant in p.variants:
        tuned = [
            t
            for t in trials
            if t.user_attrs["variant"] == variant and t.user_attrs["stage"] == "tune"
        ]
        best = min(tuned, key=lambda t: t.value)
        reruns = [
            t
            for t in trials
            if t.user_attrs["variant"] == variant and t.user_attrs["stage"] == "seed"
        ]
        assert sorted(t.user_attrs["seed"] for t in reruns) == [1, 2, 3]
        assert all(t.params["phases.0.lr"] == best.params["phases.0.lr"] for t in reruns)
        assert all(t.number > max(x.number for x in tuned) for t in reruns)


def test_a_diverged_point_is_never_the_best():
    trials = []
    for number, (lr, value) in enumerate([(0.1, math.inf), (0.01, 7.0), (0.001, 6.5)]):
        trials.append(
            optuna.trial.create_trial(
                params={"variant": "v", "phases.0.lr": lr},
                distributions={
                    "variant": optuna.distributions.CategoricalDistribution(["v"]),
                    "phases.0.lr": optuna.distributions.FloatDistribution(1e-4, 1),
                },
                value=value,
                user_attrs={"variant": "v", "stage": "tune"},
            )
        )
        trials[-1].number = number
    plan = types.SimpleNamespace(experiment=types.SimpleNamespace(tune={"phases.0.lr": None}))
    assert best_point(trials, "v", plan) == {"phases.0.lr": 0.001}
    trials[2].value = math.inf
    assert best_point(trials, "v", plan) == {"phases.0.lr": 0.01}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_trial_whose_worker_died_is_retried_under_its_original_number(tmp_path):
    sweep, p, exp_dir = _sweep(tmp_path, budget=1, seeds=1, variants=1, max_retry=2)
    study = studies.prepare(sweep, p, exp_dir)
    first = claim_next(study, p, sweep, exp_dir)
    assert first is not None and first.attempts == [first.number] == [first.origin]
    # a live lease (this process) is left alone
    assert claim_next(study, p, sweep, exp_dir) is None
    assert study.get_trials()[0].state == TrialState.RUNNING
    lease = exp_dir / ".leases" / f"{first.number}.json"
    assert lease.exists()
    for attempt in range(1, 3):
        studies.write_json(lease, {**studies.read_json(lease), "pid": _dead_pid()})
        retry = claim_next(study, p, sweep, exp_dir)
        assert retry is not None
        assert retry.origin == first.number and retry.slot == first.slot
        assert retry.params == first.params and retry.attempts[0] == first.number
        assert len(retry.attempts) == attempt + 1
        lost = study.get_trials()[retry.attempts[-2]]
        assert lost.state == TrialState.FAIL and lost.user_attrs["status"] == "lost"
        assert "is gone" in lost.user_attrs["error"]
        lease = exp_dir / ".leases" / f"{retry.number}.json"
    # retries exhausted (max_retry=2): the slot is given up (reported as lost, never silent)
    studies.write_json(lease, {**studies.read_json(lease), "pid": _dead_pid()})
    nothing = claim_next(study, p, sweep, exp_dir)
    assert nothing is not None and nothing.stage == "seed"  # the seed rerun is queued instead
    states = slot_state(study.get_trials(), sweep.retry)
    assert states[first.slot] == "lost"
    assert study.get_trials()[retry.number].user_attrs["given_up"] is True


def test_a_stale_lease_is_reaped_after_the_grace_period(tmp_path):
    sweep, p, exp_dir = _sweep(tmp_path, budget=1, seeds=1, variants=1)
    study = studies.prepare(sweep, p, exp_dir)
    claim = claim_next(study, p, sweep, exp_dir)
    lease = exp_dir / ".leases" / f"{claim.number}.json"
    studies.write_json(lease, {**studies.read_json(lease), "host": "elsewhere"})
    assert reap(study, sweep, exp_dir) == []  # fresh
    old = time.time() - 10
    os.utime(lease, (old, old))
    assert reap(study, sweep, exp_dir) == [claim.number]
    assert "not renewed" in study.get_trials()[claim.number].user_attrs["error"]


def test_heartbeat_keeps_a_lease_fresh(tmp_path):
    sweep, p, exp_dir = _sweep(tmp_path, budget=1, seeds=1, variants=1)
    study = studies.prepare(sweep, p, exp_dir)
    claim = claim_next(study, p, sweep, exp_dir)
    lease = exp_dir / ".leases" / f"{claim.number}.json"
    studies.write_json(lease, {**studies.read_json(lease), "host": "elsewhere"})
    with Heartbeat(study, claim, exp_dir, sweep, every=0.5):
        time.sleep(3.5)  # past grace_seconds=2
        assert reap(study, sweep, exp_dir) == []
    assert not lease.exists()


def test_tpe_samples_each_variant_from_its_own_trials(tmp_path):
    sweep, p, exp_dir = _sweep(tmp_path, method="tpe", budget=6, seeds=1, variants=2)
    assert p.points is None
    study = studies.prepare(sweep, p, exp_dir)
    assert study.get_trials() == []  # nothing known in advance
    slots = []
    while (claim := claim_next(study, p, sweep, exp_dir)) is not None:
        slots.append((claim.variant, claim.stage))
        _finish(study, claim, _value(claim))
    assert finished(study, p, sweep.retry)
    for variant in p.variants:
        assert slots.count((variant, "tune")) == 6 and slots.count((variant, "seed")) == 1
    lrs = [t.params["phases.0.lr"] for t in study.get_trials()]
    assert all(1e-3 <= lr <= 1e-1 for lr in lrs)


def test_rdb_storage_uses_optunas_heartbeat_and_retry(tmp_path):
    """The RDB path, on SQLite in one process (the sweep file refuses SQLite for real sweeps)."""
    sweep, p, exp_dir = _sweep(tmp_path, budget=1, seeds=1, variants=1)
    sweep = copy.copy(sweep)  # SQLite, which a sweep file may not name: set past the check
    object.__setattr__(sweep, "storage", f"sqlite:///{tmp_path}/s.db")
    study = studies.prepare(sweep, p, exp_dir)
    assert "RDBStorage" in repr(study_storage(study)._backend)
    claim = claim_next(study, p, sweep, exp_dir)
    with Heartbeat(study, claim, exp_dir, sweep, every=0.5):
        time.sleep(2.5)
        assert reap(study, sweep, exp_dir) == []
    time.sleep(4.5)  # no heartbeat for longer than grace_seconds=2
    retry = claim_next(study, p, sweep, exp_dir)
    assert retry is not None and retry.origin == claim.number and retry.slot == claim.slot
    assert study.get_trials()[claim.number].state == TrialState.FAIL
