"""An experiment's Optuna study: its slots, who runs what, and lost trials.

Every trial the experiment needs is a *slot* (``"<variant>/tune/<i>"``, ``"<variant>/seed/<s>"``)
carried in the trial's ``user_attrs`` with its variant, stage and seed. Slots whose parameters are
known in advance (quasi-random, random or grid points; seeds without tuning) are queued as
``WAITING`` trials when the study is prepared; a variant's seed reruns are queued once all its
tuning slots are finished (the best point by the objective); ``tpe`` slots are sampled when a
worker asks for work. Queueing, claiming and reaping happen under one file lock in the
experiment's directory, so every slot is run once however many workers ask at the same time.

A claimed trial is ``RUNNING`` and holds a lease (``.leases/<number>.json``, renewed by the
worker). A trial whose worker is gone (same host and dead pid, SLURM job no longer running, or a
lease older than the grace period) is failed as ``lost`` (:mod:`ablations.core.status`) and
re-queued
with the same parameters and Optuna's retry attributes (``system_attrs["failed_trial"]`` is the
original trial number: the retry resumes in the original trial's directory, from its checkpoint).
With an RDB storage, Optuna's own heartbeat and
:class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` do the same.

Layout of ``<results>/<experiment>/``::

    sweep.json        the resolved experiment (a restart with a different one is refused)
    study.journal     Optuna's journal (journal storage)
    data.json         the workload's unigram entropy of masked tokens (the reference line)
    <n>/              trial n's run directory (n = the original trial number), trial.json
    .leases/ .lock    claims and the lock
    slurm/            batch scripts and logs
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from ablations.config import ConfigError, plain
from ablations.core.fileio import flocked, read_json, write_json
from ablations.core.internals import study_storage, trial_id
from ablations.core.journal import open_journal
from ablations.core.status import RETRIED, Status
from ablations.sweep.spec import Experiment, Plan, RetryConfig, Sweep

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class SpecChangedError(ConfigError):
    """The experiment directory holds a study of a different experiment definition."""


# --- storage ---------------------------------------------------------------------------------


def open_storage(sweep: Sweep, exp_dir: Path) -> optuna.storages.BaseStorage:
    """The journal file of ``exp_dir``, or the sweep's RDB URL with heartbeats and retries."""
    if sweep.storage == "journal":
        return open_journal(exp_dir)
    with warnings.catch_warnings():  # heartbeats and the retry callback are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            sweep.storage,
            heartbeat_interval=sweep.retry.heartbeat_seconds,
            grace_period=sweep.retry.grace_seconds,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                max_retry=sweep.retry.max_retry
            ),
        )


def load(sweep: Sweep, plan: Plan, exp_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=plan.name, storage=open_storage(sweep, exp_dir))


