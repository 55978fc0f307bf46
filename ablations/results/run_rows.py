"""One row of runs.parquet per trial: its status, the study's verdict, and its final and best
metrics (the columns: :mod:`ablations.results.collect`).

Status of a run (``runs.status``; the vocabulary: :mod:`ablations.core.status`), from
status.json and the study's latest attempt: complete, diverged (both final: training said so),
pruned, failed, interrupted (preempted or lost, not yet retried), running, waiting (queued in the
study, never started) and missing (neither status.json nor a study verdict). ``final_<metric>``
is the last evaluation of a *complete* run (NaN for any other status: a diverged run has no
final loss, it ranks worst through ``value`` = +inf and the divergence rate); ``best_<metric>``
is the best evaluation seen in any run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ablations.core.status import DONE, STOPPED, Status
from ablations.results.report import CollectReport
from ablations.results.tables import PHASE_METRICS, SUMMARY_METRICS, metric_column
from ablations.results.trials import Trial


def run_row(
    name: str,
    trial: Trial,
    settings: Mapping[str, Any],
    metrics: list[dict[str, Any]],
    val: list[dict[str, Any]],
    report: CollectReport,
) -> dict[str, Any]:
    """One row of runs.parquet (see the module doc for its columns)."""
    latest = trial.attempts[-1] if trial.attempts else None
    status = _status(trial, latest)
    if status in DONE and trial.path is not None and not metrics:
        report.missing.append(f"trial {trial.number}: {status} but metrics.jsonl has no lines")
    last = metrics[-1] if metrics else {}
    phases = (trial.resolved.config.get("phases") if trial.resolved else None) or []
    row: dict[str, Any] = {
        "experiment": name,
        **settings,
        "status": status,
        "state": latest.state.name if latest is not None else None,
        "value": _study_value(latest),
        "reason": _reason(trial, latest),
        # the run this trial adopted instead of training (``<experiment>/<trial>``, reuse.py)
        "reused_from": trial.info.get("reused_from"),
        "has_dir": trial.path is not None,
        "has_status": trial.status is not None,
        "steps": last.get("step", 0),
        "total_steps": sum(p.get("steps", 0) for p in phases) if phases else None,
        "phase": last.get("phase"),
        "samples": last.get("samples"),
        "wall_time": last.get("wall_time"),
    }
    complete = status == Status.COMPLETE
    for metric in ("train/loss", "train/mlm_loss"):
        row[metric_column("final", metric)] = _num(last.get(metric)) if complete else math.nan
    for metric in SUMMARY_METRICS:
        values = np.array([_num(r.get(metric)) for r in val if metric in r], dtype=float)
        row[metric_column("final", metric)] = values[-1] if complete and len(values) else math.nan
        best = np.nan
        if np.isfinite(values).any():
            best = np.nanmin(values) if "loss" in metric else np.nanmax(values)
        row[metric_column("best", metric)] = float(best)
    for p in (1, 2):
        planned = phases[p - 1].get("steps") if len(phases) >= p else None
        in_phase = [r for r in val if r.get("phase") == p]
        done = planned is not None and in_phase and in_phase[-1].get("phase_step") == planned
        for metric in PHASE_METRICS:
            value = _num(in_phase[-1].get(metric)) if done else math.nan
            row[f"{metric_column('final', metric)}_phase{p}"] = value
    return row


#: Optuna's state of a trial that is not finished, or pruned, as a status.
_BY_STATE = {"PRUNED": Status.PRUNED, "RUNNING": Status.RUNNING, "WAITING": Status.WAITING}
#: What status.json may say of a run that the study has no verdict on.
_SAID = (Status.FAILED, Status.INTERRUPTED, Status.PRUNED, Status.RUNNING)


def _status(trial: Trial, latest: Any) -> Status:
    """complete / diverged from status.json win; then the study's latest attempt (a stopped
    trial, whoever stopped it, is ``interrupted``); then status.json's own word; otherwise
    ``missing``."""
    said = (trial.status or {}).get("status")
    said = said if isinstance(said, str) else None
    if said in DONE:
        return Status(said)
    state = latest.state.name if latest is not None else None
    attrs = latest.user_attrs if latest is not None else {}
    if state == "COMPLETE":
        return Status.DIVERGED if attrs.get("status") == Status.DIVERGED else Status.COMPLETE
    if state == "FAIL":
        if attrs.get("given_up"):  # lost more than retry.max_retry times: the sweep gave up
            return Status.LOST
        return Status.INTERRUPTED if attrs.get("status") in STOPPED else Status.FAILED
    if state in _BY_STATE:
        return _BY_STATE[state]
    if said in _SAID:
        return Status(said)
    return Status.MISSING


def _study_value(latest: Any) -> float:
    """The study's objective of a completed attempt (+inf when diverged), else NaN."""
    if latest is None or latest.state.name != "COMPLETE" or latest.values is None:
        return math.nan
    return float(latest.values[0])


def _reason(trial: Trial, latest: Any) -> str | None:
    """Why a run did not complete: status.json's word first, else the study's error."""
    status = trial.status or {}
    for key in ("reason", "error"):
        if status.get(key):
            return str(status[key])
    if latest is not None and latest.user_attrs.get("error"):
        return str(latest.user_attrs["error"])
    return None


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)
