"""A throwaway PostgreSQL server for the tests of the sweep's RDB storage (Debian's
``postgresql`` package; ``.ci/run`` installs it): a cluster in a temporary folder, owned by the
``postgres`` user (``initdb`` refuses root), trust authentication on 127.0.0.1, a free port."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_postgres() -> Iterator[str]:
    """Yields a SQLAlchemy URL of a fresh database; stops the server at the end."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        as_postgres = ["runuser", "-u", "postgres", "--"]
    # outside pytest's folder, which only root may enter
    root = Path(tempfile.mkdtemp(prefix="ablations-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if as_postgres:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    run = {"check": True, "capture_output": True, "text": True, "timeout": 120}
    subprocess.run([*as_postgres, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], **run)
    port = _free_port()
    options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=60"
    subprocess.run(
        [
            *as_postgres,
            pg_ctl,
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(root / "server.log"),
            "-w",
            "start",
        ],
        **run,
    )
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_postgres, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"],
            check=False,
            capture_output=True,
            timeout=120,
        )
