"""Run a command with its stderr on a real pseudo-terminal (as a person at a shell sees it)."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
from collections.abc import Sequence
from pathlib import Path


def on_terminal(
    cmd: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path | None = None,
    columns: int = 160,
    timeout: float = 60,
) -> tuple[int, bytes, str]:
    """``(returncode, stdout, what the terminal showed)``: stderr is a pty of ``columns`` x 24,
    stdout a pipe (so a program can tell its display from its output)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out, shown.decode(errors="replace")
