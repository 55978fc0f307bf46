"""An experiment's trial directories -> tidy parquet tables; the only reader notebooks use.

:func:`collect` reads ``results/<experiment>/`` (the sweep driver's layout, below) and writes,
each atomically (temporary file, then ``os.replace``)::

    curves.parquet      one row per (trial, curve line, metric): the train metrics of
                        metrics.jsonl and the val metrics of val.jsonl, long format
    runs.parquet        one row per trial: settings, status, final and best metrics
    layers.parquet      one row per (trial, layers.jsonl line, tensor): per-tensor trust ratios
    reference.parquet   reference lines (the unigram entropy of the masked tokens)
    collect.json        the :class:`CollectReport`: counts and what is missing

The input layout (written by ``ablations.train`` and the sweep driver)::

    sweep.json      {"name", "variants": {variant: {dotted.path: value}}, "experiment": {
                     "description", "claim", "tune": {dotted.path: {"low", "high", "log"}}, ...}}
                    ("tune" may also be at the top level)
    study.journal   Optuna JournalStorage; study_name == experiment
    data.json       optional: {"phase<i>_unigram_entropy": nats, ...} or {"unigram_entropy": nats}
    <n>/            one per trial, n = the original Optuna trial number (a retry reuses it):
                    trial.json, config.yaml, status.json, meta.json, metrics.jsonl, val.jsonl,
                    layers.jsonl (formats: ablations/curves.py)

Columns. ``curves``: experiment, trial, attempt, variant, one column per toggle and per tuned
hyperparameter (named by its dotted config path, e.g. ``optimizer.overrides.prenorm``,
``phases.0.lr``; a trial that does not set one gets the value its config.yaml resolves to), seed,
stage, phase, step, phase_step, samples, tokens, wall_time, metric, value. ``attempt`` is the
Optuna number of the trial's latest attempt (equal to ``trial`` unless it was retried): a retry
resumes the original's checkpoint and truncates its curves, so which attempt wrote a given line
cannot be told apart; ``runs.attempts`` counts them. Non-finite values (written as null) are NaN.
``runs``: experiment, trial, attempt, attempts, variant, the settings, seed, stage, slot, status,
state (Optuna's, of the latest attempt), value (the study's objective; +inf if diverged), reason
(divergence reason or error), has_dir, has_status, steps (the last logged), total_steps, phase,
samples, wall_time, final_train_loss, final_train_mlm_loss, ``final_``/``best_`` of each val
metric (``final_val_mlm_loss``, ...) and ``final_val_{loss,mlm_loss}_phase{1,2}``. A setting
whose path is a column name (``seed``, ...) is named ``config.<path>``.
``layers``: experiment, trial, attempt, variant, seed, stage, phase, step, phase_step, tensor,
layer (the tensor's trust-ratio layer), block (embeddings, encoder.<i>, pooler, mlm_head,
nsp_head), index (the tensor's position in the model), trust_ratio, weight_norm, update_norm.

Status of a run (``runs.status``; the vocabulary: :mod:`ablations.status`), from status.json and
the study's latest attempt: complete, diverged (both final: training said so), pruned, failed,
interrupted (preempted or lost, not yet retried), running, waiting (queued in the study, never
started) and missing (neither status.json nor a study verdict). ``final_<metric>`` is the last
evaluation of a *complete* run (NaN for any other status: a diverged run has no final loss, it
ranks worst through ``value`` = +inf and the divergence rate); ``best_<metric>`` is the best
evaluation seen in any run.

Loaders (:func:`load_curves`, :func:`load_runs`, :func:`load_layers`, :func:`reference_lines`)
read the parquet and collect first when it is missing or older than the trial files; committed
results without trial directories are read as they are (a missing table there is an error, not
an empty collection). The statistics notebooks use are in :mod:`ablations.stats`:
``summarize`` (final-metric mean and 95% t-interval per variant, divergence rate),
``time_to_target`` and ``performance_profile`` (AlgoPerf's, r_max = 4).

Command line: ``python -m ablations.results collect results/<experiment> [...] [--force]``: a
collect never replaces a table with one of fewer trials or rows without ``--force``, and never
writes into committed results (a folder marked by ``fileio.FROZEN``).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .errors import fail, one_line
from .fileio import FrozenError, check_writable, read_json, replacing, write_atomic
from .status import COLLECTED, DONE, STOPPED, Status

CURVES, RUNS, LAYERS, REFERENCE, REPORT = (
    "curves.parquet",
    "runs.parquet",
    "layers.parquet",
    "reference.parquet",
    "collect.json",
)
_TABLES = (CURVES, RUNS, LAYERS, REFERENCE)
#: Bumped when a table's columns change: older tables are then collected again.
SCHEMA = 1
#: Every run file whose change makes the tables stale.
_INPUTS = ("trial.json", "config.yaml", "status.json", "metrics.jsonl", "val.jsonl", "layers.jsonl")
#: Curve-line fields that are coordinates, not metrics.
_COORDS = ("phase", "step", "phase_step", "samples", "tokens", "wall_time")
_TOKENS = _COORDS.index("tokens")
#: Losses are minimized, everything else (accuracies) maximized, for ``best_*``.
_SUMMARY_METRICS = ("val/loss", "val/mlm_loss", "val/nsp_loss", "val/mlm_acc", "val/nsp_acc")


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


# --- collect ------------------------------------------------------------------------------------


@dataclass
class _Trial:
    """Everything known about one trial (a directory and/or its attempts in the study)."""

    number: int
    path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)  # trial.json
    config: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    attempts: list[Any] = field(default_factory=list)  # optuna FrozenTrials, oldest first


def collect(
    exp_dir: Path | str, *, compute_reference: bool = True, force: bool = False
) -> CollectReport:
    """Read every trial of an experiment and write its parquet tables (see the module doc).

    Args:
        exp_dir: ``results/<experiment>``.
        compute_reference: when data.json gives no unigram entropy, compute it from the first
            trial's data config (``BertDataModule.unigram_entropy``; may build the data cache).
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
    exp_dir = _experiment_dir(exp_dir)
    try:
        check_writable(exp_dir)
    except FrozenError as e:
        raise ResultsError(str(e)) from None
    spec = read_json(exp_dir / "sweep.json", tolerant=True) or {}
    name = str(spec.get("name") or exp_dir.name)
    report = CollectReport(experiment=name, exp_dir=str(exp_dir))
    if not spec:
        report.notes.append("no sweep.json: variants and toggles from trial.json/config.yaml")
    trials = _gather(exp_dir, name, report)
    columns = _setting_columns(spec, trials)

    run_rows, curve_parts, layer_parts = [], [], []
    for trial in trials.values():
        settings = _settings(trial, spec, columns)
        metrics = _read_curve(trial, "metrics", report)
        val = _read_curve(trial, "val", report)
        run_rows.append(_run_row(name, trial, settings, metrics, val, report))
        curve_parts.append(_curve_frame(name, settings, metrics, val))
        layer_parts.append(_layer_frame(name, settings, _read_curve(trial, "layers", report)))

    toggles, params = columns
    runs = _frame(run_rows, _run_columns(toggles, params))
    curves = _concat(curve_parts, _curve_columns(toggles, params))
    layers = _concat(layer_parts, _LAYER_COLUMNS)
    variants = _variant_order(spec, runs)
    for df in (runs, curves, layers):
        _categorize(df, variants)
    reference = _reference(exp_dir, name, trials, compute_reference, report)

    report.trials = len(runs)
    report.statuses = {s.value: int((runs["status"] == s).sum()) for s in COLLECTED}
    report.curve_rows, report.layer_rows = len(curves), len(layers)
    if not force:
        _refuse_to_shrink(exp_dir, {RUNS: len(runs), CURVES: len(curves), LAYERS: len(layers)})
    for filename, df in ((CURVES, curves), (RUNS, runs), (LAYERS, layers), (REFERENCE, reference)):
        _write_parquet(exp_dir / filename, df)
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