@contextlib.contextmanager
def locked(exp_dir: Path) -> Iterator[None]:
    """The experiment's lock (``flock``; held briefly: claim, queue, reap)."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    with flocked(exp_dir / ".lock"):
        yield


def prepare(sweep: Sweep, plan: Plan, exp_dir: Path) -> optuna.Study:
    """Create (or reopen) the study and queue the slots known in advance. Idempotent.

    Raises:
        SpecChangedError: ``exp_dir`` was prepared for a different definition of the experiment.
    """
    saved = check_snapshot(plan, exp_dir)
    with locked(exp_dir):
        if saved is None:
            write_json(exp_dir / "sweep.json", plan.to_dict())
        storage = open_storage(sweep, exp_dir)
        try:  # load first: create_study(load_if_exists=True) logs a creation every time
            study = optuna.load_study(study_name=plan.name, storage=storage)
        except KeyError:
            study = optuna.create_study(study_name=plan.name, storage=storage, direction="minimize")
        _queue(study, plan, slots_ahead(plan))
    return study


def check_snapshot(plan: Plan, exp_dir: Path) -> dict[str, Any] | None:
    """``exp_dir``'s ``sweep.json`` (None for a new experiment).

    Raises:
        SpecChangedError: it holds a different definition of the experiment.
    """
    saved = read_json(exp_dir / "sweep.json")
    if saved is not None and _upgraded(saved) != json.loads(json.dumps(plan.to_dict())):
        raise SpecChangedError(
            f"{exp_dir}: holds experiment {plan.name!r} with a different definition "
            "(sweep.json); use a new experiment name or remove the directory"
        )
    return saved


def _upgraded(saved: dict[str, Any]) -> dict[str, Any]:
    """A ``sweep.json`` written by an older harness, with the experiment keys added since then
    set to their defaults: adding an option (say ``targets``) must not orphan a running
    experiment, while any value that differs from the file's still refuses the restart."""
    experiment = saved.get("experiment")
    if not isinstance(experiment, dict):
        return saved
    defaults = {
        f.name: plain(f.default if f.default is not dataclasses.MISSING else f.default_factory())
        for f in dataclasses.fields(Experiment)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    added = {k: v for k, v in defaults.items() if k not in experiment}
    return {**saved, "experiment": json.loads(json.dumps({**experiment, **added}))}


# --- slots ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    key: str
    variant: str
    stage: str  # "tune" | "seed"
    seed: int
    params: dict[str, Any] | None  # None: sampled when claimed (tpe)


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
    exp = plan.experiment
    per_variant = exp.seeds + (exp.search.budget if plan.tuned else 0)
    if plan.tuned and plan.points is not None:
        per_variant = exp.seeds + len(plan.points)
    return len(plan.variants) * per_variant


def _tuned_distributions(plan: Plan) -> dict[str, Any]:
    dists: dict[str, Any] = {}
    for path, r in plan.experiment.tune.items():
        if r.values is not None:
            dists[path] = CategoricalDistribution(list(r.values))
        else:
            dists[path] = FloatDistribution(r.low, r.high, log=r.log)
    return dists


def _choice(value: Any) -> Any:
    """A toggle value as an Optuna categorical choice (None, bool, int, float or str)."""
    return value if value is None or isinstance(value, bool | int | float | str) else repr(value)


def _toggle_params(plan: Plan) -> dict[str, dict[str, Any]]:
    """Per variant, every toggle path with its value, as categorical choices."""
    return {v: {k: _choice(x) for k, x in plan.toggles(v).items()} for v in plan.variants}


def _distributions(plan: Plan, toggles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The study's parameters: ``variant``, one categorical per toggle path (what the
    dashboard's slice, parallel-coordinate and importance views read) and the tuned ones."""
    dists: dict[str, Any] = {"variant": CategoricalDistribution(list(plan.variants))}
    for path in dict.fromkeys(p for values in toggles.values() for p in values):
        choices = list(dict.fromkeys(values[path] for values in toggles.values()))
        dists[path] = CategoricalDistribution(choices)
    return {**dists, **_tuned_distributions(plan)}


def tuned_params(params: Mapping[str, Any], plan: Plan) -> dict[str, Any]:
    """The tuned hyperparameters among a trial's parameters (not its variant or toggles, which
    the variant's name already sets)."""
    return {k: v for k, v in params.items() if k in plan.experiment.tune}


def _queue(study: optuna.Study, plan: Plan, slots: list[Slot]) -> None:
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
                },
            )
        )


def origin(trial: FrozenTrial) -> int:
    """The trial number whose directory (and checkpoint) a trial uses: the original's."""
    # the attributes RetryHeartbeatStaleTrialCallback writes (read directly: its static
    # readers warn as experimental)
    first = trial.system_attrs.get("failed_trial")
    return trial.number if first is None else first


def _history(trial: FrozenTrial) -> list[int]:
    return list(trial.system_attrs.get("retry_history", []))


def slot_state(trials: list[FrozenTrial], retry: RetryConfig) -> dict[str, str]:
    """Each slot's state: "pending" (waiting/running), "done" (complete, pruned, or failed for
    good) or "retry" (failed as lost with retries left but no retry queued yet)."""
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
            lost = last.user_attrs.get("status") in RETRIED
            out[key] = "retry" if lost and len(ts) <= retry.max_retry else "done"
    return out


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
    best = min(tuned, key=lambda t: (_value(t), t.number))
    return tuned_params(best.params, plan)


def _value(t: FrozenTrial) -> float:
    return t.value if t.state == TrialState.COMPLETE and t.value is not None else math.inf


# --- claiming, leases, reaping ------------------------------------------------------------------


