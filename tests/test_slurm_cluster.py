"""End-to-end checks of ``ablations/slurm/local_cluster.sh`` on the session's cluster
(``tests/slurm_cluster.py``, fixture ``cluster``)."""

from __future__ import annotations

import os
import re

import pytest

pytestmark = pytest.mark.slow


def test_sinfo_shows_the_node(cluster):
    out = cluster.run("sinfo", "-h", "-o", "%P %a %t %N")
    assert re.search(r"^cpu\* up (idle|mix|alloc) localhost$", out, re.M), out


def test_batch_job_writes_its_output(cluster, tmp_path):
    out = tmp_path / "hello.out"
    # --requeue and --signal are what the sweep's job scripts use: both must be accepted
    job = cluster.sbatch("--requeue", "--signal=USR1@60", "-o", str(out), "--wrap", "echo hello")
    assert cluster.wait(job) == ["COMPLETED"]
    assert out.read_text().strip() == "hello"


def test_job_array_runs_every_task(cluster, tmp_path):
    job = cluster.sbatch(
        "--array=0-3%2",
        "-o",
        str(tmp_path / "task-%a.out"),
        "--wrap",
        "echo task $SLURM_ARRAY_TASK_ID",
    )
    states = cluster.wait(job)
    assert states == ["COMPLETED"] * 4, states
    for i in range(4):
        assert (tmp_path / f"task-{i}.out").read_text().strip() == f"task {i}"


def test_scancel_ends_a_running_job(cluster, tmp_path):
    job = cluster.sbatch("-o", str(tmp_path / "sleep.out"), "--wrap", "sleep 300")
    cluster.wait(job, until={"RUNNING"})
    cluster.run("scancel", job)
    assert cluster.wait(job, timeout=20) == ["CANCELLED"]
    assert cluster.run("squeue", "-h", "-j", job, check=False).strip() == ""


def test_srun_runs_two_tasks(cluster):
    # -O (overcommit) so two tasks also fit a one-CPU machine
    extra = ["-O"] if (os.cpu_count() or 1) < 2 else []
    out = cluster.run("srun", "-n", "2", *extra, "hostname", timeout=60)
    lines = out.split()
    assert len(lines) == 2 and len(set(lines)) == 1, out


def test_scontrol_requeue(cluster, tmp_path):
    job = cluster.sbatch("--requeue", "-o", str(tmp_path / "rq.out"), "--wrap", "sleep 300")
    cluster.wait(job, until={"RUNNING"})
    cluster.run("scontrol", "requeue", job)
    assert cluster.wait(job, until={"PENDING"}, timeout=20) == ["PENDING"]
    out = cluster.run("scontrol", "-o", "show", "job", job)
    assert "Restarts=1" in out, out
    cluster.run("scancel", job)
    cluster.wait(job, timeout=20)
