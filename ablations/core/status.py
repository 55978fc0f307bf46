"""The one status vocabulary of a run, and the one exception that stops a run early.

Every status the harness writes or compares is a :class:`Status`: ``status.json`` (written by
:mod:`ablations.run.train`), the study's ``user_attrs["status"]`` (written by the sweep's worker
and reaper, :mod:`ablations.sweep`) and ``runs.parquet``'s ``status`` column
(:mod:`ablations.results.run_rows`). The values are the strings on disk, so committed results
still read.

Who writes which value:

===============  ==============  ================  ==============================================
value            status.json     study user_attrs  runs.parquet
===============  ==============  ================  ==============================================
``running``      while training                    a RUNNING trial, or status.json says so
``complete``     yes             yes               final: training finished its last step
``diverged``     yes             yes               final: training said so (value +inf)
``failed``       yes             yes               final: training raised
``pruned``       yes             yes               final: the study's pruner stopped it
``interrupted``  yes                               stopped, not retried yet (any of the three)
``preempted``                    yes               read as ``interrupted``
``lost``                         yes               final when given up (lost more than
                                                   ``retry.max_retry`` times), else
                                                   ``interrupted``
``waiting``                                        queued in the study, never started
``missing``                                        neither status.json nor a study verdict
===============  ==============  ================  ==============================================

A stopped run has three words because three parties see it. The run itself only knows it was
stopped (``interrupted``: a signal, Ctrl-C, or a :class:`StopRun` raised after a checkpoint); the
sweep must tell a trial its worker stopped at a signal (``preempted``: the worker failed it) from
one whose worker vanished (``lost``: the reaper failed it); both are retried (:data:`RETRIED`)
from the run's last checkpoint. Results show all three as ``interrupted`` (:data:`STOPPED`),
except a trial the sweep gave up on (``given_up``: lost more than ``retry.max_retry`` times;
preemptions never count), which is ``lost``, final, and makes the sweep exit non-zero.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """A run's status; a ``str``, so it compares equal to, and serializes as, its value."""

    RUNNING = "running"
    COMPLETE = "complete"
    DIVERGED = "diverged"
    FAILED = "failed"
    PRUNED = "pruned"
    INTERRUPTED = "interrupted"
    PREEMPTED = "preempted"
    LOST = "lost"
    WAITING = "waiting"
    MISSING = "missing"


#: Statuses that ``status.json`` never changes again: the run is not trained a second time.
DONE = frozenset({Status.COMPLETE, Status.DIVERGED})
#: ``user_attrs["status"]`` of a failed study trial that is retried (the others are final).
RETRIED = frozenset({Status.PREEMPTED, Status.LOST})
#: The words for a run stopped before its end that resumes from its checkpoint.
STOPPED = frozenset({Status.INTERRUPTED, *RETRIED})
#: Statuses of a finished experiment's trials in ``runs.parquet``: anything else is still to run.
FINAL = (Status.COMPLETE, Status.DIVERGED, Status.PRUNED, Status.FAILED)
#: The values of ``runs.parquet``'s ``status`` column, in the order collect reports them.
#: (``lost``, given up by the sweep, is last: reports collected before it existed end before it;
#: it is not in FINAL: ``--retry-lost`` runs it again.)
COLLECTED = (
    *FINAL,
    Status.INTERRUPTED,
    Status.RUNNING,
    Status.WAITING,
    Status.MISSING,
    Status.LOST,
)


class StopRun(Exception):  # noqa: N818 (a stop, not an error)
    """Raised (by a callback) to end a run early; ``status.json`` then says ``status``.

    One exception for every early stop, so that training records it the same way whoever raised
    it: the sweep's worker raises it with ``Status.INTERRUPTED`` for a signal (after saving a
    checkpoint: the run resumes from it) and with ``Status.PRUNED`` for a pruned trial.
    """

    def __init__(self, message: str, status: Status = Status.INTERRUPTED) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[type[StopRun], tuple[str, Status]]:
        """Pickled with its status (an exception pickles only its ``args`` by default)."""
        return type(self), (str(self), self.status)


#: The exit status of a worker that stopped because it was asked to (SIGTERM, SIGUSR1): its
#: trial checkpointed and handed back (``preempted``). Not a crash: the local driver restarts it
#: without counting it towards a crash loop.
EXIT_STOPPED = 3
