"""Status lines of the data-building stages (corpus, vocabulary, examples) on stderr.

A run on a cold cache builds its data first, which takes about a minute on two cores for the
embedded corpus; each stage says when it starts, how far it is at most every ``every`` seconds,
and how long it took, so the first run of a new user is never silent. Cached stages print
nothing. stderr, like the run's own status lines: stdout carries a command's result.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType


class Stage:
    """``with Stage("vocabulary", total=2, unit="passes") as s: ... s.advance()``."""

    def __init__(self, what: str, total: int | None = None, unit: str = "", every: float = 5.0):
        self.what, self.total, self.unit, self.every = what, total, unit, every
        self.done = 0
        self._start = self._last = 0.0

    def _say(self, text: str) -> None:
        print(f"data: {self.what}: {text}", file=sys.stderr, flush=True)

    def __enter__(self) -> Stage:
        self._start = self._last = time.monotonic()
        self._say("building (first use of these settings; cached afterwards)")
        return self

    def advance(self, n: int = 1) -> None:
        """``n`` more units done; a line if ``every`` seconds passed since the last one."""
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            of = f"/{self.total}" if self.total is not None else ""
            self._say(f"{self.done}{of} {self.unit} ({now - self._start:.0f} s)")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None:
            self._say(f"built in {time.monotonic() - self._start:.1f} s")
