"""A sweep worker: claims trials from the experiments' studies and trains them until none is left.

One worker is one array task on SLURM (or one local process). All ranks of a multi-rank task
(``srun`` with nodes x tasks per node) train the same trial: rank 0 claims it, hands it to the
other ranks through a file in the experiment's directory, and alone reports to the study.

Signals. ``SIGUSR1`` (SLURM's ``--signal=USR1@N`` before the time limit), ``SIGTERM`` (``scancel``,
preemption, the local driver on Ctrl-C) and ``SIGINT`` (Ctrl-C on a worker started by hand; the
local driver's workers ignore it) stop the trial at the next optimizer step: every rank saves the
phase's ``last.ckpt`` (a resume point), the trial is failed as ``preempted`` (the statuses:
:mod:`ablations.core.status`) and queued again with the same parameters, and the worker exits; after
``SIGUSR1`` it first requeues its own array task (``scontrol requeue``). The retry, on whichever
worker claims it, resumes in the original trial's directory from that checkpoint, so the curve
continues without a gap or a duplicate step. A worker killed outright (``kill -9``) leaves a stale
lease; :func:`ablations.sweep.leases.reap` finds it and the trial is retried the same way, from its
last periodic checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from optuna.trial import TrialState

from ablations.config import RunConfig
from ablations.core.errors import one_line
from ablations.core.fileio import read_json, write_json
from ablations.core.internals import study_storage
from ablations.core.status import EXIT_STOPPED, RETRIED, Status, StopRun
from ablations.run import writer
from ablations.run.checkpoints import save_resume_point
from ablations.run.curves import Curves
from ablations.run.train import train, under_srun
from ablations.sweep import leases, reuse, slots
from ablations.sweep import study as studies
from ablations.sweep.experiment import Experiment
from ablations.sweep.leases import Claim, Heartbeat
from ablations.sweep.plan import Plan
from ablations.sweep.progress import total_steps
from ablations.sweep.schedule import claim_next, queue_retries
from ablations.sweep.spec import Sweep

log = logging.getLogger("ablations.sweep")
POLL_SECONDS = 2.0


class _Stop:
    """Set by SIGUSR1/SIGTERM, and by SIGINT (Ctrl-C on a worker started by hand) unless it is
    ignored (the local driver's workers: it stops them with SIGTERM); read at optimizer-step
    boundaries, so a stopped trial is checkpointed and handed back, never left running."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def install(self) -> None:
        for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(sig) is not signal.SIG_IGN:
                signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        self.signal = signum

    @property
    def requested(self) -> bool:
        return self.signal is not None


def _callbacks(
    stop: _Stop,
    trial: optuna.Trial | None,
    plan: Plan,
    prune: bool = False,
    outpaced_at: Callable[[], float] | None = None,
) -> list[Any]:
    """Lightning callbacks of one trial (classes built here: they close over its stop flag,
    trial and plan)."""

    class StopAtStep(L.Callback):
        """Checkpoint and stop at the first optimizer step after a signal (all ranks agree)."""

        def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
            # Lightning's fit installs its own SIGTERM handler, which ends fit at the next batch
            # without a checkpoint (inside an accumulation window, too); ours replaces it for
            # the fit, and Lightning restores ours afterwards.
            stop.install()

        def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
            self._step = trainer.global_step

        def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
            if trainer.global_step == self._step or pl_module.outcome is not None:
                return  # inside an accumulation window, or the phase is over anyway
            flag = stop.requested
            if trainer.world_size > 1:
                flag = trainer.strategy.reduce_boolean_decision(flag, all=False)
            if flag:
                save_resume_point(trainer)
                raise StopRun(f"signal {stop.signal} at step {pl_module.step}")

    class ReportAndPrune(L.Callback):
        """Reports the objective at each validation as the trial's intermediate value (the
        dashboard's learning curves); with ``prune``, stops the trial when the study's pruner
        says so; with ``outpaced_at`` (:func:`outpace_bound`), when it has not reached the
        lowest target by the step at which a finished tuning run of its variant did."""

        def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
            self._seen = pl_module.last_val

        def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
            val = pl_module.last_val
            if val is None or val is self._seen:
                return
            self._seen = val
            stop_here = False
            reason = f"pruned at step {val['step']}"
            if trial is not None:
                value = val.get(plan.experiment.objective)
                trial.report(math.inf if value is None else value, val["step"])
                stop_here = prune and trial.should_prune()
                if outpaced_at is not None and not stop_here:
                    target, bound = min(plan.experiment.targets), outpaced_at()
                    reached = value is not None and value <= target
                    if not reached and val["step"] >= bound:
                        stop_here = True
                        reason = (
                            f"outpaced at step {val['step']}: a tuning run of this variant "
                            f"reached {plan.experiment.objective} <= {target:g} at step {bound:g}"
                        )
            if (prune or outpaced_at is not None) and trainer.world_size > 1:
                stop_here = trainer.strategy.broadcast(stop_here, src=0)
            if stop_here:
                raise StopRun(reason, Status.PRUNED)

    return [StopAtStep(), ReportAndPrune()]


def first_target_rank(val: list[dict[str, Any]], exp: Experiment, config: RunConfig) -> float:
    """A finished run's rank under ``rank: first_target`` (:class:`Experiment`): the first
    validation step whose objective is at most the lowest target; else, for a run that never
    reached it, steps x (1 + final objective - target), above every step a run can take."""
    target = min(exp.targets)
    values = [(r["step"], r[exp.objective]) for r in val if r.get(exp.objective) is not None]
    for step, value in values:
        if value <= target:
            return float(step)
    return total_steps(config) * (1 + values[-1][1] - target) if values else math.inf


def outpace_bound(
    study: optuna.Study, plan: Plan, variant: str, steps: int, every: float = 30.0
) -> Callable[[], float]:
    """Under ``rank: first_target``: the fewest steps any finished tuning run of ``variant``
    took to reach the lowest target (its value when that is at most ``steps``, the run's
    length; inf while none has). A tuning run that has not reached the target by then can no
    longer rank first, so it stops there (pruned, "outpaced"): the best point, its steps to
    the target and the seed reruns are the same as without the stop, at a fraction of the
    cost. Read from the study at most every ``every`` seconds."""
    cache = {"at": -math.inf, "bound": math.inf}

    def bound() -> float:
        now = time.monotonic()
        if now - cache["at"] >= every:
            cache["at"] = now
            finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            reached = [
                t.value
                for t in finished
                if t.user_attrs.get("variant") == variant
                and t.user_attrs.get("stage") == "tune"
                and t.value is not None
                and t.value <= steps
            ]
            cache["bound"] = min(reached, default=math.inf)
        return cache["bound"]

    return bound


def _prunes(plan: Plan, claim: Claim) -> bool:
    """Whether a trial may be pruned (the same answer on every rank: they vote together)."""
    return plan.experiment.pruner.type != "none" and claim.stage == "tune"


def _plugins() -> list[Any]:
    """Under SLURM, Lightning must not handle SIGUSR1 itself: the worker does (see above)."""
    if under_srun():
        return [SLURMEnvironment(auto_requeue=False)]
    return []


def _pruner(plan: Plan) -> optuna.pruners.BasePruner:
    p = plan.experiment.pruner
    if p.type == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps
        )
    if p.type == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_resource)
    return optuna.pruners.NopPruner()


