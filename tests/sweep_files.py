"""Tiny sweep files for the end-to-end sweep tests (local and SLURM), and readers of their
results. Every trial is a real tiny BERT on the embedded corpus (vocabulary 512, sequence 32)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import yaml

REPO = Path(__file__).resolve().parents[1]

#: A valid workload for files that are only validated (no data, no training).
TINY = {
    "model": {"size": "tiny"},
    "data": {"vocab_size": 512},
    "phases": [
        {
            "steps": 8,
            "global_batch": 16,
            "micro_batch": 8,
            "seq_len": 32,
            "max_predictions": 5,
            "lr": 0.01,
        }
    ],
}


def workload(cache: Path, steps: int = 8, checkpoint_every: int = 4, **extra: Any) -> dict:
    return {
        "model": {"size": "tiny"},
        "data": {"vocab_size": 512, "cache_dir": str(cache)},
        "phases": [
            {
                "steps": steps,
                "global_batch": 16,
                "micro_batch": 8,
                "seq_len": 32,
                "max_predictions": 5,
                "lr": 2e-2,
                "warmup": 0.25,
            }
        ],
        "log": {"layer_every": 4, "val_every": 4, "val_batches": 2},
        "checkpoint_every": checkpoint_every,
        **extra,
    }


def write_sweep(folder: Path, experiments: dict, **top: Any) -> Path:
    raw = {
        "results": "results",
        "retry": {"heartbeat_seconds": 1, "grace_seconds": 30},
        **top,
        "experiments": experiments,
    }
    file = folder / "sweep.yaml"
    file.write_text(yaml.safe_dump(raw, sort_keys=False))
    return file


def python(*args: str, cwd: Path, env: dict | None = None, timeout: float = 600):
    """``python -m ablations ARGS`` in ``cwd`` (the repo on the path), checked by the caller."""
    env = {**(env or os.environ), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "ablations", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_worker(file: Path, cwd: Path, experiment: str, log) -> subprocess.Popen:
    """One ``sweep-worker`` process outside SLURM (one thread), its output into ``log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PYTHONPATH=str(REPO), ABLATIONS_THREADS="1")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ablations",
            "sweep-worker",
            "--file",
            str(file),
            "--experiment",
            experiment,
        ],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def study(exp_dir: Path) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend

    path = str(exp_dir / "study.journal")
    return optuna.load_study(
        study_name=exp_dir.name, storage=optuna.storages.JournalStorage(JournalFileBackend(path))
    )


def steps(run_dir: Path, kind: str = "metrics") -> list[int]:
    path = run_dir / f"{kind}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)
    return value


def curves(run_dir: Path) -> dict[str, list[dict]]:
    """A run directory's curves (metrics, validation, layers) without wall times: two runs of
    one config, resumed or not, must have these equal number for number."""
    from ablations.run.curves import Curves

    return {
        kind: [{k: v for k, v in r.items() if k != "wall_time"} for r in Curves(run_dir).read(kind)]
        for kind in ("metrics", "val", "layers")
    }