def _experiment_dir(exp_dir: Path | str) -> Path:
    path = Path(exp_dir)
    if not path.is_dir():
        raise ResultsError(f"{path}: no such experiment directory")
    if not (_has_inputs(path) or (path / RUNS).exists()):
        raise ResultsError(
            f"{path}: not an experiment directory (no sweep.json, study.journal or trial dirs)"
        )
    return path


def _trial_dirs(exp_dir: Path) -> dict[int, Path]:
    return {int(p.name): p for p in exp_dir.iterdir() if p.is_dir() and p.name.isdigit()}


def _has_inputs(exp_dir: Path) -> bool:
    names = ("sweep.json", "study.journal")
    return any((exp_dir / n).exists() for n in names) or bool(_trial_dirs(exp_dir))


def _gather(exp_dir: Path, name: str, report: CollectReport) -> dict[int, _Trial]:
    """Trial directories and study trials, grouped by original trial number."""
    trials: dict[int, _Trial] = {}
    owner: dict[int, int] = {}  # optuna number -> original number (from trial.json)
    for number, path in sorted(_trial_dirs(exp_dir).items()):
        trial = trials[number] = _Trial(number, path)
        trial.info = read_json(path / "trial.json", tolerant=True) or {}
        trial.status = read_json(path / "status.json", tolerant=True)
        config_path = path / "config.yaml"
        if config_path.exists():
            trial.config = yaml.safe_load(config_path.read_text())
        for attempt in trial.info.get("attempts", []):
            owner[int(attempt)] = number
        if not trial.info:
            report.missing.append(f"trial {number}: no trial.json")
        if trial.status is None:
            report.missing.append(f"trial {number}: directory without status.json")

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
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in spans)


