"""An experiment's trial directories and study -> tidy parquet tables (the writing half of results).

:func:`collect` reads ``results/<experiment>/`` (the sweep driver's layout:
:mod:`ablations.results.layout`) and writes, each atomically (temporary file, then
``os.replace``)::

    curves.parquet      one row per (trial, curve line, metric): the train metrics of
                        metrics.jsonl and the val metrics of val.jsonl, long format
    runs.parquet        one row per trial: settings, status, final and best metrics
    layers.parquet      one row per (trial, layers.jsonl line, tensor): per-tensor trust ratios
    reference.parquet   reference lines (the unigram entropy of the masked tokens)
    collect.json        the :class:`~ablations.results.report.CollectReport`: counts and what is
                        missing

It reads only what the harness writes, and computes nothing the harness already recorded. The
steps, one module each: the trials (:mod:`~ablations.results.trials`: directories and study
attempts), their settings (:mod:`~ablations.results.settings`), one runs row each with its
status (:mod:`~ablations.results.run_rows`), the reference lines
(:mod:`~ablations.results.reference`); the frames themselves (columns, types, curve and layer
lines) are built in :mod:`ablations.results.tables`; the readers notebooks use are in
:mod:`ablations.results.load`.

Columns. ``curves``: experiment, trial, attempt, variant, one column per toggle and per tuned
hyperparameter (named by its dotted config path, e.g. ``optimizer.overrides.prenorm``,
``phases.0.lr``; a trial that does not set one gets the value its run resolves to,
``resolved.json``: an optimizer knob the config leaves to its preset is the preset's), seed,
stage, phase, step, phase_step, samples, tokens, wall_time, metric, value. ``attempt`` is the
Optuna number of the trial's latest attempt (equal to ``trial`` unless it was retried): a retry
resumes the original's checkpoint and truncates its curves, so which attempt wrote a given line
cannot be told apart; ``runs.attempts`` counts them. Non-finite values (written as null) are
NaN.
``runs``: experiment, trial, attempt, attempts, variant, the settings, seed, stage, slot, status
(:mod:`~ablations.results.run_rows` says how it is decided), state (Optuna's, of the latest
attempt), value (the study's objective; +inf if diverged), reason (divergence reason or error),
reused_from (``<experiment>/<trial>`` of the identical finished run the trial adopted instead of
training, :mod:`ablations.sweep.reuse`; null if it trained; absent from tables collected before
it existed), has_dir, has_status, steps (the last logged), total_steps, phase, samples,
wall_time, final_train_loss, final_train_mlm_loss, ``final_``/``best_`` of each val metric
(``final_val_mlm_loss``, ...) and ``final_val_{loss,mlm_loss}_phase{1,2}``, and for each of the
experiment's ``targets`` t, ``steps_to_<t>`` and ``samples_to_<t>`` (the first validation
reaching it; NaN if none does: :func:`ablations.results.tables.with_targets`), then outcome
(trained, failed to train, diverged; null if unfinished), outcome_reason, peak_trust_ratio,
grad_norm_spike and warning (:mod:`ablations.results.outcomes`). A setting whose path is a column
name (``seed``, ...) is named ``config.<path>``.
``layers``: experiment, trial, attempt, variant, seed, stage, phase, step, phase_step, tensor,
layer (the tensor's trust-ratio layer), block (embeddings, encoder.<i>, pooler, mlm_head,
nsp_head), index (the tensor's position in the model), trust_ratio, weight_norm, update_norm,
eps_dominated, sqrt_v_over_eps, relative_update (NaN in runs older than that telemetry).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import pyarrow.parquet as pq

from ablations.core.fileio import FrozenError, check_writable, read_json, replacing, write_atomic
from ablations.core.status import COLLECTED
from ablations.results import tables
from ablations.results.layout import (
    CURVES,
    LAYERS,
    REFERENCE,
    REPORT,
    RUNS,
    ResultsError,
    experiment_dir,
)
from ablations.results.outcomes import with_outcomes
from ablations.results.reference import read_reference
from ablations.results.report import CollectReport
from ablations.results.run_rows import run_row
from ablations.results.settings import setting_columns, trial_settings
from ablations.results.trials import gather, read_curve


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
    trials = gather(exp_dir, name, report)
    toggles, params = setting_columns(spec, trials)

    run_rows, curve_parts, layer_parts = [], [], []
    for trial in trials.values():
        settings = trial_settings(trial, spec, toggles, params)
        metrics = read_curve(trial, "metrics", report)
        val = read_curve(trial, "val", report)
        run_rows.append(run_row(name, trial, settings, metrics, val, report))
        curve_parts.append(tables.curve_frame(name, settings, metrics, val))
        layers = read_curve(trial, "layers", report)
        layer_parts.append(tables.layer_frame(name, settings, layers))

    runs = tables.frame(run_rows, tables.run_columns(toggles, params))
    curves = tables.concat(curve_parts, tables.curve_columns(toggles, params))
    declared = spec.get("experiment") or {}
    objective = declared.get("objective") or "val/mlm_loss"
    runs = tables.with_targets(runs, curves, declared.get("targets") or (), objective)
    reference = read_reference(exp_dir, name, report)
    runs = with_outcomes(runs, curves, reference)
    layers = tables.concat(layer_parts, tables.LAYER_COLUMNS)
    variants = tables.variant_order(spec, runs)
    for df in (runs, curves, layers):
        tables.categorize(df, variants)

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
