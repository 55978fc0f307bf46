"""An experiment's trials: its run directories and the attempts its study recorded, grouped by
the original trial number, and the curve lines a trial directory holds.

A trial is one directory ``<n>/`` (n = the original Optuna trial number; a retry reuses it and
its directory) and/or its attempts in the study (``study.journal``, read through the sweep's
own storage opener). Either may be missing: a queued trial has no directory yet, and a study
kept in an RDB storage leaves no journal; every such gap is a line of the
:class:`~ablations.results.report.CollectReport`, never an error.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from ablations.core.errors import one_line
from ablations.core.fileio import read_json
from ablations.core.journal import open_journal
from ablations.results.layout import trial_dirs
from ablations.results.report import CollectReport
from ablations.run import resolved
from ablations.run.resolved import Resolved


@dataclass
class Trial:
    """Everything known about one trial (a directory and/or its attempts in the study)."""

    number: int
    path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)  # trial.json
    resolved: Resolved | None = None  # resolved.json (or config.yaml resolved on read)
    status: dict[str, Any] | None = None
    attempts: list[Any] = field(default_factory=list)  # optuna FrozenTrials, oldest first


def gather(exp_dir: Path, name: str, report: CollectReport) -> dict[int, Trial]:
    """Trial directories and study trials, grouped by original trial number."""
    trials: dict[int, Trial] = {}
    owner: dict[int, int] = {}  # optuna number -> original number (from trial.json)
    older: list[int] = []  # run directories written before resolved.json
    for number, path in sorted(trial_dirs(exp_dir).items()):
        trial = trials[number] = Trial(number, path)
        trial.info = read_json(path / "trial.json", tolerant=True) or {}
        trial.status = read_json(path / "status.json", tolerant=True)
        trial.resolved = resolved.read(path)
        if trial.resolved is not None and trial.resolved.source != "run":
            older.append(number)
        for attempt in trial.info.get("attempts", []):
            owner[int(attempt)] = number
        if not trial.info:
            report.missing.append(f"trial {number}: no trial.json")
        if trial.status is None:
            report.missing.append(f"trial {number}: directory without status.json")

    if older:
        report.notes.append(
            f"trials {_ranges(older)}: no {resolved.FILE} (written before it existed); their "
            "settings are their config.yaml resolved now, with today's presets"
        )
    study = _study_trials(exp_dir, name, report)
    by_number = {t.number: t for t in study}
    for t in study:
        original = _original(t.number, by_number, owner)
        trials.setdefault(original, Trial(original)).attempts.append(t)
    waiting = []
    for number in sorted(trials):
        trial = trials[number]
        trial.attempts.sort(key=lambda t: t.number)
        latest = trial.attempts[-1] if trial.attempts else None
        if latest is not None and latest.state.name == "WAITING":
            waiting.append(number)
        elif trial.path is None and latest is not None:
            report.missing.append(
                f"trial {number}: study trial ({latest.state.name}) has no directory"
            )
    if waiting:
        report.missing.append(f"WAITING in the study (not started): trials {_ranges(waiting)}")
    return dict(sorted(trials.items()))


def _ranges(numbers: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``: a long queue stays one line of the report."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in spans)


def _original(number: int, by_number: Mapping[int, Any], owner: Mapping[int, int]) -> int:
    """The trial an Optuna trial is an attempt of: trial.json's attempts, else the chain of
    ``system_attrs["failed_trial"]`` (a retry not yet started has not written trial.json; a
    retry of a retry leads back to the original)."""
    seen: set[int] = set()
    while number not in owner and number not in seen:
        seen.add(number)
        attrs = by_number[number].system_attrs if number in by_number else {}
        if "failed_trial" not in attrs:
            break
        number = int(attrs["failed_trial"])
    return owner.get(number, number)


def _study_trials(exp_dir: Path, name: str, report: CollectReport) -> list[Any]:
    """The study's trials, read through the sweep's own storage opener (same file, same lock)."""
    if not (exp_dir / "study.journal").exists():
        report.missing.append("no study.journal: statuses from status.json only")
        return []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = optuna.load_study(study_name=name, storage=open_journal(exp_dir))
            return list(study.get_trials(deepcopy=False))
    except Exception as e:  # a broken or foreign journal must not hide the curves
        report.missing.append(f"study.journal: cannot load study {name!r}: {one_line(e)}")
        return []


def read_curve(trial: Trial, kind: str, report: CollectReport) -> list[dict[str, Any]]:
    """The complete lines of ``<kind>.jsonl``; a torn or unparsable line is dropped and reported.

    As ``Curves.truncate``: a line counts only if it parses and ends with a newline (a run
    killed mid-write leaves a torn last line).
    """
    if trial.path is None:
        return []
    path = trial.path / f"{kind}.jsonl"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    records = []
    for i, line in enumerate(text.splitlines(keepends=True), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if record is None or not line.endswith("\n") or not isinstance(record, dict):
            last = i == len(text.splitlines())
            what = "torn last line" if last else "unparsable line"
            report.torn.append(f"trial {trial.number}: {kind}.jsonl {what} {i} dropped")
            continue
        records.append(record)
    return records