def _original(number: int, by_number: Mapping[int, Any], owner: Mapping[int, int]) -> int:
    """The trial an Optuna trial is an attempt of: trial.json's attempts, else the chain of
    ``system_attrs["failed_trial"]`` (a retry of a retry leads back to the original)."""
    seen: set[int] = set()
    while number not in owner and number not in seen:
        seen.add(number)
        attrs = by_number[number].system_attrs if number in by_number else {}
        if "failed_trial" not in attrs:
            break
        number = int(attrs["failed_trial"])
    return owner.get(number, number)


def _study_trials(exp_dir: Path, name: str, report: CollectReport) -> list[Any]:
    path = exp_dir / "study.journal"
    if not path.exists():
        report.missing.append("no study.journal: statuses from status.json only")
        return []
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
            study = optuna.load_study(study_name=name, storage=JournalStorage(backend))
            return list(study.get_trials(deepcopy=False))
    except Exception as e:  # a broken or foreign journal must not hide the curves
        report.missing.append(f"study.journal: cannot load study {name!r}: {one_line(e)}")
        return []


# --- settings -----------------------------------------------------------------------------------

#: Columns every table has; a toggle or hyperparameter with one of these paths is renamed.
_RESERVED = {"experiment", "trial", "attempt", "variant", "seed", "stage", "slot", "status"}


def _column(path: str) -> str:
    return f"config.{path}" if path in _RESERVED or path in _COORDS else path


def _setting_columns(
    spec: Mapping[str, Any], trials: Mapping[int, _Trial]
) -> tuple[list[str], list[str]]:
    """Toggle and tuned-hyperparameter paths: the spec's, then any a trial adds."""
    toggles: dict[str, None] = {}
    for values in (spec.get("variants") or {}).values():
        toggles.update(dict.fromkeys(values or {}))
    params = dict.fromkeys(_tune(spec))
    for trial in trials.values():
        toggles.update(dict.fromkeys(trial.info.get("toggles") or {}))
        params.update(dict.fromkeys(trial.info.get("params") or {}))
        for attempt in trial.attempts:
            params.update(dict.fromkeys(attempt.params))
    params = {p: None for p in params if p not in toggles}
    return list(toggles), list(params)


