"""The results tables' columns, types and rows: curve and layer lines -> frames, one parquet type
per column, and the columns derived from the curves (time to a target loss).

Apart from the modules that decide *what* a trial's settings (:mod:`ablations.results.settings`)
and status (:mod:`ablations.results.run_rows`) are, so that the shape of the tables, which
committed results and notebooks depend on, is in one place. The columns are documented in
:mod:`ablations.results.collect`.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ablations.run.curves import LAYER_VALUES

#: Curve-line fields that are coordinates, not metrics.
COORDS = ("phase", "step", "phase_step", "samples", "tokens", "wall_time")
_TOKENS = COORDS.index("tokens")
#: Losses are minimized, everything else (accuracies) maximized, for ``best_*``.
SUMMARY_METRICS = ("val/loss", "val/mlm_loss", "val/nsp_loss", "val/mlm_acc", "val/nsp_acc")
#: Val metrics also reported at the end of each phase.
PHASE_METRICS = ("val/loss", "val/mlm_loss")
#: Columns every table has; a toggle or hyperparameter with one of these paths is renamed.
_RESERVED = {"experiment", "trial", "attempt", "variant", "seed", "stage", "slot", "status"}

_LAYER_FIELDS = ("phase", "step", "phase_step", "tensor", "layer", "block", "index")
_LAYER_VALUES = LAYER_VALUES  # runs older than the ε and ‖Δw‖ telemetry read NaN
LAYER_COLUMNS = [
    *("experiment", "trial", "attempt", "variant", "seed", "stage"),
    *_LAYER_FIELDS,
    *_LAYER_VALUES,
]
_RUN_KEYS = ("experiment", "trial", "attempt", "attempts", "variant")
_RUN_STATE = ("seed", "stage", "slot", "status", "state", "value", "reason", "reused_from")
_RUN_PRESENT = ("has_dir", "has_status")
_RUN_PROGRESS = ("steps", "total_steps", "phase", "samples", "wall_time")

#: Column types of an empty table (no trial has curves yet).
_EMPTY_DTYPES = {
    **dict.fromkeys(("trial", "attempt"), "int64"),
    **dict.fromkeys(("phase", "step", "phase_step", "samples", "tokens", "index", "seed"), "Int64"),
    **dict.fromkeys(("wall_time", "value", *_LAYER_VALUES), "float64"),
    **dict.fromkeys(("metric", "tensor", "layer", "block", "variant", "stage"), "str"),
    "experiment": "str",
}


def column(path: str) -> str:
    """The column of a setting's dotted path (``config.<path>`` where it would clash)."""
    return f"config.{path}" if path in _RESERVED or path in COORDS else path


def metric_column(kind: str, metric: str) -> str:
    """``("final", "val/mlm_loss")`` -> ``final_val_mlm_loss``."""
    return f"{kind}_{metric.replace('/', '_')}"


def run_columns(toggles: list[str], params: list[str]) -> list[str]:
    """runs.parquet's columns, in order."""
    settings = [column(p) for p in [*toggles, *params]]
    train = [metric_column("final", m) for m in ("train/loss", "train/mlm_loss")]
    finals = [metric_column(k, m) for m in SUMMARY_METRICS for k in ("final", "best")]
    phases = [f"{metric_column('final', m)}_phase{p}" for p in (1, 2) for m in PHASE_METRICS]
    fixed = [*_RUN_STATE, *_RUN_PRESENT, *_RUN_PROGRESS]
    return [*_RUN_KEYS, *settings, *fixed, *train, *finals, *phases]


def curve_columns(toggles: list[str], params: list[str]) -> list[str]:
    """curves.parquet's columns, in order."""
    settings = [column(p) for p in [*toggles, *params]]
    keys = ["experiment", "trial", "attempt", "variant"]
    return [*keys, *settings, "seed", "stage", *COORDS, "metric", "value"]


