"""SLURM submission: one job array of workers per experiment and a dependent collect job.

The batch script starts its worker with ``srun`` (SLURM's ``--signal`` reaches job steps, and
Lightning needs ``srun`` to see the task's ranks). ``--requeue`` lets SLURM requeue a preempted
task; ``--signal=USR1@N`` warns a worker N seconds before its time limit, and the worker then
checkpoints, hands its trial back and requeues its own array task (see
:mod:`ablations.sweep.worker`). Logs go to ``<experiment>/slurm/<array job>_<task>.out``, opened
in append mode so a requeued task adds to its log. Every submission is recorded in
``slurm/submissions.json``; the collect job resubmits the array (at most ``max_resubmits`` times)
when trials are left, e.g. after an array was cancelled.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from ablations.core.fileio import read_json, write_json
from ablations.sweep.experiment import SlurmConfig, time_seconds
from ablations.sweep.plan import Plan
from ablations.sweep.slots import total_slots

SUBMISSIONS = "submissions.json"


class SubmitError(RuntimeError):
    """``sbatch`` refused a job; the message is its one-line answer."""


def _header(slurm: SlurmConfig, name: str, log: str) -> list[str]:
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --nodes={slurm.nodes}",
        f"#SBATCH --ntasks-per-node={slurm.tasks_per_node}",
        f"#SBATCH --cpus-per-task={slurm.cpus_per_task}",
        f"#SBATCH --mem={slurm.mem}",
        f"#SBATCH --time={slurm.time}",
        f"#SBATCH --output={log}",
        "#SBATCH --open-mode=append",
    ]
    for key in ("partition", "account", "qos"):
        value = getattr(slurm, key)
        if value:
            lines.append(f"#SBATCH --{key}={value}")
    if slurm.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={slurm.gpus_per_node}")
    lines += [f"#SBATCH {line}" for line in slurm.extra_sbatch]
    return lines


def worker_script(p: Plan, sweep_file: Path, workdir: Path, exp_dir: Path) -> str:
    s = p.experiment.slurm
    array = f"0-{s.array_size - 1}" + (f"%{s.parallelism}" if s.parallelism else "")
    lines = _header(s, f"ablations-{p.name}", str(exp_dir / "slurm" / "%A_%a.out"))
    lines += [
        f"#SBATCH --array={array}",
        "#SBATCH --requeue",
        f"#SBATCH --signal=USR1@{s.signal_seconds}",
        "set -eo pipefail",
        f"cd {shlex.quote(str(workdir))}",
        *s.setup,
        "export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}",
        'echo "worker ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} on $(hostname), '
        'restart ${SLURM_RESTART_COUNT:-0}"',
        # srun: the signal reaches the workers, and Lightning sees one rank per task
        "srun --kill-on-bad-exit=1 "
        + shlex.join(_python("sweep-worker", sweep_file, p.name, exp_dir.parent)),
    ]
    return "\n".join(lines) + "\n"


def collect_script(p: Plan, sweep_file: Path, workdir: Path, exp_dir: Path) -> str:
    s = p.experiment.slurm
    one = SlurmConfig(
        partition=s.partition,
        account=s.account,
        qos=s.qos,
        cpus_per_task=1,
        mem="2G",
        time="00:30:00",
        signal_seconds=60,
        extra_sbatch=tuple(
            line for line in s.extra_sbatch if not line.startswith(("--gres", "--gpus"))
        ),
    )
    lines = _header(one, f"ablations-{p.name}-collect", str(exp_dir / "slurm" / "collect_%j.out"))
    lines += [
        "set -eo pipefail",
        f"cd {shlex.quote(str(workdir))}",
        *s.setup,
        shlex.join(_python("sweep-collect", sweep_file, p.name, exp_dir.parent)),
    ]
    return "\n".join(lines) + "\n"


def _python(command: str, sweep_file: Path, name: str, results: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ablations",
        command,
        "--file",
        str(sweep_file.resolve()),
        "--results",
        str(results.resolve()),
        "--experiment",
        name,
    ]


def sbatch(script: Path, *options: str) -> str:
    """Submit ``script``; returns the job id."""
    out = subprocess.run(
        ["sbatch", "--parsable", *options, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if out.returncode != 0:
        message = " ".join((out.stderr or out.stdout).split())
        raise SubmitError(f"sbatch {script.name}: {message}")
    return out.stdout.strip().split(";")[0]


def submit(p: Plan, sweep_file: Path, workdir: Path, exp_dir: Path) -> dict[str, str]:
    """Submit the worker array and its collect job; returns and records their ids."""
    folder = exp_dir / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    worker = folder / "worker.sbatch"
    worker.write_text(worker_script(p, sweep_file, workdir, exp_dir))
    collect = folder / "collect.sbatch"
    collect.write_text(collect_script(p, sweep_file, workdir, exp_dir))
    array = sbatch(worker)
    try:
        after = sbatch(collect, f"--dependency=afterany:{array}", "--kill-on-invalid-dep=yes")
    except SubmitError:
        subprocess.run(["scancel", array], check=False, timeout=60)
        raise
    record = {"array": array, "collect": after}
    path = folder / SUBMISSIONS
    history = (read_json(path) or {"submissions": []})["submissions"]
    write_json(path, {"submissions": [*history, record]})
    return record


def submissions(exp_dir: Path) -> list[dict[str, str]]:
    return (read_json(exp_dir / "slurm" / SUBMISSIONS) or {"submissions": []})["submissions"]


def cost(p: Plan) -> str:
    """The experiment's compute at most, from its SLURM request: every trial using its whole
    time limit on ``nodes`` nodes (a bound: trials usually end sooner; the measured fit times of
    finished trials are in the study's ``fit_seconds``)."""
    s = p.experiment.slurm
    hours = total_slots(p) * time_seconds(s.time) / 3600
    if s.gpus_per_node:
        gpus = s.nodes * s.gpus_per_node
        trials = total_slots(p)
        return f"at most {hours * gpus:,.0f} GPU-hours ({trials} trials x {s.time} x {gpus} GPUs)"
    cores = s.nodes * s.tasks_per_node * s.cpus_per_task
    return (
        f"at most {hours * cores:,.0f} CPU core-hours on SLURM ({total_slots(p)} trials x "
        f"{s.time} x {cores} cores)"
    )
