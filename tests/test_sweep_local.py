"""The sweep with local workers, end to end with real training: six workers on one journal file,
a diverging variant, a worker killed with SIGKILL and one stopped with SIGTERM mid-trial."""

from __future__ import annotations

import json
import math
import os
import signal

import pandas as pd
import pytest
from optuna.trial import TrialState
from sweep_files import REPO, python, start_worker, steps, study, wait_for, workload, write_sweep

pytestmark = pytest.mark.slow


def test_six_local_workers_every_trial_once_and_divergence_is_a_result(tmp_path, embedded_cache):
    cache, _ = embedded_cache
    file = write_sweep(
        tmp_path,
        {
            "mix": {
                "workload": workload(cache),
                "variants": {
                    "named": {
                        "clip": {"optimizer.overrides.prenorm": "clip"},
                        "none": {"optimizer.overrides.prenorm": "none"},
                        "boom": {"phases.0.lr": 1.0e4},  # diverges: a result, not a crash
                    }
                },
                "seeds": 3,
            }
        },
        local={"workers": 6, "threads_per_worker": 1},
    )
    out = python("sweep", "--file", str(file), "--local", cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "mix: 9/9 done" in out.stdout
    exp_dir = tmp_path / "results" / "mix"
    trials = study(exp_dir).get_trials()
    assert len(trials) == 9 and all(t.state == TrialState.COMPLETE for t in trials)
    slots = sorted(t.user_attrs["slot"] for t in trials)
    assert slots == sorted(f"{v}/seed/{s}" for v in ("clip", "none", "boom") for s in range(3))
    workers = {
        json.loads((exp_dir / str(t.number) / "meta.json").read_text())["attempts"][0]["argv"][0]
        for t in trials
    }
    assert workers  # each trial directory was written by a worker
    for t in trials:
        run = exp_dir / str(t.number)
        assert steps(run) == list(range(1, len(steps(run)) + 1))  # no gap, no duplicate
        info = json.loads((run / "trial.json").read_text())
        assert (info["variant"], info["seed"], info["attempts"]) == (
            t.user_attrs["variant"],
            t.user_attrs["seed"],
            [t.number],
        )
        status = json.loads((run / "status.json").read_text())["status"]
        if t.user_attrs["variant"] == "boom":
            assert status == "diverged" == t.user_attrs["status"] and t.value == math.inf
        else:
            assert status == "complete" == t.user_attrs["status"]
            assert math.isfinite(t.value) and steps(run)[-1] == 8
    summary = json.loads((exp_dir / "summary.json").read_text())
    assert summary["boom"]["diverged"] == 3 and summary["boom"]["mean"] is None
    assert summary["clip"]["diverged"] == 0 and len(summary["clip"]["seed_values"]) == 3
    # ranked worst: every finite value beats a divergence
    ranked = sorted(trials, key=lambda t: t.value)
    assert [t.user_attrs["variant"] for t in ranked[-3:]] == ["boom"] * 3
    data = json.loads((exp_dir / "data.json").read_text())
    assert 3.0 < data["unigram_entropy"] < math.log(512)
    # the collect step's tables agree with the study and the trial files ...
    import pandas as pd

    from ablations.analysis import notebooks as figures

    runs = pd.read_parquet(exp_dir / "runs.parquet")
    assert len(runs) == len(trials) and set(runs["trial"]) == {t.number for t in trials}
    assert runs.set_index("trial")["status"].to_dict() == {
        t.number: t.user_attrs["status"] for t in trials
    }
    curves = pd.read_parquet(exp_dir / "curves.parquet")
    for column in (
        "experiment",
        "trial",
        "attempt",
        "variant",
        "optimizer.overrides.prenorm",
        "phases.0.lr",
        "seed",
        "phase",
        "step",
        "samples",
        "wall_time",
        "metric",
        "value",
    ):
        assert column in curves.columns, column
    train_rows = curves[curves["metric"] == "train/loss"]
    assert len(train_rows) == sum(len(steps(exp_dir / str(t.number))) for t in trials)
    # ... and a notebook runs on them in a real kernel
    out = tmp_path / "figures"
    figures.execute(figures.Job("compare_variants", "mix"), exp_dir.parent, out)
    assert (out / "mix" / "compare_variants_loss.png").stat().st_size > 10_000
    # six processes, nine trials: several workers shared the work through the study
    logs = [p.read_text() for p in (tmp_path / "results" / ".workers").glob("worker-*.log")]
    assert len(logs) == 6 and sum('"trial":' in log for log in logs) >= 2
    _check_the_study_as_optuna_users_read_it(file, tmp_path, exp_dir)


def _check_the_study_as_optuna_users_read_it(file, tmp_path, exp_dir):
    """Optuna's public API finds every toggle as a parameter of its own (a categorical with the
    experiment's values) and the validation curve as intermediate values; optuna-dashboard,
    started by ``python -m ablations dashboard``, serves the same study on 127.0.0.1."""
    import socket
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    import optuna

    s = study(exp_dir)
    lr_values = {"clip": 2e-2, "none": 2e-2, "boom": 1.0e4}
    for t in s.get_trials():
        variant = t.user_attrs["variant"]
        assert t.params["variant"] == variant
        expected = "clip" if variant in ("clip", "boom") else "none"  # boom: the preset's clip
        assert t.params["optimizer.overrides.prenorm"] == expected, (variant, t.params)
        assert t.params["phases.0.lr"] == lr_values[variant]
        dist = t.distributions["optimizer.overrides.prenorm"]
        assert isinstance(dist, optuna.distributions.CategoricalDistribution)
        assert set(dist.choices) == {"clip", "none"}
        if variant != "boom":  # validations at steps 4 and 8, reported as they came
            assert sorted(t.intermediate_values) == [4, 8]
            assert t.intermediate_values[8] == pytest.approx(t.value)
    importance = optuna.importance.get_param_importances(
        s, params=["optimizer.overrides.prenorm"], target=lambda t: min(t.value, 1e3)
    )
    assert list(importance) == ["optimizer.overrides.prenorm"]

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "ablations", "dashboard", "--file", str(file)]
    server = subprocess.Popen(
        [*cmd, "--experiment", "mix", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def studies_json():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies") as r:
                    return json.loads(r.read())
            except OSError:
                return None

        journal = (exp_dir / "study.journal").read_bytes()
        listed = wait_for(studies_json, 60, "optuna-dashboard to answer")
        assert [x["study_name"] for x in listed["study_summaries"]] == ["mix"]
        study_id = listed["study_summaries"][0]["study_id"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study_id}") as r:
            served = json.loads(r.read())
        assert len(served["trials"]) == 9
        names = {p["name"] for t in served["trials"] for p in t["params"]}
        assert {"optimizer.overrides.prenorm", "phases.0.lr"} <= names
        assert "variant" not in names  # its toggles stand for it (parameter importance)
        # the dashboard may not delete or create anything: the journal stays as it was
        for method, path in (("DELETE", f"/api/studies/{study_id}"), ("POST", "/api/studies")):
            body = json.dumps({"study_name": "x", "directions": ["minimize"]}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}{path}",
                data=body,
                method=method,
                headers={"Content-Type": "application/json"},
            )
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(request)
        assert (exp_dir / "study.journal").read_bytes() == journal
    finally:
        server.terminate()
        server.wait(timeout=30)


def _start_worker(file, tmp_path):
    return start_worker(file, tmp_path, "long", open(tmp_path / "worker.log", "a"))  # noqa: SIM115


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_killed_worker_s_trial_resumes_from_its_checkpoint(tmp_path, embedded_cache, sig):
    cache, _ = embedded_cache
    file = write_sweep(
        tmp_path,
        {
            "long": {
                "workload": workload(cache, steps=40, checkpoint_every=5),
                "variants": {"named": {"only": {}}},
                "seeds": 1,
            }
        },
    )
    prepared = python("sweep", "--file", str(file), "--dry-run", cwd=tmp_path)
    assert prepared.returncode == 0, prepared.stderr
    from ablations.sweep import driver
    from ablations.sweep.spec import load_sweep

    driver.prepare_experiments(load_sweep(file), ["long"], tmp_path / "results")
    run = tmp_path / "results" / "long" / "0"
    worker = _start_worker(file, tmp_path)
    wait_for(lambda: len(steps(run)) >= 12, 300, "12 steps of trial 0")
    worker.send_signal(sig)
    code = worker.wait(timeout=120)
    done_before = steps(run)
    assert 12 <= len(done_before) < 40
    s = study(tmp_path / "results" / "long")
    first = s.get_trials()[0]
    if sig == signal.SIGTERM:
        # a clean stop: checkpoint at the current step, trial handed back at once
        assert code == 3
        assert first.state == TrialState.FAIL and first.user_attrs["status"] == "preempted"
        assert json.loads((run / "status.json").read_text())["status"] == "interrupted"
        assert (run / "checkpoints" / "phase1" / "last.ckpt").exists()
        assert len(s.get_trials()) == 2 and s.get_trials()[1].state == TrialState.WAITING
    else:
        assert code == -signal.SIGKILL
        assert first.state == TrialState.RUNNING  # until a worker notices
    second = _start_worker(file, tmp_path)
    assert second.wait(timeout=600) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    trials = study(tmp_path / "results" / "long").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    lost, retry = trials
    assert lost.user_attrs["status"] == ("preempted" if sig == signal.SIGTERM else "lost")
    assert retry.system_attrs["failed_trial"] == 0 and retry.user_attrs["slot"] == "only/seed/0"
    assert not (run.parent / "1").exists()  # the retry ran in the original trial's directory
    assert steps(run) == list(range(1, 41))  # resumed: no gap, no duplicate step
    assert steps(run, "val") == [4 * k for k in range(1, 11)]
    info = json.loads((run / "trial.json").read_text())
    assert info["attempts"] == [0, 1]
    assert len(json.loads((run / "meta.json").read_text())["attempts"]) == 2
    assert json.loads((run / "status.json").read_text())["status"] == "complete"


def test_pruned_tuning_trials_count_in_the_budget_and_seed_reruns_are_never_pruned(
    tmp_path, embedded_cache
):
    cache, _ = embedded_cache
    file = write_sweep(
        tmp_path,
        {
            "pruned": {
                "workload": workload(cache, steps=12),
                "variants": {"named": {"only": {}}},
                "tune": {"phases.0.lr": {"low": 1e-5, "high": 1.0, "log": True}},
                "search": {"method": "qmc", "budget": 6, "seed": 1},
                "pruner": {"type": "median", "n_startup_trials": 1},
                "seeds": 2,
            }
        },
        local={"workers": 1, "threads_per_worker": 1},
    )
    out = python("sweep", "--file", str(file), "--local", cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "pruned: 8/8 done" in out.stdout
    exp_dir = tmp_path / "results" / "pruned"
    trials = study(exp_dir).get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.params, t.intermediate_values) for t in trials]
    for t in pruned:
        assert t.user_attrs["status"] == "pruned" and t.user_attrs["stage"] == "tune"
        status = json.loads((exp_dir / str(t.number) / "status.json").read_text())
        assert status["status"] == "pruned"
        assert steps(exp_dir / str(t.number))[-1] < 12  # stopped early
        assert set(t.intermediate_values) <= {4, 8}
    seeds = [t for t in trials if t.user_attrs["stage"] == "seed"]
    assert len(seeds) == 2 and all(t.state == TrialState.COMPLETE for t in seeds)
    # reported (the dashboard's learning curves: validations at 4, 8, 12) but never pruned
    assert all(sorted(t.intermediate_values) == [4, 8, 12] for t in seeds)


