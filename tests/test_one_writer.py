"""A run directory has one writer (``ablations.run.writer``, issue 22): a worker stopped past
the grace period is reaped while it still lives; its retry waits for the directory's lock
instead of writing beside it, and the stopped worker, once continued, stops at its next write
because its lease is gone. The directory is then checked line by line."""

from __future__ import annotations

import json
import signal
import time

import pandas as pd
import pytest
from optuna.trial import TrialState
from sweep_files import start_worker, steps, study, wait_for, workload, write_sweep

from ablations.core.status import Status
from ablations.results import collect
from ablations.run import writer
from ablations.sweep import driver
from ablations.sweep.spec import load_sweep


def test_the_lock_is_exclusive_between_processes_and_reentrant_within_one(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with writer.exclusive(tmp_path / "run"):
        with writer.exclusive(tmp_path / "run"):  # the worker's hold around train's
            pass
        other = ctx.Process(target=_try_lock, args=(str(tmp_path / "run"),))
        other.start()
        other.join(30)
        assert other.exitcode == 3  # busy while this process holds it
    other = ctx.Process(target=_try_lock, args=(str(tmp_path / "run"),))
    other.start()
    other.join(30)
    assert other.exitcode == 0


def _try_lock(run_dir: str) -> None:
    try:
        with writer.exclusive(run_dir, wait=0.5):
            raise SystemExit(0)
    except writer.WriterBusy:
        raise SystemExit(3) from None


def test_a_fence_that_says_lost_stops_the_next_write(tmp_path):
    owned = {"yes": True}
    with writer.exclusive(tmp_path, lambda: None if owned["yes"] else "reaped"):
        writer.check()
        owned["yes"] = False
        with pytest.raises(writer.LeaseLost, match="reaped"):
            writer.check()
    writer.check()  # no fence outside the hold


@pytest.mark.slow
def test_a_worker_stopped_past_the_grace_period_never_writes_beside_its_retry(
    tmp_path, embedded_cache
):
    cache, _ = embedded_cache
    file = write_sweep(
        tmp_path,
        {
            "only": {
                "workload": workload(cache, steps=48, checkpoint_every=4),
                "variants": {"named": {"only": {}}},
                "seeds": 1,
            }
        },
        retry={"max_retry": 3, "heartbeat_seconds": 1, "grace_seconds": 3},
    )
    driver.prepare_experiments(load_sweep(file), ["only"], tmp_path / "results")
    exp_dir = tmp_path / "results" / "only"
    run = exp_dir / "0"
    with open(tmp_path / "a.log", "w") as log_a, open(tmp_path / "b.log", "w") as log_b:
        a = start_worker(file, tmp_path, "only", log_a)
        wait_for(lambda: len(steps(run)) >= 10, 300, "10 steps of trial 0")
        a.send_signal(signal.SIGSTOP)  # a long pause: its lease goes stale, it keeps its lock
        stopped_at = len(steps(run))
        time.sleep(5)  # past grace_seconds
        b = start_worker(file, tmp_path, "only", log_b)
        # b reaps trial 0, claims its retry, and waits for the lock (handing it back when the
        # wait runs out) instead of writing: nothing moves while a is stopped
        wait_for(lambda: study(exp_dir).get_trials()[0].state == TrialState.FAIL, 60, "reap")
        time.sleep(8)
        assert len(steps(run)) == stopped_at
        a.send_signal(signal.SIGCONT)  # a's next write meets its lost lease: it stops there
        assert b.wait(timeout=600) == 0, (tmp_path / "b.log").read_text()[-3000:]
        assert a.wait(timeout=600) == 0, (tmp_path / "a.log").read_text()[-3000:]
    assert "stopped without writing" in (tmp_path / "a.log").read_text()
    # line by line: every step once, in order, the validations at their steps, one status
    assert steps(run) == list(range(1, 49))
    assert steps(run, "val") == [4 * k for k in range(1, 13)]
    assert steps(run, "layers") == [4 * k for k in range(1, 13)]
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    trials = study(exp_dir).get_trials()
    assert trials[0].user_attrs["status"] == "lost"
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 1
    collect(exp_dir)
    runs = pd.read_parquet(exp_dir / "runs.parquet")
    assert runs["status"].tolist() == [Status.COMPLETE]
    curves = pd.read_parquet(exp_dir / "curves.parquet")
    assert not curves.duplicated(["trial", "metric", "step"]).any()
