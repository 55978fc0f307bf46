"""Nothing lost in silence (issue 22): a trial lost more than ``retry.max_retry`` times is given
up, and then counted in the summary, named in one ``error:`` line with the command that retries
it, ``lost`` in ``runs.parquet`` with its reason, and the sweep exits non-zero; preemptions never
use up the retries meant for crashes; ``--retry-lost`` grants another round."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState, create_trial
from sweep_files import (
    REPO,
    python,
    start_worker,
    steps,
    study,
    wait_for,
    workload,
    write_sweep,
)

from ablations.core.status import Status
from ablations.sweep import driver, slots
from ablations.sweep.spec import RetryConfig, load_sweep

SLOT = "only/seed/0"


def attempts(*statuses: str, grant: int | None = None) -> optuna.Study:
    """An in-memory study whose one slot had these failed attempts, oldest first."""
    s = optuna.create_study()
    for status in statuses:
        s.add_trial(
            create_trial(state=TrialState.FAIL, user_attrs={"slot": SLOT, "status": status})
        )
    if grant is not None:
        s.set_user_attr(slots.GRANTS, {SLOT: grant})
    return s


@pytest.mark.parametrize(
    ("statuses", "grant", "max_retry", "state"),
    [
        (["lost"], None, 0, "lost"),  # max_retry 0: one crash gives up
        (["lost"], None, 1, "retry"),
        (["preempted"] * 5, None, 0, "retry"),  # preemptions never count
        (["preempted", "lost", "preempted", "lost"], None, 1, "lost"),
        (["preempted", "lost", "preempted", "lost"], None, 2, "retry"),
        (["lost", "lost"], 2, 0, "retry"),  # --retry-lost: the crashes so far stop counting
        (["lost", "lost", "lost"], 2, 0, "lost"),
        (["failed"], None, 3, "done"),  # training raised: a result, not a loss
    ],
)
def test_only_crashes_use_up_retries(statuses, grant, max_retry, state):
    s = attempts(*statuses, grant=grant)
    retry = RetryConfig(max_retry=max_retry, heartbeat_seconds=1, grace_seconds=2)
    got = slots.slot_state(s.get_trials(), retry, s.user_attrs.get(slots.GRANTS))
    assert got == {SLOT: state}
    assert (slots.given_up(s, retry) == {SLOT: list(range(len(statuses)))}) == (state == "lost")


@pytest.mark.slow
def test_a_trial_lost_past_its_retries_fails_the_sweep_loudly_until_retried(
    tmp_path, embedded_cache
):
    cache, _ = embedded_cache
    file = write_sweep(
        tmp_path,
        {
            "only": {
                "workload": workload(cache, steps=40, checkpoint_every=5),
                "variants": {"named": {"only": {}}},
                "seeds": 1,
            }
        },
        retry={"max_retry": 0, "heartbeat_seconds": 1, "grace_seconds": 30},
        local={"workers": 1, "threads_per_worker": 1},
    )
    driver.prepare_experiments(load_sweep(file), ["only"], tmp_path / "results")
    exp_dir, run = tmp_path / "results" / "only", tmp_path / "results" / "only" / "0"
    with open(tmp_path / "worker.log", "w") as log:
        worker = start_worker(file, tmp_path, "only", log)
        wait_for(lambda: len(steps(run)) >= 8, 300, "8 steps of trial 0")
        os.kill(worker.pid, signal.SIGKILL)  # lost: no checkpoint of its own, no word
        worker.wait(timeout=60)

    out = python("sweep", "--file", str(file), "--local", cwd=tmp_path, timeout=600)
    assert out.returncode == 1, out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr
    assert "only: 1 trial(s) lost" in errors[0] and "(trials 0)" in errors[0]
    assert "SWEEP_FLAGS=--retry-lost" in errors[0]
    summary = json.loads((exp_dir / "summary.json").read_text())
    assert summary["only"]["lost"] == 1
    runs = pd.read_parquet(exp_dir / "runs.parquet")
    assert list(runs["status"]) == [Status.LOST]
    assert "more than retry.max_retry = 0" in runs["reason"].iloc[0]
    assert [t.state for t in study(exp_dir).get_trials()] == [TrialState.FAIL]  # no retry

    again = python("sweep", "--file", str(file), "--local", "--retry-lost", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "another round of retries for only/seed/0" in again.stdout
    assert steps(run) == list(range(1, 41))  # resumed from its checkpoint, no gap, no duplicate
    runs = pd.read_parquet(exp_dir / "runs.parquet")
    assert list(runs["status"]) == [Status.COMPLETE]
    assert json.loads((exp_dir / "summary.json").read_text())["only"]["lost"] == 0


def live_lease(exp_dir: Path, dead: list[int]) -> int | None:
    """The pid of the worker holding a lease now (a retry runs under a new trial number)."""
    for path in (exp_dir / ".leases").glob("*.json"):
        try:
            pid = json.loads(path.read_text())["pid"]
        except (OSError, ValueError, KeyError):
            continue
        if pid not in dead and Path(f"/proc/{pid}").exists():
            return pid
    return None


@pytest.mark.slow
def test_the_local_driver_outlives_more_worker_deaths_than_it_has_workers(tmp_path, embedded_cache):
    """Four ``kill -9`` of the one local worker (the old driver gave up after one restart per
    worker): each is restarted after a backoff, the trial resumes, and the sweep completes."""
    cache, _ = embedded_cache
    file = write_sweep(
        tmp_path,
        {
            "only": {
                "workload": workload(cache, steps=60, checkpoint_every=4),
                "variants": {"named": {"only": {}}},
                "seeds": 1,
            }
        },
        retry={"max_retry": 10, "heartbeat_seconds": 1, "grace_seconds": 30},
        local={"workers": 1, "threads_per_worker": 1},
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver_proc = subprocess.Popen(
        [sys.executable, "-m", "ablations", "sweep", "--file", str(file), "--local"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    exp_dir = tmp_path / "results" / "only"
    run = exp_dir / "0"
    killed = []
    try:
        for k in range(4):
            at = len(steps(run)) + 5
            wait_for(lambda at=at: len(steps(run)) >= at, 300, f"step {at} before kill {k + 1}")
            pid = wait_for(lambda: live_lease(exp_dir, killed), 120, "a live worker's lease")
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        out, err = driver_proc.communicate(timeout=600)
    finally:
        driver_proc.kill()
    assert driver_proc.returncode == 0, out + err
    assert len(set(killed)) == 4  # four different worker processes, each restarted
    assert steps(run) == list(range(1, 61))  # every step once
    trials = study(exp_dir).get_trials()
    assert [t.user_attrs.get("status") for t in trials[:-1]] == ["lost"] * 4
    assert trials[-1].state == TrialState.COMPLETE
    assert pd.read_parquet(exp_dir / "runs.parquet")["status"].tolist() == [Status.COMPLETE]


@pytest.mark.parametrize(
    ("trials", "loop"),
    [
        ([None] * 5, "5 workers in a row exited before taking a trial"),
        ([7] * 5, "trial 7 killed its worker 5 times in a row"),
        ([7, 7, 8, 7, 7], None),  # different trials: the retries decide, not a loop
        ([None] * 4, None),
    ],
)
def test_restarts_back_off_and_stop_only_on_a_crash_loop(trials, loop):
    keeper = driver.Restarts(workers=1)
    delays = []
    for trial in trials:
        delays.append(keeper.died(0, -9, trial))
        keeper.restart_at.clear()  # restarted (as due() would, once its delay passed)
    assert delays == [min(driver.BACKOFF_MAX, 2.0**k) for k in range(len(trials))]
    assert (keeper.crash_loop() is None) if loop is None else (loop in keeper.crash_loop())


def test_a_preempted_worker_is_restarted_at_once_and_never_counts_as_a_crash():
    """Exit EXIT_STOPPED (SIGTERM or USR1 from outside: its trial checkpointed and handed back,
    the lease released): six in a row restart after a second each and are no crash loop, where
    six deaths holding no trial would be one (the chaos soak's all-SIGTERM draw)."""
    from ablations.core.status import EXIT_STOPPED

    keeper = driver.Restarts(workers=1)
    for _ in range(6):
        assert keeper.died(0, EXIT_STOPPED, None) == 1.0
        keeper.restart_at.clear()
    assert keeper.crash_loop() is None and keeper.deaths == [0]
    for _ in range(5):
        keeper.died(0, -9, None)
        keeper.restart_at.clear()
    assert "exited before taking a trial" in keeper.crash_loop()
