"""Run a command with its stderr on a real pseudo-terminal (as a person at a shell sees it)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
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
    _set_size(terminal, columns)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    shown = b""
    while (chunk := _read(controller)) is not None:
        shown += chunk
    os.close(controller)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out, shown.decode(errors="replace")


def interrupt_on_terminal(
    cmd: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path,
    when: re.Pattern[str],
    timeout: float = 300,
    columns: int = 160,
) -> tuple[int, str]:
    """Run ``cmd`` as a person would in a terminal (the pty is its controlling terminal, every
    output goes there) and press Ctrl-C once ``when`` matches what has been shown; ``(exit
    status, what the terminal showed)``. The line discipline turns Ctrl-C into SIGINT for the
    whole foreground process group, as a shell's job control does."""
    pid, controller = pty.fork()
    if pid == 0:  # the child: a session leader whose controlling terminal is the pty
        # a terminal's foreground job gets Ctrl-C: undo an ignored SIGINT inherited from how the
        # tests were started (a shell starts `cmd &` with SIGINT ignored, and Python then
        # installs no KeyboardInterrupt handler)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.chdir(cwd)
        os.execvpe(cmd[0], list(cmd), env)
    _set_size(controller, columns)
    shown, sent = "", False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if ready:
            if (chunk := _read(controller)) is None:
                break
            shown += chunk.decode(errors="replace")
        if not sent and when.search(shown):
            os.write(controller, b"\x03")
            sent = True
    else:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    os.close(controller)
    return os.waitstatus_to_exitcode(status), shown


def _set_size(fd: int, columns: int) -> None:
    """A terminal of ``columns`` x 24 (a pty starts at 0 x 0, where tqdm draws nothing)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))


def _read(controller: int) -> bytes | None:
    """The next output on the terminal; None once the process has closed it (EOF or EIO)."""
    try:
        chunk = os.read(controller, 65536)
    except OSError:  # EIO: the process closed the terminal
        return None
    return chunk or None
