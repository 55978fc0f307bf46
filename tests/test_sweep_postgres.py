"""The sweep on Optuna's RDB storage, on a real PostgreSQL server: a worker killed mid-trial
stops its heartbeat, Optuna's stale-trial callback queues the retry, and the retry resumes the
original trial's curve from its checkpoint."""

from __future__ import annotations

import os
import signal

import optuna
import pytest
from optuna.trial import TrialState
from sweep_files import start_worker, steps, wait_for, workload, write_sweep

pytestmark = pytest.mark.slow


def test_heartbeat_retry_on_postgresql_resumes_the_killed_trial(tmp_path, postgres, embedded_cache):
    cache, _ = embedded_cache
    file = write_sweep(
        tmp_path,
        {
            "pg": {
                "workload": workload(cache, steps=40, checkpoint_every=5),
                "variants": {"named": {"only": {}}},
                "seeds": 3,
            }
        },
        storage=postgres,
        retry={"max_retry": 2, "heartbeat_seconds": 1, "grace_seconds": 3},
    )
    from ablations.sweep import driver
    from ablations.sweep.spec import load_sweep

    driver.prepare_experiments(load_sweep(file), ["pg"], tmp_path / "results")
    run = tmp_path / "results" / "pg" / "0"
    with open(tmp_path / "workers.log", "a") as log:
        first = start_worker(file, tmp_path, "pg", log)
        wait_for(lambda: len(steps(run)) >= 12, 300, "12 steps of trial 0")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
        study = optuna.load_study(study_name="pg", storage=postgres)
        assert study.get_trials()[0].state == TrialState.RUNNING
        more = [start_worker(file, tmp_path, "pg", log) for _ in range(2)]
        for w in more:
            assert w.wait(timeout=600) == 0, (tmp_path / "workers.log").read_text()[-3000:]
    trials = optuna.load_study(study_name="pg", storage=postgres).get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["slot"] for t in done) == [f"only/seed/{s}" for s in range(3)]
    assert trials[0].state == TrialState.FAIL  # failed by Optuna's stale-trial check
    (retry,) = [t for t in done if t.system_attrs.get("failed_trial") == 0]
    assert retry.system_attrs["retry_history"] == [0]
    assert steps(run) == list(range(1, 41))  # resumed from the checkpoint: no gap, no duplicate
    assert sorted(p.name for p in run.parent.iterdir() if p.name.isdigit()) == ["0", "1", "2"]


def test_a_storage_password_reaches_no_file_no_tracker_and_no_log_line(
    tmp_path, postgres, embedded_cache
):
    """Issue 21, item 1: a sweep whose storage URL holds a password, trained with every logger
    (CSV, TensorBoard, W&B offline, MLflow): the password is in no file under the results
    folder (run files, tables, the trackers' stores) and in no line the sweep prints."""
    from sweep_files import python

    cache, _ = embedded_cache
    secret = "S3cret-Passw0rd-4217"
    url = postgres.replace("postgres@", f"postgres:{secret}@")  # trust auth: accepted, unused
    work = workload(cache, steps=4)
    loggers = ["csv", "tensorboard", "wandb", "mlflow"]
    file = write_sweep(
        tmp_path,
        {
            "secret": {
                "workload": {**work, "log": {**work["log"], "loggers": loggers}},
                "variants": {"named": {"only": {}}},
                "seeds": 1,
            }
        },
        storage=url,
    )
    # the trackers' defaults: no tracking URI or W&B service from an earlier in-process test
    # (MLflow's set_tracking_uri exports MLFLOW_TRACKING_URI, which workers rightly follow)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "WANDB_SERVICE")}
    done = python("sweep", "--file", str(file), "--local", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert secret not in done.stdout + done.stderr
    results = tmp_path / "results"
    files = [p for p in results.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files), files
    assert any(p.suffix == ".wandb" for p in files), files
    leaked = [str(p) for p in files if secret.encode() in p.read_bytes()]
    assert leaked == []