def test_an_identical_run_in_another_experiment_is_adopted_not_retrained(tmp_path, embedded_cache):
    """``b``'s ``same`` variant is ``a``'s clip run (the same config, seed included): trained
    once, linked into ``b`` with ``reused_from``; ``b``'s other variant trains. Named variants
    crossed with a grid name their runs ``<named>,<grid point>``."""
    cache, _ = embedded_cache
    base = workload(cache, optimizer={"preset": "nvlamb", "overrides": {"prenorm": "clip"}})
    file = write_sweep(
        tmp_path,
        {
            "a": {
                "workload": base,
                "variants": {"grid": {"optimizer.overrides.prenorm": ["clip", "none"]}},
                "seeds": 1,
            },
            "b": {
                "workload": base,
                "variants": {
                    "named": {"same": {}, "other_lr": {"phases.0.lr": 1.0e-2}},
                    "grid": {"optimizer.preset": ["nvlamb"]},
                },
                "seeds": 1,
            },
        },
        local={"workers": 1, "threads_per_worker": 1},
    )
    out = python("sweep", "--file", str(file), "--local", cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    results = tmp_path / "results"
    a_trials = {t.user_attrs["variant"]: t for t in study(results / "a").get_trials()}
    b_trials = {t.user_attrs["variant"]: t for t in study(results / "b").get_trials()}
    assert sorted(b_trials) == ["other_lr,preset=nvlamb", "same,preset=nvlamb"]
    source = results / "a" / str(a_trials["prenorm=clip"].number)
    same = results / "b" / str(b_trials["same,preset=nvlamb"].number)
    info = json.loads((same / "trial.json").read_text())
    assert info["reused_from"] == f"a/{a_trials['prenorm=clip'].number}"
    assert b_trials["same,preset=nvlamb"].user_attrs["reused_from"] == info["reused_from"]
    assert b_trials["same,preset=nvlamb"].value == a_trials["prenorm=clip"].value
    for name in ("metrics.jsonl", "val.jsonl", "layers.jsonl", "status.json"):
        assert (same / name).read_bytes() == (source / name).read_bytes()
        assert (same / name).stat().st_ino == (source / name).stat().st_ino  # linked, not copied
    assert json.loads((same / "trial.json").read_text())["experiment"] == "b"  # its own
    other = results / "b" / str(b_trials["other_lr,preset=nvlamb"].number)
    assert "reused_from" not in json.loads((other / "trial.json").read_text())
    assert steps(other) == list(range(1, 9))
    # the tidy table says which run was adopted, and from where
    runs = pd.read_parquet(results / "b" / "runs.parquet").set_index("variant")
    assert runs.loc["same,preset=nvlamb", "reused_from"] == info["reused_from"]
    assert pd.isna(runs.loc["other_lr,preset=nvlamb", "reused_from"])
    # the trained run's config differs: its curve is its own
    assert (other / "metrics.jsonl").read_bytes() != (source / "metrics.jsonl").read_bytes()


def test_sigterm_to_the_driver_stops_its_workers_resumably(tmp_path, embedded_cache):
    """``kill`` / ``timeout`` on ``make sweep`` (SIGTERM to the driver) stops like Ctrl-C: the
    workers checkpoint and hand their trials back (preempted), none outlives the driver."""
    import subprocess
    import sys
    import time

    cache, _ = embedded_cache
    file = write_sweep(
        tmp_path,
        {
            "slow": {
                "workload": workload(cache, steps=400, checkpoint_every=50),
                "variants": {"grid": {"optimizer.overrides.prenorm": ["clip", "none"]}},
                "seeds": 1,
            }
        },
        local={"workers": 2, "threads_per_worker": 1},
    )
    log = tmp_path / "driver.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "w") as out:
        driver = subprocess.Popen(
            [sys.executable, "-m", "ablations", "sweep", "--file", str(file), "--local"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        exp = tmp_path / "results" / "slow"
        wait_for(lambda: len(steps(exp / "0")) > 20 and len(steps(exp / "1")) > 20, 300, "steps")
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=120) == 130, log.read_text()[-2000:]
    time.sleep(1)
    ps = subprocess.run(["pgrep", "-f", f"sweep-worker.*{tmp_path}"], capture_output=True)
    assert ps.stdout == b""  # no worker outlives the driver
    failed = [t for t in study(exp).get_trials() if t.state.name == "FAIL"]
    assert sorted(t.user_attrs["status"] for t in failed) == ["preempted", "preempted"]