@dataclass
class Claim:
    number: int
    trial_id: int
    origin: int
    variant: str
    stage: str
    seed: int
    slot: str
    params: dict[str, Any]
    attempts: list[int]


def claim_next(study: optuna.Study, plan: Plan, sweep: Sweep, exp_dir: Path) -> Claim | None:
    """Under the lock: reap lost trials, queue what became known, claim a waiting trial."""
    with locked(exp_dir):
        trials, states = _reap_and_retry(study, sweep, exp_dir)
        _queue(study, plan, _slots_now(plan, trials, states))
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not waiting and plan.points is None:
            waiting = _sample_tpe(study, plan, sweep)
        for t in sorted(waiting, key=lambda t: t.number):
            storage = study_storage(study)
            if storage.set_trial_state_values(trial_id(t), TrialState.RUNNING):
                frozen = storage.get_trial(trial_id(t))
                claim = _claim(frozen, plan)
                _write_lease(exp_dir, claim.number)
                return claim
    return None


def _claim(t: FrozenTrial, plan: Plan) -> Claim:
    history = _history(t)
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


def queue_retries(study: optuna.Study, sweep: Sweep, exp_dir: Path) -> None:
    """Reap lost trials and queue their retries now (a preempted worker, the collect job)."""
    with locked(exp_dir):
        _reap_and_retry(study, sweep, exp_dir)


def _reap_and_retry(
    study: optuna.Study, sweep: Sweep, exp_dir: Path
) -> tuple[list[FrozenTrial], dict[str, str]]:
    """Under the lock: fail the lost trials and queue their retries; returns the trials and
    slot states seen before the retries were queued (a "retry" slot is not "done" either way)."""
    reap(study, sweep, exp_dir)
    trials = study.get_trials(deepcopy=False)
    states = slot_state(trials, sweep.retry)
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
        if all(states.get(k) == "done" for k in keys):
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
            "retry_history": [*_history(last), last.number],
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
    dists = _tuned_distributions(plan)
    scratch = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=plan.experiment.search.seed + index),
    )
    for t in trials:
        if t.user_attrs.get("variant") != variant or t.user_attrs.get("stage") != "tune":
            continue
        if t.state not in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED):
            continue
        value = _value(t) if t.state == TrialState.COMPLETE else None
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
    _queue(study, plan, [slot])
    return study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


def _lease_path(exp_dir: Path, number: int) -> Path:
    return exp_dir / ".leases" / f"{number}.json"


def _write_lease(exp_dir: Path, number: int) -> None:
    env = os.environ
    write_json(
        _lease_path(exp_dir, number),
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "job": env.get("SLURM_JOB_ID"),
            "restart": env.get("SLURM_RESTART_COUNT", "0"),
            "claimed": time.time(),
        },
    )


