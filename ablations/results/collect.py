"""An experiment's trial directories and study -> tidy parquet tables (the writing half of results).

:func:`collect` reads ``results/<experiment>/`` (the sweep driver's layout, below) and writes,
each atomically (temporary file, then ``os.replace``)::

    curves.parquet      one row per (trial, curve line, metric): the train metrics of
                        metrics.jsonl and the val metrics of val.jsonl, long format
    runs.parquet        one row per trial: settings, status, final and best metrics
    layers.parquet      one row per (trial, layers.jsonl line, tensor): per-tensor trust ratios
    reference.parquet   reference lines (the unigram entropy of the masked tokens)
    collect.json        the :class:`CollectReport`: counts and what is missing

It reads only what the harness writes, and computes nothing the harness already recorded::

    sweep.json      the resolved experiment (``Plan.to_dict``): {"name", "variants": {variant:
                    {dotted.path: value}}, "experiment": {"description", "claim", "tune", ...}}
    study.journal   Optuna JournalStorage (opened by ``ablations.core.journal.open_journal``);
                    study_name == experiment. Absent with an RDB storage: statuses then come
                    from status.json alone
    data.json       {"phase<i>_unigram_entropy": nats, ...}, written by the sweep's
                    ``prepare_experiments``; without it there is no reference line (and a note)
    <n>/            one per trial, n = the original Optuna trial number (a retry reuses it):
                    trial.json (the worker's claim), resolved.json (what the run trains with:
                    ablations/run/resolved.py), config.yaml, status.json, meta.json,
                    metrics.jsonl, val.jsonl, layers.jsonl (formats: ablations/run/curves.py)

Columns. ``curves``: experiment, trial, attempt, variant, one column per toggle and per tuned
hyperparameter (named by its dotted config path, e.g. ``optimizer.overrides.prenorm``,
``phases.0.lr``; a trial that does not set one gets the value its run resolves to,
``resolved.json``: an optimizer knob the config leaves to its preset is the preset's), seed, stage,
phase, step, phase_step, samples, tokens, wall_time, metric, value. ``attempt`` is the Optuna
number of the trial's latest attempt (equal to ``trial`` unless it was retried): a retry resumes
the original's checkpoint and truncates its curves, so which attempt wrote a given line cannot be
told apart; ``runs.attempts`` counts them. Non-finite values (written as null) are NaN.
``runs``: experiment, trial, attempt, attempts, variant, the settings, seed, stage, slot, status,
state (Optuna's, of the latest attempt), value (the study's objective; +inf if diverged), reason
(divergence reason or error), reused_from (``<experiment>/<trial>`` of the identical finished run
the trial adopted instead of training, :mod:`ablations.sweep.reuse`; null if it trained; absent from
tables collected before it existed), has_dir, has_status, steps (the last logged), total_steps,
phase, samples, wall_time, final_train_loss, final_train_mlm_loss, ``final_``/``best_`` of each val
metric (``final_val_mlm_loss``, ...) and ``final_val_{loss,mlm_loss}_phase{1,2}``, and for each of
the experiment's ``targets`` t, ``steps_to_<t>`` and ``samples_to_<t>`` (the first validation
reaching it; NaN if none does: :func:`ablations.results.tables.with_targets`). A setting whose path
is a
column name (``seed``, ...) is named ``config.<path>``.
``layers``: experiment, trial, attempt, variant, seed, stage, phase, step, phase_step, tensor,
layer (the tensor's trust-ratio layer), block (embeddings, encoder.<i>, pooler, mlm_head,
nsp_head), index (the tensor's position in the model), trust_ratio, weight_norm, update_norm,
eps_dominated, sqrt_v_over_eps, relative_update (NaN in runs older than that telemetry).

Status of a run (``runs.status``; the vocabulary: :mod:`ablations.core.status`), from status.json
and
the study's latest attempt: complete, diverged (both final: training said so), pruned, failed,
interrupted (preempted or lost, not yet retried), running, waiting (queued in the study, never
started) and missing (neither status.json nor a study verdict). ``final_<metric>`` is the last
evaluation of a *complete* run (NaN for any other status: a diverged run has no final loss, it
ranks worst through ``value`` = +inf and the divergence rate); ``best_<metric>`` is the best
evaluation seen in any run.

The frames themselves (columns, types, curve and layer lines) are built in
:mod:`ablations.results.tables`; the readers notebooks use are in :mod:`ablations.results`.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from ablations.core.errors import one_line
from ablations.core.fileio import FrozenError, check_writable, read_json, replacing, write_atomic
from ablations.core.journal import open_journal
from ablations.core.status import COLLECTED, DONE, STOPPED, Status
from ablations.results import tables
from ablations.results.tables import PHASE_METRICS, SUMMARY_METRICS, column, metric_column
from ablations.run import resolved
from ablations.run.resolved import Resolved

CURVES, RUNS, LAYERS, REFERENCE, REPORT = (
    "curves.parquet",
    "runs.parquet",
    "layers.parquet",
    "reference.parquet",
    "collect.json",
)
TABLES = (CURVES, RUNS, LAYERS, REFERENCE)
#: Bumped when a table's columns change: older tables are then collected again.
SCHEMA = 1
#: Every run file whose change makes the tables stale.
INPUTS = (
    "trial.json",
    "resolved.json",
    "config.yaml",
    "status.json",
    "metrics.jsonl",
    "val.jsonl",
    "layers.jsonl",
)
#: Experiment files whose change makes the tables stale.
EXPERIMENT_INPUTS = ("sweep.json", "data.json", "study.journal")


class ResultsError(ValueError):
    """A path that is not a readable experiment; the message is one line naming it."""


@dataclass
class CollectReport:
    """What :func:`collect` read and wrote, and what it found missing.

    ``missing`` lists, one line each: trial directories without status.json or trial.json,
    study trials without a directory, WAITING slots, a missing or unreadable study. ``torn``
    lists curve lines that were dropped (a torn last line, or an unparsable one).
    """

    experiment: str
    exp_dir: str
    trials: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    curve_rows: int = 0
    layer_rows: int = 0
    missing: list[str] = field(default_factory=list)
    torn: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    schema: int = SCHEMA

    def __str__(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.statuses.items() if n)
        lines = [
            f"{self.exp_dir}: {self.trials} trials ({counts or 'none'}); "
            f"{self.curve_rows} curve rows, {self.layer_rows} layer rows"
        ]
        for title, items in (("missing", self.missing), ("torn", self.torn), ("note", self.notes)):
            lines += [f"  {title}: {item}" for item in items]
        return "\n".join(lines)


@dataclass
class _Trial:
    """Everything known about one trial (a directory and/or its attempts in the study)."""

    number: int
    path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)  # trial.json
    resolved: Resolved | None = None  # resolved.json (or config.yaml resolved on read)
    status: dict[str, Any] | None = None
    attempts: list[Any] = field(default_factory=list)  # optuna FrozenTrials, oldest first


def collect(exp_dir: Path | str, *, force: bool = False) -> CollectReport:
    """Read every trial of an experiment and write its parquet tables (see the module doc).

    Args:
        exp_dir: ``results/<experiment>``.
        force: replace existing tables even with fewer trials or rows. Without it a collect
            that would shrink a table (trial directories deleted, a journal without its trials)
            raises and leaves every table as it was: a table is never lost by accident.

    Returns:
        The report; ``str(report)`` is a readable summary. It is also written to collect.json.

    Raises:
        ResultsError: ``exp_dir`` is not a directory, or holds no experiment, or is
            committed (``fileio.FROZEN``), or the new tables would be smaller (without
            ``force``).
    """
    exp_dir = experiment_dir(exp_dir)
    try:
        check_writable(exp_dir)
    except FrozenError as e:
        raise ResultsError(str(e)) from None
    spec = read_json(exp_dir / "sweep.json", tolerant=True) or {}
    name = str(spec.get("name") or exp_dir.name)
    report = CollectReport(experiment=name, exp_dir=str(exp_dir))
    if not spec:
        report.notes.append("no sweep.json: variants in the order the trials name them")
    trials = _gather(exp_dir, name, report)
    toggles, params = _setting_columns(spec, trials)

    run_rows, curve_parts, layer_parts = [], [], []
    for trial in trials.values():
        settings = _settings(trial, spec, toggles, params)
        metrics = _read_curve(trial, "metrics", report)
        val = _read_curve(trial, "val", report)
        run_rows.append(_run_row(name, trial, settings, metrics, val, report))
        curve_parts.append(tables.curve_frame(name, settings, metrics, val))
        layers = _read_curve(trial, "layers", report)
        layer_parts.append(tables.layer_frame(name, settings, layers))

    runs = tables.frame(run_rows, tables.run_columns(toggles, params))
    curves = tables.concat(curve_parts, tables.curve_columns(toggles, params))
    declared = spec.get("experiment") or {}
    objective = declared.get("objective") or "val/mlm_loss"
    runs = tables.with_targets(runs, curves, declared.get("targets") or (), objective)
    layers = tables.concat(layer_parts, tables.LAYER_COLUMNS)
    variants = tables.variant_order(spec, runs)
    for df in (runs, curves, layers):
        tables.categorize(df, variants)
    reference = _reference(exp_dir, name, report)

    report.trials = len(runs)
    report.statuses = {s.value: int((runs["status"] == s).sum()) for s in COLLECTED}
    report.curve_rows, report.layer_rows = len(curves), len(layers)
    if not force:
        _refuse_to_shrink(exp_dir, {RUNS: len(runs), CURVES: len(curves), LAYERS: len(layers)})
    for filename, df in ((CURVES, curves), (RUNS, runs), (LAYERS, layers), (REFERENCE, reference)):
        with replacing(exp_dir / filename) as tmp:
            df.to_parquet(tmp, index=False)
        report.written.append(filename)
    report.written.append(REPORT)
    write_atomic(exp_dir / REPORT, json.dumps(asdict(report), indent=1) + "\n")
    return report


def _refuse_to_shrink(exp_dir: Path, rows: Mapping[str, int]) -> None:
    """Raise when a table on disk has more rows (runs: trials) than its replacement would."""
    import pyarrow.parquet as pq

    for filename, new in rows.items():
        path = exp_dir / filename
        if not path.exists():
            continue
        try:
            old = pq.ParquetFile(path).metadata.num_rows
        except (OSError, ValueError):
            continue  # unreadable: nothing worth keeping
        if new < old:
            what = "trials" if filename == RUNS else "rows"
            raise ResultsError(
                f"{path}: collect would replace {old} {what} with {new} (trial directories "
                "missing?); kept the existing tables; --force replaces them"
            )


def experiment_dir(exp_dir: Path | str) -> Path:
    """``exp_dir`` as a path, once it is known to hold an experiment (inputs or tables)."""
    path = Path(exp_dir)
    if not path.is_dir():
        raise ResultsError(f"{path}: no such experiment directory")
    has_inputs = any((path / n).exists() for n in ("sweep.json", "study.journal"))
    if not (has_inputs or trial_dirs(path) or (path / RUNS).exists()):
        raise ResultsError(
            f"{path}: not an experiment directory (no sweep.json, study.journal or trial dirs)"
        )
    return path


def trial_dirs(exp_dir: Path) -> dict[int, Path]:
    """The run directories of an experiment, by trial number (their names)."""
    return {int(p.name): p for p in exp_dir.iterdir() if p.is_dir() and p.name.isdigit()}


# --- trials: directories and the study ----------------------------------------------------------


def _gather(exp_dir: Path, name: str, report: CollectReport) -> dict[int, _Trial]:
    """Trial directories and study trials, grouped by original trial number."""
    trials: dict[int, _Trial] = {}
    owner: dict[int, int] = {}  # optuna number -> original number (from trial.json)
    older: list[int] = []  # run directories written before resolved.json
    for number, path in sorted(trial_dirs(exp_dir).items()):
        trial = trials[number] = _Trial(number, path)
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
        trials.setdefault(original, _Trial(original)).attempts.append(t)
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


# --- settings -----------------------------------------------------------------------------------


def _setting_columns(
    spec: Mapping[str, Any], trials: Mapping[int, _Trial]
) -> tuple[list[str], list[str]]:
    """Toggle and tuned-hyperparameter paths: the spec's, then any a trial adds."""
    toggles: dict[str, None] = {}
    for values in (spec.get("variants") or {}).values():
        toggles.update(dict.fromkeys(values or {}))
    params = dict.fromkeys((spec.get("experiment") or {}).get("tune") or {})
    for trial in trials.values():
        toggles.update(dict.fromkeys(trial.info.get("toggles") or {}))
        params.update(dict.fromkeys(trial.info.get("params") or {}))
        for attempt in trial.attempts:
            params.update(dict.fromkeys(attempt.params))
    params = {p: None for p in params if p not in toggles}
    return list(toggles), list(params)


