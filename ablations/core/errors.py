"""An exception as one line: for ``error:`` lines on stderr, ``status.json`` and the study.

One helper so that every place that records or prints an error says it the same way: whitespace
(newlines included) collapsed, so a message never breaks a log line, a JSON field or a one-line
``error:`` contract. What differs between callers on purpose is a parameter, not another helper.
"""

from __future__ import annotations

import sys
from typing import Literal


class ConfigError(ValueError):
    """A bad configuration value; the message is one line naming the key path."""


def one_line(
    error: BaseException,
    *,
    typed: bool = True,
    line: Literal["all", "first", "last"] = "all",
    limit: int | None = None,
) -> str:
    """``error`` as one line.

    Args:
        error: the exception.
        typed: prefix the exception's class name (``"RuntimeError: boom"``; the bare name when
            the message is empty). Records of a foreign failure (status.json, the study, collect
            notes) need it to say what failed; our own errors (``ConfigError``, ...) are written
            for the user and printed without it.
        line: which of the message's non-empty lines: ``"all"`` (joined), ``"first"`` (the
            headline: a run's ``status.json``), ``"last"`` (papermill's error puts the
            traceback first and the exception last).
        limit: at most this many characters of the message (a study attribute stays small).
    """
    lines = [" ".join(text.split()) for text in str(error).splitlines() if text.strip()]
    if line == "first":
        lines = lines[:1]
    elif line == "last":
        lines = lines[-1:]
    text = " ".join(lines)[:limit]
    if not typed:
        return text
    name = type(error).__name__
    return f"{name}: {text}" if text else name


def fail(error: BaseException, code: int = 2) -> int:
    """Print ``error: <one line>`` on stderr and return ``code``: how every command refuses bad
    input (the tests hold each command to exactly one such line and exit status 2)."""
    print(f"error: {one_line(error, typed=False)}", file=sys.stderr)
    return code