class Heartbeat:
    """Renews a claim while its trial runs: the lease file's mtime, and Optuna's heartbeat
    where the storage has one (RDB)."""

    def __init__(
        self, study: optuna.Study, claim: Claim, exp_dir: Path, sweep: Sweep, every: float
    ) -> None:
        self.path = _lease_path(exp_dir, claim.number)
        self.rdb = sweep.storage != "journal"
        self.study, self.claim, self.every = study, claim, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sweep-heartbeat")

    def __enter__(self) -> Heartbeat:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)

    def _beat(self) -> None:
        with contextlib.suppress(OSError):
            os.utime(self.path)
        if self.rdb:
            study_storage(self.study).record_heartbeat(self.claim.trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._beat()


def reap(study: optuna.Study, sweep: Sweep, exp_dir: Path) -> list[int]:
    """Fail the running trials whose worker is gone (called under the lock); returns them.

    The retry is queued by the next :func:`claim_next` (journal) or by Optuna's stale-trial
    callback (RDB).
    """
    if sweep.storage != "journal":  # RDB: Optuna's heartbeat and retry callback
        before = {t.number for t in study.get_trials(states=(TrialState.RUNNING,))}
        optuna.storages.fail_stale_trials(study)
        after = {t.number for t in study.get_trials(states=(TrialState.RUNNING,))}
        return sorted(before - after)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return []
    leases = {t.number: read_json(_lease_path(exp_dir, t.number)) for t in running}
    # squeue only for claims made inside SLURM jobs (it can hang where no controller answers)
    jobs = _slurm_jobs_alive() if any(v and v.get("job") for v in leases.values()) else None
    lost = []
    for t in running:
        why = _gone(exp_dir, t, leases[t.number], jobs, sweep.retry)
        if why is None:
            continue
        storage, tid = study_storage(study), trial_id(t)
        storage.set_trial_user_attr(tid, "status", Status.LOST)
        storage.set_trial_user_attr(tid, "error", why)
        storage.set_trial_state_values(tid, TrialState.FAIL)
        _lease_path(exp_dir, t.number).unlink(missing_ok=True)
        lost.append(t.number)
    return lost


def _gone(
    exp_dir: Path,
    t: FrozenTrial,
    lease: dict[str, Any] | None,
    jobs: set[str] | None,
    retry: RetryConfig,
) -> str | None:
    """Why trial ``t``'s worker is gone, or None while it may be alive."""
    path = _lease_path(exp_dir, t.number)
    now = time.time()
    if lease is None:
        started = t.datetime_start.timestamp() if t.datetime_start else now
        return "no lease" if now - started > retry.grace_seconds else None
    if lease.get("job") and jobs is not None and lease["job"] not in jobs:
        return f"SLURM job {lease['job']} is not running"
    if lease["host"] == socket.gethostname() and not _pid_alive(lease["pid"]):
        return f"worker pid {lease['pid']} on {lease['host']} is gone"
    with contextlib.suppress(FileNotFoundError):
        age = now - path.stat().st_mtime
        if age > retry.grace_seconds:
            return f"lease not renewed for {age:.0f} s"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed, not yet reaped by its parent) is gone too
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z"):
            return False
    return True


def _slurm_jobs_alive() -> set[str] | None:
    """Ids of the SLURM jobs (array elements too) now running; None without SLURM."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-t", "RUNNING,COMPLETING,SUSPENDED", "-o", "%A %i"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {tok for line in out.splitlines() for tok in line.split()}


# --- progress ----------------------------------------------------------------------------------


def progress(study: optuna.Study, plan: Plan, retry: RetryConfig) -> dict[str, int]:
    """Slot counts: total, done (complete/pruned/failed for good), running, diverged, failed."""
    trials = study.get_trials(deepcopy=False)
    states = slot_state(trials, retry)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    status = [t.user_attrs.get("status") for t in trials if t.state in FINISHED]
    return {
        "total": total_slots(plan),
        "done": sum(s == "done" for s in states.values()),
        "running": running,
        "diverged": status.count(Status.DIVERGED),
        "failed": status.count(Status.FAILED),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "retried": sum(1 for t in trials if "failed_trial" in t.system_attrs),
    }


def finished(study: optuna.Study, plan: Plan, retry: RetryConfig) -> bool:
    p = progress(study, plan, retry)
    return p["done"] == p["total"]


class ReadOnlyStorage(optuna.storages.BaseStorage):
    """An Optuna storage that reads through to ``storage`` and refuses every write (a
    ``PermissionError``): optuna-dashboard can create and delete studies and write notes, and
    a dashboard must never change what a sweep recorded. Reads are live, so its views follow
    a running sweep."""

    WRITES = frozenset(
        {
            "create_new_study",
            "delete_study",
            "set_study_user_attr",
            "set_study_system_attr",
            "create_new_trial",
            "set_trial_param",
            "set_trial_state_values",
            "set_trial_intermediate_value",
            "set_trial_user_attr",
            "set_trial_system_attr",
        }
    )

    def __init__(self, storage: optuna.storages.BaseStorage) -> None:
        self._storage = storage


def _read_only_method(name: str) -> Any:
    def method(self: ReadOnlyStorage, *args: Any, **kwargs: Any) -> Any:
        if name in ReadOnlyStorage.WRITES:
            raise PermissionError(f"the study is read-only here: {name} refused")
        return getattr(self._storage, name)(*args, **kwargs)

    method.__name__ = name
    return method


for _name in optuna.storages.BaseStorage.__abstractmethods__ | ReadOnlyStorage.WRITES:
    setattr(ReadOnlyStorage, _name, _read_only_method(_name))
ReadOnlyStorage.__abstractmethods__ = frozenset()
