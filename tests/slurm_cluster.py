"""A one-node SLURM cluster on this machine for the tests (``ablations/slurm/local_cluster.sh``),
brought up once per test session by the ``cluster`` fixture (conftest.py) and torn down at the
end.

The cluster uses its own directory and ports (not ``make slurm-up``'s defaults), so a cluster a
developer started by hand keeps running. Without slurm installed the script installs it with
apt-get when run as root; the tests are skipped only when slurm is missing and we are not root.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "ablations" / "slurm" / "local_cluster.sh"


def _script(verb: str, env: dict, timeout: int) -> subprocess.CompletedProcess:
    """Run ``local_cluster.sh VERB``; the caller checks the exit status."""
    return subprocess.run(
        ["bash", str(SCRIPT), verb],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# Away from the script's defaults (16817/16818) so a `make slurm-up` cluster is left alone.
CTLD_PORT, D_PORT = "16837", "16838"
TERMINAL = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


class Cluster:
    def __init__(self, env: dict[str, str], root: Path):
        self.env = env
        self.root = root

    def run(self, *args: str, timeout: float = 60, check: bool = True) -> str:
        proc = subprocess.run(
            args, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc.stdout

    def sbatch(self, *args: str) -> str:
        return self.run("sbatch", "--parsable", *args).strip().split(";")[0]

    def states(self, job: str) -> list[str]:
        """JobState of a job (one entry per task for an array), from slurmctld's memory."""
        out = self.run("scontrol", "-o", "show", "job", job)
        return re.findall(r"\bJobState=(\S+)", out)

    def wait(self, job: str, until: set[str] = TERMINAL, timeout: float = 30) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            states = self.states(job)
            if states and all(s in until for s in states):
                return states
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job} still {states} after {timeout}s\n{self.logs()}")
            time.sleep(0.3)

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.root / "log" / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-20:]
                parts.append(f"---- {name}\n" + "\n".join(tail))
        return "\n".join(parts)


def _our_processes(root: Path) -> list[str]:
    """Processes whose command line mentions the cluster's directory (daemons, job scripts)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(root) in cmd:
            found.append(f"{proc.name}: {cmd.strip()}")
    return found


def session_cluster(tmp_path_factory):
    if shutil.which("slurmctld") is None and os.geteuid() != 0:
        pytest.skip(
            "slurm is not installed and we are not root, so it cannot be installed "
            "(apt-get install slurmctld slurmd slurm-client)"
        )
    root = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ)
    env.update(
        SLURM_LOCAL_DIR=str(root),
        SLURM_LOCAL_CTLD_PORT=CTLD_PORT,
        SLURM_LOCAL_D_PORT=D_PORT,
        SLURM_CONF=str(root / "etc" / "slurm.conf"),
    )
    for var in ("SLURM_JOB_ID", "SLURM_JOBID", "SLURM_ARRAY_JOB_ID", "SLURM_NTASKS"):
        env.pop(var, None)  # in case pytest itself runs inside a SLURM job
    up = _script("up", env, 600)
    try:
        assert up.returncode == 0, f"local_cluster.sh up failed:\n{up.stdout}\n{up.stderr}"
        assert f"export SLURM_CONF={root}/etc/slurm.conf" in up.stdout
        # `up` again is a no-op on a running cluster
        again = _script("up", env, 60)
        assert again.returncode == 0, f"second `up` failed:\n{again.stdout}\n{again.stderr}"
        yield Cluster(env, root)
    finally:
        down = _script("down", env, 120)
    assert down.returncode == 0, f"local_cluster.sh down failed:\n{down.stdout}\n{down.stderr}"
    time.sleep(0.5)
    left = _our_processes(root)
    assert not left, "processes left after `down`:\n" + "\n".join(left)
    status = _script("status", env, 30)
    assert "slurmctld: not running" in status.stdout
    assert "slurmd:    not running" in status.stdout
