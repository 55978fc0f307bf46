"""Who holds which trial: a worker's :class:`Claim`, the lease file that says its worker is alive,
the lease's renewal while the trial runs (:class:`Heartbeat`), and reaping trials whose worker
is gone (:func:`reap`).

A claimed trial is ``RUNNING`` and holds a lease (``.leases/<number>.json``, renewed by the
worker). A trial whose worker is gone (same host and dead pid, SLURM job no longer running, or a
lease older than the grace period) is failed as ``lost`` (:mod:`ablations.core.status`); the next
claim re-queues it with the same parameters and Optuna's retry attributes
(:mod:`ablations.sweep.schedule`). With an RDB storage, Optuna's own heartbeat and stale-trial
callback do the same.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ablations.core.fileio import read_json, write_json
from ablations.core.internals import study_storage, trial_id
from ablations.core.status import Status
from ablations.sweep.slots import GRANTS, crashes
from ablations.sweep.spec import RetryConfig, Sweep


@dataclass
class Claim:
    """A trial a worker has claimed: its slot, parameters, and the directory (``origin``) it
    runs in; ``attempts``: every trial number of the slot so far, this one last."""

    number: int
    trial_id: int
    origin: int
    variant: str
    stage: str
    seed: int
    slot: str
    params: dict[str, Any]
    attempts: list[int]


def _lease_path(exp_dir: Path, number: int) -> Path:
    return exp_dir / ".leases" / f"{number}.json"


def write_lease(exp_dir: Path, number: int) -> None:
    """Take the lease of trial ``number`` for this process (host, pid, SLURM job)."""
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


def fence(exp_dir: Path, number: int) -> Callable[[], str | None]:
    """The fence of trial ``number``'s writer (:mod:`ablations.run.writer`): None while its
    lease file exists and names this process, else why not (reaped as lost: the retry owns the
    run directory)."""
    path = _lease_path(exp_dir, number)

    def owned() -> str | None:
        lease = read_json(path, tolerant=True)
        if lease is None:
            return f"the lease of trial {number} was taken (reaped as lost)"
        if lease.get("pid") != os.getpid() or lease.get("host") != socket.gethostname():
            return f"the lease of trial {number} belongs to another process"
        return None

    return owned


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
        slot = t.user_attrs.get("slot")
        attempts = [x for x in study.get_trials(deepcopy=False) if x.user_attrs.get("slot") == slot]
        spent = crashes(attempts) + 1 - (study.user_attrs.get(GRANTS) or {}).get(slot, 0)
        if spent > sweep.retry.max_retry:  # given up: collect reports the trial as lost
            storage.set_trial_user_attr(tid, "given_up", True)
            why += f"; lost {spent} times, more than retry.max_retry = {sweep.retry.max_retry}"
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