def _constants(name: str, settings: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {"experiment": name, **{k: settings[k] for k in keys}}


def curve_frame(
    name: str,
    settings: Mapping[str, Any],
    metrics: list[dict[str, Any]],
    val: list[dict[str, Any]],
) -> pd.DataFrame | None:
    """A trial's metrics and val lines, long format (None when it has none)."""
    tokens = {r.get("step"): r.get("tokens") for r in metrics}
    cols: dict[str, list[Any]] = {k: [] for k in (*COORDS, "metric", "value")}
    for records in (metrics, val):
        for record in records:
            coords = [record.get(k) for k in COORDS]
            if coords[_TOKENS] is None:  # val lines: tokens of the training step they follow
                coords[_TOKENS] = tokens.get(record.get("step"))
            for key, value in record.items():
                if key in COORDS or not isinstance(value, int | float | None):
                    continue
                for k, c in zip(COORDS, coords, strict=True):
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


def layer_frame(
    name: str, settings: Mapping[str, Any], records: list[dict[str, Any]]
) -> pd.DataFrame | None:
    """A trial's layers.jsonl, one row per (line, tensor) (None when it has none).

    Every line lists ``tensors``, ``layers`` and the values per tensor, equally long
    (``ablations.run.module`` writes them from one step's telemetry).
    """
    cols: dict[str, list[Any]] = {k: [] for k in (*_LAYER_FIELDS, *_LAYER_VALUES)}
    for r in records:
        tensors = list(r["tensors"])
        n = len(tensors)
        for key in ("phase", "step", "phase_step"):
            cols[key] += [r.get(key)] * n
        cols["tensor"] += tensors
        cols["layer"] += r["layers"]
        cols["block"] += [block(t) for t in tensors]
        cols["index"] += range(n)
        for key in _LAYER_VALUES:
            values = r.get(key, [None] * n)
            cols[key] += [math.nan if v is None else float(v) for v in values]
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


def frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """Rows -> a frame with exactly ``columns``, normalized."""
    return normalize(pd.DataFrame(rows, columns=columns))


def concat(parts: list[pd.DataFrame | None], columns: list[str]) -> pd.DataFrame:
    """The trials' frames as one table with ``columns``; typed even when empty."""
    parts = [p for p in parts if p is not None and len(p)]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=_EMPTY_DTYPES.get(c, "object")) for c in columns})
    df = pd.concat(parts, ignore_index=True)
    return normalize(df.reindex(columns=columns))


def normalize(df: pd.DataFrame) -> pd.DataFrame:
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


def variant_order(spec: Mapping[str, Any], runs: pd.DataFrame) -> list[str]:
    """The spec's variants in its order, then any other a trial names."""
    order = [str(v) for v in spec.get("variants") or {}]
    return order + sorted(set(runs["variant"].astype(str)) - set(order))


def categorize(df: pd.DataFrame, variants: list[str]) -> None:
    """Variants in the spec's order (so every figure orders them the same); compact strings."""
    df["variant"] = pd.Categorical(df["variant"].astype("str"), categories=variants)
    for col in ("metric", "stage", "block", "experiment"):
        if col in df.columns:
            df[col] = df[col].astype("category")


def time_to_target(
    curves: pd.DataFrame,
    target: float,
    *,
    metric: str = "val/mlm_loss",
    time: str = "wall_time",
) -> pd.DataFrame:
    """Per trial, the ``time`` of the first evaluation with ``metric <= target`` (AlgoPerf: the
    clock at the first eval that crosses the target); +inf for a trial that never does (one that
    diverged or failed before, or without any evaluation).

    Returns: one row per trial of ``curves``: trial, variant, seed, stage, time, step.
    """
    evals = curves[curves["metric"].astype("str") == metric].sort_values(["trial", "step"])
    hits = evals[evals["value"] <= target].groupby("trial").head(1).set_index("trial")
    rows = []
    for trial, group in curves.groupby("trial", sort=True):
        first = hits.loc[trial] if trial in hits.index else None
        rows.append(
            {
                "trial": trial,
                "variant": group["variant"].iloc[0],
                "seed": group["seed"].iloc[0],
                "stage": group["stage"].iloc[0],
                "time": float(first[time]) if first is not None else math.inf,
                "step": int(first["step"]) if first is not None else None,
            }
        )
    df = pd.DataFrame(rows, columns=["trial", "variant", "seed", "stage", "time", "step"])
    # typed even with no trial (an experiment with no curves yet): NaN/<NA> for "never"
    df = df.astype({"time": "float64", "step": "Int64"})
    if "variant" in curves and isinstance(curves["variant"].dtype, pd.CategoricalDtype):
        df["variant"] = pd.Categorical(df["variant"], categories=curves["variant"].cat.categories)
    return df


def target_column(kind: str, target: float) -> str:
    """``("steps", 6.1)`` -> ``steps_to_6.1``: a run's column for one declared target."""
    return f"{kind}_to_{target:g}"


def with_targets(
    runs: pd.DataFrame, curves: pd.DataFrame, targets: Iterable[float], metric: str
) -> pd.DataFrame:
    """``runs`` with, per target, the first step and the samples at which the run's validation
    ``metric`` is at most the target (:func:`time_to_target`: the first evaluation that reaches
    it counts, whatever follows); NaN where it never does."""
    for target in targets:
        hits = time_to_target(curves, target, metric=metric, time="samples").set_index("trial")
        step = hits["step"].astype("float64")
        samples = hits["time"].where(np.isfinite(hits["time"]))
        runs[target_column("steps", target)] = runs["trial"].map(step).astype("float64")
        runs[target_column("samples", target)] = runs["trial"].map(samples).astype("float64")
    return runs
