"""``make sweep``: prepare each experiment, then run its workers on SLURM or as local processes.

Preparing experiments (:func:`prepare_experiments`) checks that their directories match the sweep
file, builds its data once (tokenizer, examples: the cache every worker then reads) and records
the unigram entropy of the masked tokens (``data.json``), creates the study and queues its slots.
It is idempotent: running ``make sweep`` again continues a sweep, whatever stopped it.

Where ``sbatch`` exists, :mod:`ablations.sweep.slurm` submits one job array of workers per
experiment plus a dependent collect job. Elsewhere :func:`run_local` starts the workers as local
processes (``local.workers``), shows the progress (:mod:`ablations.sweep.progress`), and
restarts a worker that dies while work is left (:class:`Restarts`: after a backoff, until a
crash loop).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ablations.core.fileio import read_json, write_json
from ablations.core.status import EXIT_STOPPED
from ablations.data.datamodule import BertDataModule
from ablations.run.loggers import check_loggers
from ablations.sweep import study as studies
from ablations.sweep.plan import Plan
from ablations.sweep.progress import Display, load_snapshots
from ablations.sweep.schedule import grant_retries, queue_retries
from ablations.sweep.spec import Sweep, plan


def prepare_experiments(
    sweep: Sweep, names: list[str], results: Path, retry_lost: bool = False
) -> list[Plan]:
    """Check every directory and build every experiment's data first (bad input then leaves
    nothing behind), then create and fill the studies; ``retry_lost``: give the trials given
    up another round of retries (``--retry-lost``)."""
    plans = [plan(sweep, name) for name in names]
    for p in plans:
        for variant in p.variants:  # a logger's missing package: one line, before any trial
            check_loggers(p.config(variant, {}, 0))
        studies.check_snapshot(p, results / p.name)
    references = {
        p.name: read_json(results / p.name / "data.json") or data_reference(p) for p in plans
    }
    for p in plans:
        exp_dir = results / p.name
        write_json(exp_dir / "data.json", references[p.name])
        study = studies.prepare(sweep, p, exp_dir)
        if retry_lost and (granted := grant_retries(study, sweep, exp_dir)):
            print(f"{p.name}: another round of retries for {', '.join(granted)}")
        queue_retries(study, sweep, exp_dir)
    return plans


#: Training shards the reference line of NVIDIA-shard data is computed from (evenly spread).
REFERENCE_SHARDS = 16


def data_reference(p: Plan) -> dict[str, float | int | str]:
    """Build the first variant's data (the cache the workers read) and its reference line; for
    NVIDIA's shards from a sample of :data:`REFERENCE_SHARDS` of them (this runs where the
    sweep is prepared, e.g. a login node), recorded as ``phase<i>_unigram_entropy_from``."""
    first = next(iter(p.variants))
    config = p.config(first, p.points[0] if p.points else {}, 0)
    out: dict[str, float | int | str] = {}
    for i, phase in enumerate(config.phases):
        dm = BertDataModule(config.phase_data(phase), phase, config.seed)
        dm.prepare_data()
        dm.setup("fit")
        entropy, source = dm.sampled_unigram_entropy(REFERENCE_SHARDS)
        out[f"phase{i + 1}_unigram_entropy"] = entropy
        out[f"phase{i + 1}_unigram_entropy_from"] = source
        out[f"phase{i + 1}_vocab_size"] = dm.vocab_size
        out[f"phase{i + 1}_source"] = config.phase_data(phase).source
    out["unigram_entropy"] = out["phase1_unigram_entropy"]
    out["source"] = config.data.source
    return out


def has_slurm() -> bool:
    """``sbatch`` is installed and a controller answers (installed packages alone are not a
    cluster)."""
    if shutil.which("sbatch") is None:
        return False
    try:
        ping = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return ping.returncode == 0


def worker_command(sweep_file: Path, names: list[str], results: Path) -> list[str]:
    cmd = [sys.executable, "-m", "ablations", "sweep-worker", "--file", str(sweep_file)]
    cmd += ["--results", str(results)]
    for name in names:
        cmd += ["--experiment", name]
    return cmd


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _local_env(threads: int) -> dict[str, str]:
    # Not SLURM tasks, even inside an allocation: Lightning must not see a SLURM world. Nor an
    # inherited W&B service: a worker started from a process that used W&B (a notebook, a
    # test) would talk to that process's service; each worker starts its own.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "WANDB_SERVICE"
    }
    env["ABLATIONS_THREADS"] = str(threads)
    env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_local(sweep: Sweep, sweep_file: Path, plans: list[Plan], results: Path) -> int:
    """Run the workers here until every slot of ``plans`` is finished; 0 when all are."""
    for p in plans:
        config = p.config(next(iter(p.variants)), p.points[0] if p.points else {}, 0)
        if config.devices * config.num_nodes > 1:
            print(
                f"error: experiments.{p.name}: a multi-device workload runs on SLURM only "
                "(srun starts its ranks); set devices: 1 to run it here",
                file=sys.stderr,
            )
            return 2
    names = [p.name for p in plans]
    logs = results / ".workers"
    logs.mkdir(parents=True, exist_ok=True)
    env = _local_env(sweep.local.threads_per_worker)
    procs: list[subprocess.Popen] = []

    def start(i: int) -> subprocess.Popen:
        out = open(logs / f"worker-{i}.log", "a")  # noqa: SIM115 (kept open for the child)
        return subprocess.Popen(
            worker_command(sweep_file, names, results),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Ctrl-C reaches the whole foreground group: the workers ignore it and stop on the
            # SIGTERM this driver then sends (checkpoint, trial handed back as preempted)
            preexec_fn=_ignore_sigint,
        )

    procs = [start(i) for i in range(sweep.local.workers)]
    keeper = Restarts(len(procs))
    loaded = [(studies.load(sweep, p, results / p.name), p) for p in plans]
    display = Display(names, sweep.local.workers)
    # SIGTERM (kill, timeout, a batch system) stops the sweep as Ctrl-C does: the workers are
    # stopped resumably instead of being left running without their driver
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while True:
            time.sleep(2.0)
            snapshots = load_snapshots(loaded, sweep, results)  # one read of each study
            display.update(snapshots)
            done = all(s.finished for s in snapshots)
            alive = [q for q in procs if q.poll() is None]
            if done and not alive:
                break
            if done:
                continue
            for i, q in enumerate(procs):
                if q.poll() is None:
                    continue
                if q.returncode == 0 and alive:
                    continue  # no work it could claim now; the others may leave some
                delay = keeper.died(i, q.returncode, trial_of(results, names, q.pid))
                if delay is None:
                    continue  # restart already scheduled
                if keeper.crash_loop():
                    display.close()
                    print(f"error: {keeper.crash_loop()}; see {logs}", file=sys.stderr)
                    return 1
                display.note(
                    f"worker {i} exited with {q.returncode}; restarting it in {delay:.0f} s "
                    f"(log: {logs / f'worker-{i}.log'})"
                )
            for i in keeper.due():
                procs[i] = start(i)
    except KeyboardInterrupt:
        display.close()
        for q in procs:
            q.terminate()  # SIGTERM: each checkpoints its trial and hands it back
        for q in procs:
            q.wait()
        print("interrupted: `make sweep` again continues where this stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    display.close()
    return 0


#: Seconds before a dead worker is restarted: doubling per death in a row, capped.
BACKOFF_MAX = 30.0
#: A worker that lived this long was not in a crash loop: its backoff starts over.
HEALTHY_SECONDS = 60.0
#: Deaths in a row, with no trial or of one trial, that stop the sweep as a crash loop.
CRASH_LOOP = 5


class Restarts:
    """When to restart the local workers: as long as work is left, after a backoff that doubles
    with each death in a row (1, 2, 4, ... up to :data:`BACKOFF_MAX` s), stopping only on a crash
    loop: :data:`CRASH_LOOP` deaths in a row of workers that held no trial (they die at start)
    or that all held the same trial. A trial that keeps killing its workers is otherwise given
    up by the retries (``retry.max_retry``), so the sweep ends, loudly, either way. A worker that
    exits :data:`~ablations.core.status.EXIT_STOPPED` was preempted (its trial checkpointed and
    handed back): restarted after a second, never counted as a death."""

    def __init__(self, workers: int) -> None:
        self.started = [time.monotonic()] * workers
        self.deaths = [0] * workers
        self.restart_at: dict[int, float] = {}
        self.recent: list[int | None] = []  # the trial of each death in a row (None: none)

    def died(self, i: int, code: int, trial: int | None) -> float | None:
        """Note worker ``i``'s death (exit ``code``, holding ``trial``); the seconds until its
        restart, or None when one is already scheduled."""
        if i in self.restart_at:
            return None
        now = time.monotonic()
        if code == EXIT_STOPPED:  # preempted by someone else's signal: handed back, no crash
            self.restart_at[i] = now + 1.0
            return 1.0
        if now - self.started[i] >= HEALTHY_SECONDS:
            self.deaths[i] = 0
            self.recent = []
        self.deaths[i] += 1
        self.recent.append(trial)
        delay = min(BACKOFF_MAX, 2.0 ** (self.deaths[i] - 1))
        self.restart_at[i] = now + delay
        return delay

    def crash_loop(self) -> str | None:
        """Why the workers are in a crash loop, or None."""
        last = self.recent[-CRASH_LOOP:]
        if len(last) < CRASH_LOOP or len(set(last)) != 1:
            return None
        if last[0] is None:
            return f"crash loop: {CRASH_LOOP} workers in a row exited before taking a trial"
        return f"crash loop: trial {last[0]} killed its worker {CRASH_LOOP} times in a row"

    def due(self) -> list[int]:
        """The workers whose restart time has come (each then counts as started)."""
        now = time.monotonic()
        ready = [i for i, at in self.restart_at.items() if at <= now]
        for i in ready:
            del self.restart_at[i]
            self.started[i] = now
        return ready


def trial_of(results: Path, names: list[str], pid: int) -> int | None:
    """The trial whose lease worker ``pid`` held (a lease outlives its killed worker)."""
    for name in names:
        for path in sorted((results / name / ".leases").glob("*.json")):
            lease = read_json(path, tolerant=True) or {}
            if lease.get("pid") == pid and lease.get("host") == socket.gethostname():
                return int(path.stem)
    return None


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