def _tune(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    """The tuned hyperparameters: ``tune`` at the top of sweep.json or in its ``experiment``."""
    return spec.get("tune") or (spec.get("experiment") or {}).get("tune") or {}


def _settings(
    trial: _Trial, spec: Mapping[str, Any], columns: tuple[list[str], list[str]]
) -> dict[str, Any]:
    """Variant, seed, stage, slot, toggles and hyperparameters of a trial.

    Taken from trial.json, then the study's user attributes and params, then the spec; a toggle
    or hyperparameter still unknown is read from the trial's config.yaml.
    """
    info = trial.info
    attrs: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for attempt in trial.attempts:
        attrs = {**attempt.user_attrs, **attrs}  # the oldest attempt's values win
        params = {**attempt.params, **params}
    variants = spec.get("variants") or {}
    variant = info.get("variant", attrs.get("variant"))
    if variant is None and trial.config is not None:
        variant = _match_variant(trial.config, variants)
    toggles = {**(variants.get(variant) or {}), **(info.get("toggles") or {})}
    params = {**params, **(info.get("params") or {})}
    seed = info.get("seed", attrs.get("seed"))
    if seed is None and trial.config is not None:
        seed = trial.config.get("seed")
    attempts = {int(a) for a in info.get("attempts", [])} | {t.number for t in trial.attempts}
    out = {
        "trial": trial.number,
        "attempt": max(attempts) if attempts else trial.number,
        "attempts": max(len(attempts), 1 if trial.path is not None else 0),
        "variant": str(variant) if variant is not None else "unknown",
        "seed": seed,
        "stage": info.get("stage", attrs.get("stage")),
        "slot": info.get("slot", attrs.get("slot")),
    }
    toggle_cols, param_cols = columns
    for path, given in [(p, toggles) for p in toggle_cols] + [(p, params) for p in param_cols]:
        value = given[path] if path in given else _lookup(trial.config, path)
        out[_column(path)] = json.dumps(value) if isinstance(value, list | dict) else value
    return out


def _match_variant(config: Mapping[str, Any], variants: Mapping[str, Any]) -> str | None:
    """The one spec variant whose toggles all equal the config's values, if exactly one."""
    found = [
        name
        for name, toggles in variants.items()
        if all(_lookup(config, path) == value for path, value in (toggles or {}).items())
    ]
    return found[0] if len(found) == 1 else None


def _lookup(config: Mapping[str, Any] | None, path: str) -> Any:
    """The value at a dotted path of a run config (list items by index); None if absent.

    An optimizer knob that the config does not override resolves to its preset's value.
    """
    if config is None:
        return None
    node: Any = config
    for part in path.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return _knob_default(config, path)
    return node


def _knob_default(config: Mapping[str, Any], path: str) -> Any:
    prefix = "optimizer.overrides."
    if not path.startswith(prefix):
        return None
    import lamb_variants

    knob = path[len(prefix) :]
    preset = lamb_variants.PRESETS.get((config.get("optimizer") or {}).get("preset", ""))
    if preset is not None and knob in preset.knobs:
        return preset.knobs[knob]
    value = lamb_variants.DEFAULTS.get(knob)
    return list(value) if isinstance(value, tuple) else value


# --- curves -------------------------------------------------------------------------------------


def _read_curve(trial: _Trial, kind: str, report: CollectReport) -> list[dict[str, Any]]:
    """The complete lines of ``<kind>.jsonl``; a torn or unparsable line is dropped and reported.

    As ``Curves.truncate``: a line counts only if it parses and ends with a newline.
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


def _constants(name: str, settings: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {"experiment": name, **{k: settings[k] for k in keys}}


def _curve_frame(
    name: str,
    settings: Mapping[str, Any],
    metrics: list[dict[str, Any]],
    val: list[dict[str, Any]],
) -> pd.DataFrame | None:
    tokens = {r.get("step"): r.get("tokens") for r in metrics}
    cols: dict[str, list[Any]] = {k: [] for k in (*_COORDS, "metric", "value")}
    for records in (metrics, val):
        for record in records:
            coords = [record.get(k) for k in _COORDS]
            if coords[_TOKENS] is None:  # val lines: tokens of the training step they follow
                coords[_TOKENS] = tokens.get(record.get("step"))
            for key, value in record.items():
                if key in _COORDS or not isinstance(value, int | float | None):
                    continue
                for k, c in zip(_COORDS, coords, strict=True):
                    cols[k].append(c)
                cols["metric"].append(key)
                cols["value"].append(math.nan if value is None else float(value))
    if not cols["metric"]:
        return None
    df = pd.DataFrame(cols)
    keys = [k for k in settings if k not in ("attempts", "slot")]
    for key, value in _constants(name, settings, keys).items():
        df[key] = value
    return df


_LAYER_FIELDS = ("phase", "step", "phase_step", "tensor", "layer", "block", "index")
_LAYER_VALUES = ("trust_ratio", "weight_norm", "update_norm")
_LAYER_COLUMNS = [
    *("experiment", "trial", "attempt", "variant", "seed", "stage"),
    *_LAYER_FIELDS,
    *_LAYER_VALUES,
]


def _layer_frame(
    name: str, settings: Mapping[str, Any], records: list[dict[str, Any]]
) -> pd.DataFrame | None:
    cols: dict[str, list[Any]] = {k: [] for k in (*_LAYER_FIELDS, *_LAYER_VALUES)}
    for r in records:
        tensors = list(r.get("tensors") or [])
        n = len(tensors)
        layers = r.get("layers") or []
        for key in ("phase", "step", "phase_step"):
            cols[key] += [r.get(key)] * n
        cols["tensor"] += tensors
        cols["layer"] += layers if len(layers) == n else tensors
        cols["block"] += [block(t) for t in tensors]
        cols["index"] += range(n)
        for key in _LAYER_VALUES:
            got = r.get(key) or []
            got = got if len(got) == n else [None] * n
            cols[key] += [math.nan if v is None else float(v) for v in got]
    if not cols["tensor"]:
        return None
    df = pd.DataFrame(cols)
    keys = ("trial", "attempt", "variant", "seed", "stage")
    for key, value in _constants(name, settings, keys).items():
        df[key] = value
    return df


@functools.cache
def block(tensor: str) -> str:
    """The part of BERT a parameter belongs to: ``embeddings``, ``encoder.<i>``, ``pooler``,
    ``mlm_head``, ``nsp_head`` (other names: their first two components)."""
    match = re.search(r"encoder\.layer\.(\d+)\.", tensor)
    if match:
        return f"encoder.{match.group(1)}"
    for key, name in (
        ("embeddings.", "embeddings"),
        ("pooler.", "pooler"),
        ("cls.predictions.", "mlm_head"),
        ("cls.seq_relationship.", "nsp_head"),
    ):
        if key in tensor:
            return name
    return ".".join(tensor.split(".")[:2])


# --- runs ---------------------------------------------------------------------------------------


def _metric_column(kind: str, metric: str) -> str:
    return f"{kind}_{metric.replace('/', '_')}"


_RUN_KEYS = ("experiment", "trial", "attempt", "attempts", "variant")
_RUN_STATE = ("seed", "stage", "slot", "status", "state", "value", "reason")
_RUN_PRESENT = ("has_dir", "has_status")
_RUN_PROGRESS = ("steps", "total_steps", "phase", "samples", "wall_time")


def _run_columns(toggles: list[str], params: list[str]) -> list[str]:
    settings = [_column(p) for p in [*toggles, *params]]
    train = [_metric_column("final", m) for m in ("train/loss", "train/mlm_loss")]
    finals = [_metric_column(k, m) for m in _SUMMARY_METRICS for k in ("final", "best")]
    phases = [f"{_metric_column('final', m)}_phase{p}" for p in (1, 2) for m in _PHASE_METRICS]
    fixed = [*_RUN_STATE, *_RUN_PRESENT, *_RUN_PROGRESS]
    return [*_RUN_KEYS, *settings, *fixed, *train, *finals, *phases]


_PHASE_METRICS = ("val/loss", "val/mlm_loss")


def _curve_columns(toggles: list[str], params: list[str]) -> list[str]:
    settings = [_column(p) for p in [*toggles, *params]]
    keys = ["experiment", "trial", "attempt", "variant"]
    return [*keys, *settings, "seed", "stage", *_COORDS, "metric", "value"]


def _run_row(
    name: str,
    trial: _Trial,
    settings: Mapping[str, Any],
    metrics: list[dict[str, Any]],
    val: list[dict[str, Any]],
    report: CollectReport,
) -> dict[str, Any]:
    latest = trial.attempts[-1] if trial.attempts else None
    status = _status(trial, latest)
    if status in DONE and trial.path is not None and not metrics:
        report.missing.append(f"trial {trial.number}: {status} but metrics.jsonl has no lines")
    last = metrics[-1] if metrics else {}
    phases = (trial.config or {}).get("phases") or []
    row: dict[str, Any] = {
        "experiment": name,
        **settings,
        "status": status,
        "state": latest.state.name if latest is not None else None,
        "value": _study_value(latest),
        "reason": _reason(trial, latest),
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
        row[_metric_column("final", metric)] = _num(last.get(metric)) if complete else math.nan
    for metric in _SUMMARY_METRICS:
        values = np.array([_num(r.get(metric)) for r in val if metric in r], dtype=float)
        final = values[-1] if complete and len(values) else math.nan
        row[_metric_column("final", metric)] = final
        best = np.nan
        if np.isfinite(values).any():
            best = np.nanmin(values) if "loss" in metric else np.nanmax(values)
        row[_metric_column("best", metric)] = float(best)
    for p in (1, 2):
        planned = phases[p - 1].get("steps") if len(phases) >= p else None
        in_phase = [r for r in val if r.get("phase") == p]
        done = planned is not None and in_phase and in_phase[-1].get("phase_step") == planned
        for metric in _PHASE_METRICS:
            value = _num(in_phase[-1].get(metric)) if done else math.nan
            row[f"{_metric_column('final', metric)}_phase{p}"] = value
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
    if latest is None or latest.state.name != "COMPLETE" or latest.values is None:
        return math.nan
    return float(latest.values[0])


def _reason(trial: _Trial, latest: Any) -> str | None:
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


def _reference(
    exp_dir: Path,
    name: str,
    trials: Mapping[int, _Trial],
    compute: bool,
    report: CollectReport,
) -> pd.DataFrame:
    """Unigram entropy of the masked tokens, per phase where known (data.json, else computed)."""
    rows: list[dict[str, Any]] = []
    label = "unigram entropy"
    data = read_json(exp_dir / "data.json", tolerant=True) or {}
    per_phase = {
        int(m.group(1)): v
        for k, v in data.items()
        if (m := re.fullmatch(r"phase(\d+)_unigram_entropy", k)) and isinstance(v, int | float)
    }
    given = data.get("unigram_entropy")
    if per_phase:
        rows += [
            {"phase": p, "value": float(v), "source": "data.json"} for p, v in per_phase.items()
        ]
    elif isinstance(given, int | float):
        rows.append({"phase": None, "value": float(given), "source": "data.json"})
    elif compute:
        rows += _computed_entropy(trials, report)
    else:
        report.notes.append("no unigram entropy in data.json (not computed)")
    df = pd.DataFrame(rows, columns=["phase", "value", "source"])
    df.insert(0, "experiment", name)
    df.insert(1, "name", "unigram_entropy")
    df.insert(2, "label", label)
    df["phase"] = df["phase"].astype("Int64")
    df["value"] = df["value"].astype(float)
    return df


def _computed_entropy(trials: Mapping[int, _Trial], report: CollectReport) -> list[dict]:
    config = next((t.config for t in trials.values() if t.config is not None), None)
    if config is None:
        report.notes.append("no unigram entropy: no data.json and no config.yaml to compute it")
        return []
    try:
        from .config import RunConfig
        from .data.datamodule import BertDataModule

        run = RunConfig.from_dict(config)
        return [
            {
                "phase": i + 1,
                "value": float(BertDataModule(run.data, phase, run.seed).unigram_entropy),
                "source": "computed",
            }
            for i, phase in enumerate(run.phases)
        ]
    except Exception as e:  # data not reachable from here: the curves are still collected
        report.notes.append(f"no unigram entropy: computing it failed: {one_line(e)}")
        return []


# --- tables -------------------------------------------------------------------------------------


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns)
    return _normalize(df)


def _concat(parts: list[pd.DataFrame | None], columns: list[str]) -> pd.DataFrame:
    parts = [p for p in parts if p is not None and len(p)]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=_EMPTY_DTYPES.get(c, "object")) for c in columns})
    df = pd.concat(parts, ignore_index=True)
    return _normalize(df.reindex(columns=columns))


#: Column types of an empty table (no trial has curves yet).
_EMPTY_DTYPES = {
    **dict.fromkeys(("trial", "attempt"), "int64"),
    **dict.fromkeys(("phase", "step", "phase_step", "samples", "tokens", "index", "seed"), "Int64"),
    **dict.fromkeys(("wall_time", "value", "trust_ratio", "weight_norm", "update_norm"), "float64"),
    **dict.fromkeys(("metric", "tensor", "layer", "block", "variant", "stage"), "str"),
    "experiment": "str",
}


def _normalize(df: pd.DataFrame) -> pd.DataFrame:
    """One parquet type per column: integer columns with gaps become nullable integers, a
    column mixing strings, booleans and numbers becomes strings."""
    for col in df.columns:
        series = df[col]
        if series.dtype != object:
            continue
        present = series.dropna()
        kinds = {_kind(v) for v in present}
        if not kinds:
            df[col] = series.astype("object")
        elif kinds == {"int"}:
            df[col] = series.astype("Int64")
        elif kinds <= {"int", "float"}:
            df[col] = series.astype("float64")
        elif kinds == {"bool"}:
            df[col] = series.astype("boolean")
        else:
            df[col] = series.map(lambda v: v if v is None or pd.isna(v) else str(v)).astype("str")
    return df


def _kind(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, int | np.integer):
        return "int"
    if isinstance(value, float | np.floating):
        return "float"
    return "str"


def _variant_order(spec: Mapping[str, Any], runs: pd.DataFrame) -> list[str]:
    order = [str(v) for v in spec.get("variants") or {}]
    return order + sorted(set(runs["variant"].astype(str)) - set(order))


def _categorize(df: pd.DataFrame, variants: list[str]) -> None:
    """Variants in the spec's order (so every figure orders them the same); compact strings."""
    df["variant"] = pd.Categorical(df["variant"].astype("str"), categories=variants)
    for col in ("metric", "stage", "block", "experiment"):
        if col in df.columns:
            df[col] = df[col].astype("category")


def _write_parquet(path: Path, df: pd.DataFrame) -> None:
    with replacing(path) as tmp:
        df.to_parquet(tmp, index=False)


# --- loaders ------------------------------------------------------------------------------------


def is_stale(exp_dir: Path | str) -> bool:
    """Whether the tables are missing, of an older schema, or older than a run file.

    Only an experiment with trial curves on disk can be stale: committed results that keep the
    parquet and not the trial directories are read as they are.
    """
    exp_dir = Path(exp_dir)
    dirs = _trial_dirs(exp_dir) if exp_dir.is_dir() else {}
    if not any(
        (d / "metrics.jsonl").exists() or (d / "status.json").exists() for d in dirs.values()
    ):
        return False
    tables = [exp_dir / n for n in _TABLES]
    if not all(t.exists() for t in tables):
        return True
    if (read_json(exp_dir / REPORT, tolerant=True) or {}).get("schema") != SCHEMA:
        return True
    written = min(t.stat().st_mtime_ns for t in tables)
    return any(p.stat().st_mtime_ns > written for p in _input_files(exp_dir, dirs))


def _input_files(exp_dir: Path, dirs: Mapping[int, Path]) -> Iterator[Path]:
    for name in ("sweep.json", "data.json", "study.journal"):
        if (exp_dir / name).exists():
            yield exp_dir / name
    for d in dirs.values():
        yield from (d / name for name in _INPUTS if (d / name).exists())


def _load(exp_dir: Path | str, filename: str) -> pd.DataFrame:
    path = Path(exp_dir)
    if not path.is_dir():
        raise ResultsError(f"{path}: no such experiment directory")
    missing = not (path / filename).exists()
    if missing and not _trial_dirs(path) and any((path / t).exists() for t in _TABLES):
        # committed tables without their trial directories: collecting would empty the others
        raise ResultsError(f"{path / filename}: missing, and no trial directories to collect")
    if missing or is_stale(path):
        report = collect(path)
        if report.missing or report.torn:
            warnings.warn(str(report), stacklevel=3)
    return pd.read_parquet(path / filename)


def load_curves(exp_dir: Path | str) -> pd.DataFrame:
    """The experiment's curves (long format; see the module doc), collected first if stale."""
    return _load(exp_dir, CURVES)


def load_runs(exp_dir: Path | str) -> pd.DataFrame:
    """One row per trial (settings, status, final and best metrics), collected if stale."""
    return _load(exp_dir, RUNS)


def load_layers(exp_dir: Path | str) -> pd.DataFrame:
    """Per-tensor trust ratios and norms every ``log.layer_every`` steps, collected if stale."""
    return _load(exp_dir, LAYERS)


def reference_lines(exp_dir: Path | str) -> pd.DataFrame:
    """Reference values to draw on MLM-loss plots: ``name``, ``label``, ``phase`` (<NA>: every
    phase) and ``value``; today the unigram entropy of the masked tokens (nats)."""
    return _load(exp_dir, REFERENCE)


def load_report(exp_dir: Path | str) -> CollectReport:
    """The report of the last :func:`collect` (collected now if stale)."""
    _load(exp_dir, RUNS)
    raw = read_json(Path(exp_dir) / REPORT, tolerant=True) or {}
    known = CollectReport.__dataclass_fields__
    return CollectReport(**{k: v for k, v in raw.items() if k in known})


def load_spec(exp_dir: Path | str) -> dict[str, Any]:
    """The experiment's sweep.json (name, variants, experiment, ...); {} if absent."""
    return read_json(Path(exp_dir) / "sweep.json", tolerant=True) or {}


def describe(exp_dir: Path | str) -> str:
    """The experiment's name, description and claim from sweep.json, as Markdown-ish text."""
    spec = load_spec(exp_dir)
    inner = spec.get("experiment") or {}
    lines = [f"experiment: {spec.get('name') or Path(exp_dir).name}"]
    for key in ("description", "claim"):
        text = spec.get(key) or inner.get(key)
        if text:
            lines.append(f"{key}: {text}")
    return "\n".join(lines)


def variant_table(exp_dir: Path | str) -> pd.DataFrame:
    """What each variant sets: one row per variant, one column per toggle (dotted path).

    From sweep.json; without it, the setting columns of runs.parquet that are constant within
    every variant.
    """
    variants = load_spec(exp_dir).get("variants") or {}
    if variants:
        return pd.DataFrame.from_dict(variants, orient="index").rename_axis("variant")
    runs = load_runs(exp_dir)
    start, stop = list(runs.columns).index("variant") + 1, list(runs.columns).index("seed")
    columns = [
        c
        for c in runs.columns[start:stop]
        if (runs.groupby("variant", observed=True)[c].nunique(dropna=False) <= 1).all()
    ]
    return runs.groupby("variant", observed=True)[columns].first()


# --- command line -------------------------------------------------------------------------------


def collect_main(
    paths: Sequence[Path | str],
    *,
    compute_reference: bool = True,
    quiet: bool = False,
    force: bool = False,
) -> int:
    """``collect`` for each path: prints each report; a bad path (or a refused one: committed,
    or its tables would shrink without ``force``) prints a one-line error naming it on stderr
    and returns 2 (after the other paths are collected)."""
    code = 0
    for path in paths:
        try:
            report = collect(path, compute_reference=compute_reference, force=force)
        except ResultsError as e:
            code = fail(e)
            continue
        if not quiet:
            print(report)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ablations.results collect EXP_DIR [EXP_DIR ...] [--no-reference] [-q]``."""
    parser = argparse.ArgumentParser(prog="python -m ablations.results")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("collect", help="trial directories -> curves/runs/layers parquet")
    p.add_argument("exp_dirs", nargs="+", type=Path, metavar="EXP_DIR", help="results/<exp>")
    p.add_argument(
        "--no-reference",
        action="store_true",
        help="do not compute the unigram entropy when data.json lacks it",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    p.add_argument(
        "--force", action="store_true", help="replace tables even with fewer trials or rows"
    )
    args = parser.parse_args(argv)
    return collect_main(
        args.exp_dirs, compute_reference=not args.no_reference, quiet=args.quiet, force=args.force
    )


if __name__ == "__main__":
    sys.exit(main())