class _Handoff:
    """Rank 0 publishes each claimed trial (or the end) to the other ranks of its task."""

    def __init__(self, root: Path) -> None:
        env = os.environ
        key = f"{env.get('SLURM_JOB_ID', 'local')}-{env.get('SLURM_RESTART_COUNT', '0')}"
        self.dir = root / ".ranks" / key
        self.seq = 0

    def publish(self, message: dict[str, Any] | None) -> None:
        write_json(self.dir / f"{self.seq}.json", {"message": message})
        self.seq += 1

    def receive(self) -> dict[str, Any] | None:
        path = self.dir / f"{self.seq}.json"
        while not path.exists():
            time.sleep(0.2)
        self.seq += 1
        return read_json(path)["message"]


def run(sweep: Sweep, names: list[str], results: Path) -> int:
    """The worker loop over experiments ``names`` (each already prepared). Returns 0 when
    every slot is finished, 3 when stopped by a signal."""
    threads = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("ABLATIONS_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    stop = _Stop()
    stop.install()
    rank = int(os.environ.get("SLURM_PROCID", "0"))
    world = int(os.environ.get("SLURM_NTASKS", "1"))
    plans = {name: sweep.plans[name] for name in names}  # resolved by load_sweep
    handoff = _Handoff(results / names[0]) if world > 1 else None
    if rank > 0:
        assert handoff is not None
        return _follow(plans, results, handoff, stop)

    loaded = {
        name: (
            optuna.load_study(
                study_name=name,
                storage=studies.open_storage(sweep, results / name),
                sampler=optuna.samplers.RandomSampler(),  # every parameter is fixed: no sampling
                pruner=_pruner(p),
            ),
            p,
        )
        for name, p in plans.items()
    }
    while not stop.requested:
        claimed = None
        t0 = time.monotonic()
        for name, (study, p) in loaded.items():
            claimed = claim_next(study, p, sweep, results / name)
            if claimed is not None:
                break
        claim_seconds = time.monotonic() - t0
        if claimed is None:
            if all(slots.finished(s, p, sweep.retry) for s, p in loaded.values()):
                break
            time.sleep(POLL_SECONDS)
            continue
        if handoff is not None:
            handoff.publish({"experiment": name, "claim": asdict(claimed)})
        _run_trial(sweep, study, p, results / name, claimed, stop, claim_seconds)
    if handoff is not None:
        handoff.publish(None)
    if stop.signal == signal.SIGUSR1:
        _requeue_self()
    return EXIT_STOPPED if stop.requested else 0


def _follow(plans: dict[str, Plan], results: Path, handoff: _Handoff, stop: _Stop) -> int:
    while True:
        message = handoff.receive()
        if message is None:
            return EXIT_STOPPED if stop.requested else 0
        p = plans[message["experiment"]]
        claim = Claim(**message["claim"])
        config = p.config(claim.variant, claim.params, claim.seed)
        try:
            train(
                config,
                results / p.name / str(claim.origin),
                callbacks=_callbacks(stop, None, p, _prunes(p, claim)),
                plugins=_plugins(),
            )
        except StopRun:
            pass
        except Exception:  # rank 0 records the failure; this rank goes on with the next trial
            traceback.print_exc()


def _run_trial(
    sweep: Sweep,
    study: optuna.Study,
    p: Plan,
    exp_dir: Path,
    claim: Claim,
    stop: _Stop,
    claim_seconds: float,
) -> None:
    """Train one claimed trial and report it, as the one writer of its run directory
    (:mod:`ablations.run.writer`): the directory's lock is taken before anything is written
    (waiting up to ``retry.grace_seconds`` for a reaped holder to stop), and every write checks
    that this worker's lease is still its own. A worker whose trial was reaped while it was
    stopped stops at its next write and ends the trial quietly: the retry owns it."""
    run_dir = exp_dir / str(claim.origin)
    fence = leases.fence(exp_dir, claim.number)
    try:
        with writer.exclusive(run_dir, fence, wait=sweep.retry.grace_seconds):
            _run_owned(sweep, study, p, exp_dir, claim, stop, claim_seconds)
    except writer.LeaseLost as e:
        log.warning(
            "trial %d: %s; stopped without writing (its retry owns the run)", claim.number, e
        )
    except writer.WriterBusy as e:  # a reaped holder still runs: hand the trial back, uncounted
        storage = study_storage(study)
        storage.set_trial_user_attr(claim.trial_id, "status", Status.PREEMPTED)
        storage.set_trial_user_attr(claim.trial_id, "error", one_line(e, limit=500))
        study.tell(claim.number, state=TrialState.FAIL)
        queue_retries(study, sweep, exp_dir)
        log.warning("trial %d: %s; handed back", claim.number, e)


def _run_owned(
    sweep: Sweep,
    study: optuna.Study,
    p: Plan,
    exp_dir: Path,
    claim: Claim,
    stop: _Stop,
    claim_seconds: float,
) -> None:
    """:func:`_run_trial`'s work, under the run directory's lock. ``user_attrs`` get the
    outcome and the timings the overhead benchmark reads: ``fit_seconds`` (inside
    ``Trainer.fit``), ``trial_seconds`` (claim to report) and ``claim_seconds``."""
    run_dir = exp_dir / str(claim.origin)
    info = read_json(run_dir / "trial.json") or {}
    config = p.config(claim.variant, claim.params, claim.seed)
    source = reuse.find(exp_dir.parent, config, run_dir)
    if source is not None:
        reuse.adopt(source, run_dir)
        info["reused_from"] = os.path.relpath(source, exp_dir.parent)
    writer.check()
    write_json(
        run_dir / "trial.json",
        {
            "experiment": p.name,
            "trial": claim.origin,
            "attempts": sorted({*info.get("attempts", []), *claim.attempts}),
            "variant": claim.variant,
            "stage": claim.stage,
            "seed": claim.seed,
            "slot": claim.slot,
            "toggles": p.all_variants[claim.variant],
            "params": claim.params,
            **({"reused_from": info["reused_from"]} if "reused_from" in info else {}),
        },
    )
    trial = optuna.Trial(study, claim.trial_id)  # reports the validation curve
    prune = _prunes(p, claim)
    outpaced_at = None
    if p.experiment.rank == "first_target" and claim.stage == "tune":
        outpaced_at = outpace_bound(study, p, claim.variant, total_steps(config))
    storage = study_storage(study)
    attrs: dict[str, Any] = {}
    state, value = TrialState.COMPLETE, None
    t0 = time.monotonic()
    with Heartbeat(study, claim, exp_dir, sweep, sweep.retry.heartbeat_seconds):
        try:
            result = train(
                config,
                run_dir,
                callbacks=_callbacks(stop, trial, p, prune, outpaced_at),
                plugins=_plugins(),
            )
        except StopRun as e:
            if e.status == Status.PRUNED:
                state, attrs = TrialState.PRUNED, {"status": Status.PRUNED, "reason": str(e)}
            else:  # stopped at a signal after a checkpoint: retried from it
                state, attrs = TrialState.FAIL, {"status": Status.PREEMPTED, "error": str(e)}
        except SystemExit as e:  # a signal that reached Lightning's handler before ours
            if not stop.requested:
                raise
            state, attrs = TrialState.FAIL, {"status": Status.PREEMPTED, "error": repr(e)}
        except Exception as e:
            traceback.print_exc()
            error = one_line(e, limit=500)  # a study attribute stays small
            state, attrs = TrialState.FAIL, {"status": Status.FAILED, "error": error}
        else:
            objective = (result.get("val") or {}).get(p.experiment.objective)
            diverged = result["status"] == Status.DIVERGED or objective is None
            value = math.inf if diverged else float(objective)
            if p.experiment.rank == "first_target" and not diverged:
                value = first_target_rank(Curves(run_dir).read("val"), p.experiment, config)
            status = Status.DIVERGED if diverged else Status.COMPLETE
            attrs = {"status": status, "step": result.get("step")}
            if not diverged:  # what extend's outcome reads (the value may be a rank)
                attrs["final"] = float(objective)
            if result.get("reason"):
                attrs["reason"] = result["reason"]
            fit = (result.get("metrics") or {}).get("wall_time")
            if fit is not None:
                attrs["fit_seconds"] = fit
            if "reused_from" in info:
                attrs["reused_from"] = info["reused_from"]
            else:
                reuse.record(exp_dir.parent, config, run_dir)
    attrs["trial_seconds"] = time.monotonic() - t0
    attrs["claim_seconds"] = claim_seconds
    try:
        for key, v in attrs.items():
            storage.set_trial_user_attr(claim.trial_id, key, v)
        study.tell(claim.number, values=value, state=state)
    except (RuntimeError, ValueError) as e:  # reaped meanwhile: its retry owns the slot now
        log.warning("trial %d was finished elsewhere (%s); result dropped", claim.number, e)
    if attrs["status"] in RETRIED:
        queue_retries(study, sweep, exp_dir)  # at once: this worker is about to exit
    log.info("trial %d (%s) %s %s", claim.number, claim.slot, attrs.get("status"), value)
    print(
        json.dumps({"trial": claim.number, "slot": claim.slot, **attrs, "value": value}), flush=True
    )


def _requeue_self() -> None:
    env = os.environ
    job = env.get("SLURM_JOB_ID")
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    if job and int(env.get("SLURM_PROCID", "0")) == 0:
        subprocess.run(["scontrol", "requeue", job], check=False, timeout=60)
