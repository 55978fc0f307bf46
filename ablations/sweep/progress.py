"""What a running sweep shows: per experiment, trials done / running / left, the current step of
each running trial, and an estimated time to the end.

:func:`snapshot` reads one experiment's state (its Optuna study, and the last line of each running
trial's ``metrics.jsonl``); :class:`Display` shows snapshots as tqdm bars, one per experiment, when
the output is a terminal, and otherwise (SLURM logs, CI, a pipe) as a plain line whenever the
counts change and at least every 30 seconds.

The ETA is work left divided by the rate the workers achieve. Work is counted in trials: a
running trial at step ``s`` of ``S`` has ``1 - s/S`` left. A trial's duration is the mean
wall time of the experiment's finished trials (Optuna's ``datetime_start`` to
``datetime_complete``); before any has finished, each running trial's own projection
(elapsed x ``S/s``, once it is 5% through) stands in, and for an experiment none of whose trials
has run, the other experiments' seconds per step times its trials' steps. The workers share the
work, so the ETA is the work left times the trial duration, divided by the number of workers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from ablations.config import RunConfig
from ablations.run.progress import duration
from ablations.sweep import slots
from ablations.sweep.plan import Plan
from ablations.sweep.spec import Sweep

#: A running trial's own projection is trusted from this fraction of its steps on.
MIN_FRACTION = 0.05
#: Seconds between plain progress lines when nothing changed (the running trials' steps move).
LINE_EVERY = 30


@dataclass(frozen=True)
class Running:
    """A running trial: its key (the directory's number), variant, and step of its total."""

    trial: int
    variant: str
    step: int
    total: int
    elapsed: float


@dataclass(frozen=True)
class Snapshot:
    """One experiment's progress (slot counts from :func:`ablations.sweep.slots.progress`)."""

    name: str
    total: int
    done: int
    counts: dict[str, int]
    running: list[Running] = field(default_factory=list)
    #: Wall seconds of each finished (COMPLETE) trial.
    durations: list[float] = field(default_factory=list)
    #: Optimizer steps of one trial (every phase); 0 when unknown.
    steps: int = 0

    @property
    def finished(self) -> bool:
        """Every slot done (:func:`ablations.sweep.slots.finished`, from this snapshot's counts)."""
        return self.done == self.total

    @property
    def left(self) -> int:
        """Slots neither finished nor running."""
        return max(self.total - self.done - len(self.running), 0)

    def trial_seconds(self) -> float | None:
        """The expected wall time of one trial (see the module doc), None while unknown."""
        if self.durations:
            return sum(self.durations) / len(self.durations)
        projections = [
            r.elapsed * r.total / r.step
            for r in self.running
            if r.total and r.step / r.total >= MIN_FRACTION
        ]
        return sum(projections) / len(projections) if projections else None

    def seconds_per_step(self) -> float | None:
        """What a step of this experiment's trials takes, None while unknown."""
        seconds = self.trial_seconds()
        return seconds / self.steps if seconds is not None and self.steps else None

    def work_left(self) -> float:
        """Trials' worth of work left: whole slots, plus what running trials have to go."""
        partial = sum(1 - min(r.step / r.total, 1) for r in self.running if r.total)
        return self.left + partial


def snapshot(study: optuna.Study, plan: Plan, sweep: Sweep, exp_dir: Path) -> Snapshot:
    """The experiment's progress now (reads the study and the running trials' last lines)."""
    counts = slots.progress(study, plan, sweep.retry)
    trials = study.get_trials(deepcopy=False)
    now = dt.datetime.now()
    running = [_running(t, exp_dir, plan, now) for t in trials if t.state == TrialState.RUNNING]
    durations = [_duration(t) for t in trials if t.state == TrialState.COMPLETE]
    first = plan.config(next(iter(plan.variants)), plan.points[0] if plan.points else {}, 0)
    return Snapshot(
        plan.name,
        counts["total"],
        counts["done"],
        counts,
        sorted(running, key=_key),
        durations,
        total_steps(first),
    )


def _duration(t: FrozenTrial) -> float:
    """The worker's claim-to-report time where it recorded one, else Optuna's timestamps."""
    if "trial_seconds" in t.user_attrs:
        return float(t.user_attrs["trial_seconds"])
    if t.datetime_start and t.datetime_complete:
        return (t.datetime_complete - t.datetime_start).total_seconds()
    return 0.0


def _key(r: Running) -> int:
    return r.trial


def _running(t: FrozenTrial, exp_dir: Path, plan: Plan, now: dt.datetime) -> Running:
    number = slots.origin(t)
    run_dir = exp_dir / str(number)
    total = _total_steps(plan, t)
    step = int((last_line(run_dir / "metrics.jsonl") or {}).get("step", 0))
    elapsed = (now - t.datetime_start).total_seconds() if t.datetime_start else 0.0
    # a retry resumed at ``step``: only its own steps count in the projection
    return Running(number, str(t.user_attrs.get("variant", "?")), step, total, elapsed)


def _total_steps(plan: Plan, t: FrozenTrial) -> int:
    try:
        config = plan.config(
            str(t.user_attrs["variant"]),
            slots.tuned_params(t.params, plan),
            int(t.user_attrs.get("seed", 0)),
        )
    except Exception:  # a foreign trial in the study: no total, no projection
        return 0
    return total_steps(config)


def total_steps(config: RunConfig) -> int:
    """Optimizer steps of a whole run (every phase)."""
    return sum(phase.steps for phase in config.phases)


def last_line(path: Path, chunk: int = 4096) -> dict[str, Any] | None:
    """The last complete JSON line of an append-only curve, read from its end (a long curve is
    not read whole); None when there is none yet."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(size - chunk, 0))
            tail = f.read().splitlines()
    except OSError:
        return None
    for raw in reversed(tail):
        try:
            return json.loads(raw)
        except ValueError:
            continue  # a torn last line, or the cut first line of the chunk
    return None


def step_rate(snapshots: list[Snapshot]) -> float | None:
    """Seconds per optimizer step, averaged over the experiments that know theirs: the guess for
    an experiment none of whose trials has run yet (same machine, a similar model)."""
    rates = [r for r in (s.seconds_per_step() for s in snapshots) if r is not None]
    return sum(rates) / len(rates) if rates else None


def eta_seconds(snapshots: list[Snapshot], workers: int, rate: float | None = None) -> float | None:
    """Seconds until every experiment is finished, None while a needed duration is unknown.
    An experiment without a duration of its own is estimated from ``rate`` (seconds per step,
    :func:`step_rate`) times its trials' steps."""
    total = 0.0
    for s in snapshots:
        work = s.work_left()
        if work <= 0:
            continue
        seconds = s.trial_seconds()
        if seconds is None and rate is not None and s.steps:
            seconds = rate * s.steps
        if seconds is None:
            return None
        total += work * seconds
    return total / max(workers, 1)


def clock(seconds: float | None) -> str:
    """:func:`ablations.run.progress.duration` (``4m05s``), ``?`` when unknown."""
    return "?" if seconds is None else duration(seconds)


def describe(s: Snapshot, workers: int, *, done: bool = True, rate: float | None = None) -> str:
    """``3/8 done, 2 running [#3 120/700, #4 80/700], 3 left, 1 diverged, eta 4m05s`` (without
    ``done``, from "2 running" on: a bar shows the count; ``rate``: :func:`eta_seconds`)."""
    parts = [f"{s.done}/{s.total} done"] if done else []
    if s.running:
        steps = ", ".join(f"#{r.trial} {r.step}/{r.total}" for r in s.running)
        parts.append(f"{len(s.running)} running [{steps}]")
    parts.append(f"{s.left} left")
    extra = ("diverged", "failed", "pruned", "retried")
    parts += [f"{s.counts[k]} {k}" for k in extra if s.counts.get(k)]
    if s.done < s.total:
        # as many workers as there are trials to run (they may also serve other experiments)
        busy = max(min(workers, math.ceil(s.work_left())), 1)
        parts.append(f"eta {clock(eta_seconds([s], busy, rate))}")
    return ", ".join(parts)


class Display:
    """Shows snapshots: tqdm bars on stderr when it is a terminal; otherwise a plain line on
    stdout (a log) whenever the counts change and at least every :data:`LINE_EVERY` seconds,
    prefixed with the elapsed time."""

    def __init__(self, names: list[str], workers: int, tty: bool | None = None) -> None:
        self.workers = workers
        self.bars: dict[str, Any] = {}
        self.t0 = self.shown = time.monotonic()
        self.last = ""
        if sys.stderr.isatty() if tty is None else tty:
            width = max(len(n) for n in names)
            self.bars = {
                name: tqdm(
                    total=1,
                    desc=name.ljust(width),
                    position=i,
                    file=sys.stderr,
                    bar_format="{desc} {bar:20} {n_fmt}/{total_fmt} done{postfix}",
                    dynamic_ncols=True,
                )
                for i, name in enumerate(names)
            }

    def update(self, snapshots: list[Snapshot]) -> None:
        """Show the snapshots (bars redrawn; a line printed if something changed)."""
        rate = step_rate(snapshots)
        if self.bars:
            for s in snapshots:
                bar = self.bars[s.name]
                bar.total, bar.n = max(s.total, 1), s.done
                text = describe(s, self.workers, done=False, rate=rate)
                bar.set_postfix_str(text, refresh=True)
            return
        line = " | ".join(f"{s.name}: {describe(s, self.workers, rate=rate)}" for s in snapshots)
        if len(snapshots) > 1 and any(s.done < s.total for s in snapshots):
            line += f" | all: eta {clock(eta_seconds(snapshots, self.workers, rate))}"
        counts = " | ".join(f"{s.name}:{s.done}/{len(s.running)}" for s in snapshots)
        if counts != self.last or time.monotonic() - self.shown > LINE_EVERY:
            print(f"[{self._elapsed()}] {line}", flush=True)
            self.last, self.shown = counts, time.monotonic()

    def note(self, text: str) -> None:
        """A message between the updates (above the bars on a terminal)."""
        if self.bars:
            tqdm.write(text, file=sys.stderr)
        else:
            print(f"[{self._elapsed()}] {text}", flush=True)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars = {}

    def _elapsed(self) -> str:
        minutes, seconds = divmod(int(time.monotonic() - self.t0), 60)
        return f"{minutes:3d}:{seconds:02d}"


def load_snapshots(
    loaded: list[tuple[optuna.Study, Plan]], sweep: Sweep, results: Path
) -> list[Snapshot]:
    return [snapshot(s, p, sweep, results / p.name) for s, p in loaded]