def _settings(
    trial: _Trial, spec: Mapping[str, Any], toggle_cols: list[str], param_cols: list[str]
) -> dict[str, Any]:
    """Variant, seed, stage, slot, toggles and hyperparameters of a trial.

    From trial.json, or, for a trial without a directory yet (queued, or claimed a moment ago),
    the study's user attributes and params (the worker writes both from the same claim). A
    toggle or hyperparameter the trial does not set is what its config.yaml resolves to.
    """
    info = trial.info
    attrs: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for attempt in trial.attempts:
        attrs = {**attempt.user_attrs, **attrs}  # the oldest attempt's values win
        params = {**attempt.params, **params}
    variant = info.get("variant", attrs.get("variant"))
    toggles = {**((spec.get("variants") or {}).get(variant) or {}), **(info.get("toggles") or {})}
    params = {**params, **(info.get("params") or {})}
    attempts = {int(a) for a in info.get("attempts", [])} | {t.number for t in trial.attempts}
    out = {
        "trial": trial.number,
        "attempt": max(attempts) if attempts else trial.number,
        "attempts": max(len(attempts), 1 if trial.path is not None else 0),
        "variant": str(variant) if variant is not None else "unknown",
        "seed": info.get("seed", attrs.get("seed")),
        "stage": info.get("stage", attrs.get("stage")),
        "slot": info.get("slot", attrs.get("slot")),
    }
    for path, given in [(p, toggles) for p in toggle_cols] + [(p, params) for p in param_cols]:
        value = given[path] if path in given else _lookup(trial.resolved, path)
        out[column(path)] = json.dumps(value) if isinstance(value, list | dict) else value
    return out


