"""A chaos soak of the local sweep (issue 22): while a sweep of six short trials runs, its workers
are hit by seeded random faults (SIGKILL; SIGSTOP held past the grace period, then SIGCONT;
SIGTERM). Afterwards every trial is complete exactly once, every curve step is there once, and
every run's curves equal those of the same sweep run undisturbed, number for number (exact
resume). ``CHAOS_SEED`` replays a failure; the fault log says which fault hit which trial at
which step."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from optuna.trial import TrialState
from sweep_files import REPO, curves, steps, study, workload, write_sweep

from ablations.core.status import Status

FAULTS = 6  # faults aimed at per soak, one every few seconds while trials train
MIN_FAULTS = 4  # delivered at least (the sweep may end first on a fast machine)
GRACE = 3  # retry.grace_seconds: a SIGSTOP is held past it
STEPS = 64  # per trial: a fault lands mid-training


def sweep_file(folder: Path, cache: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_sweep(
        folder,
        {
            "soak": {
                "workload": workload(cache, steps=STEPS, checkpoint_every=4),
                "variants": {"grid": {"phases.0.lr": [0.01, 0.015, 0.02, 0.025, 0.03, 0.04]}},
                "seeds": 1,
            }
        },
        retry={"max_retry": 20, "heartbeat_seconds": 1, "grace_seconds": GRACE},
        local={"workers": 2, "threads_per_worker": 1},
    )


def run_sweep(folder: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ablations", "sweep", "--file", "sweep.yaml", "--local"],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def holders(exp_dir: Path) -> dict[int, int]:
    """Live worker pid -> the trial whose lease it holds."""
    out = {}
    for path in (exp_dir / ".leases").glob("*.json"):
        try:
            pid = json.loads(path.read_text())["pid"]
        except (OSError, ValueError, KeyError):
            continue
        if Path(f"/proc/{pid}").exists():
            out[pid] = int(path.stem)
    return out


@pytest.mark.slow
def test_a_sweep_under_random_worker_faults_gives_the_undisturbed_results(
    tmp_path, embedded_cache, capsys
):
    cache, _ = embedded_cache
    seed = int(os.environ.get("CHAOS_SEED", "20261206"))
    rng = random.Random(seed)
    calm = tmp_path / "calm"
    sweep_file(calm, cache)
    reference = run_sweep(calm)
    out, _ = reference.communicate(timeout=900)
    assert reference.returncode == 0, out

    chaos = tmp_path / "chaos"
    sweep_file(chaos, cache)
    exp_dir = chaos / "results" / "soak"
    proc = run_sweep(chaos)
    log: list[str] = []
    counts = {"SIGKILL": 0, "SIGSTOP": 0, "SIGTERM": 0}
    try:
        deadline = time.monotonic() + 600
        while sum(counts.values()) < FAULTS and proc.poll() is None:
            assert time.monotonic() < deadline, "\n".join(log)
            time.sleep(rng.uniform(1.5, 3.5))
            live = holders(exp_dir)
            if not live:
                continue
            pid = rng.choice(sorted(live))
            trial = live[pid]
            origin = study(exp_dir).get_trials()[trial].system_attrs.get("failed_trial", trial)
            at = len(steps(exp_dir / str(origin)))
            if not 0 < at < STEPS - 4:
                continue  # still building the model, or about to finish: not mid-training
            fault = rng.choice(sorted(counts))
            log.append(f"{fault} -> worker {pid} (trial {trial}, run {origin}) after step {at}")
            counts[fault] += 1
            if fault == "SIGSTOP":
                os.kill(pid, signal.SIGSTOP)
                time.sleep(GRACE + 2)  # past the grace period: reaped while alive
                os.kill(pid, signal.SIGCONT)
            else:
                os.kill(pid, getattr(signal, fault))
        out, _ = proc.communicate(timeout=900)
    finally:
        proc.kill()
    fault_log = "\n".join([f"CHAOS_SEED={seed}", *log])
    assert proc.returncode == 0, fault_log + "\n" + out[-3000:]
    assert sum(counts.values()) >= MIN_FAULTS, fault_log  # each hit a worker mid-training

    trials = study(exp_dir).get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["slot"] for t in done) == sorted(
        t.user_attrs["slot"] for t in study(calm / "results" / "soak").get_trials()
    ), fault_log  # every trial complete exactly once
    retries = sum("failed_trial" in t.system_attrs for t in trials)
    runs = pd.read_parquet(exp_dir / "runs.parquet")
    assert (runs["status"] == Status.COMPLETE).all(), fault_log
    calm_runs = pd.read_parquet(calm / "results" / "soak" / "runs.parquet")
    by_variant = dict(zip(calm_runs["variant"].astype(str), calm_runs["trial"], strict=True))
    for variant, trial in zip(runs["variant"].astype(str), runs["trial"], strict=True):
        mine = exp_dir / str(trial)
        theirs = calm / "results" / "soak" / str(by_variant[variant])
        assert steps(mine) == list(range(1, STEPS + 1)), (variant, fault_log)
        assert curves(mine) == curves(theirs), (variant, fault_log)  # exact, given exact resume
    with capsys.disabled():  # the counts in CI's output
        print(
            f"\nchaos soak (CHAOS_SEED={seed}): {sum(counts.values())} faults "
            f"({', '.join(f'{n} {k}' for k, n in counts.items())}), {len(done)} trials, "
            f"{retries} retries\n  " + "\n  ".join(log)
        )