def _lookup(run: Resolved | None, path: str) -> Any:
    """What the trial's run resolves ``path`` to (None without a run directory)."""
    return None if run is None else run.value(path)


# --- curves and runs ----------------------------------------------------------------------------


def _read_curve(trial: _Trial, kind: str, report: CollectReport) -> list[dict[str, Any]]:
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


def _run_row(
    name: str,
    trial: _Trial,
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


def _status(trial: _Trial, latest: Any) -> Status:
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


def _reason(trial: _Trial, latest: Any) -> str | None:
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


# --- reference lines ----------------------------------------------------------------------------


def _reference(exp_dir: Path, name: str, report: CollectReport) -> pd.DataFrame:
    """The unigram entropy of the masked tokens per phase, as ``prepare_experiments`` recorded
    it in data.json. Without it there is no reference line: results never build the data."""
    data = read_json(exp_dir / "data.json", tolerant=True) or {}
    per_phase = {
        int(m.group(1)): float(v)
        for k, v in data.items()
        if (m := re.fullmatch(r"phase(\d+)_unigram_entropy", k)) and isinstance(v, int | float)
    }
    rows = [{"phase": p, "value": v, "source": "data.json"} for p, v in sorted(per_phase.items())]
    if not rows:
        report.notes.append("no reference line: data.json holds no unigram entropy")
    df = pd.DataFrame(rows, columns=["phase", "value", "source"])
    df.insert(0, "experiment", name)
    df.insert(1, "name", "unigram_entropy")
    df.insert(2, "label", "unigram entropy")
    df["phase"] = df["phase"].astype("Int64")
    df["value"] = df["value"].astype(float)
    return df
