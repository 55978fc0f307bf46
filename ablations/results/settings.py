"""A trial's settings: variant, seed, stage, slot, and the value of every toggle and tuned
hyperparameter of the experiment, as the columns the tables share (:mod:`ablations.results.tables`).

The columns are the spec's toggles and tuned paths, then any a trial adds; a trial that does
not set one gets the value its run resolves to (``resolved.json``: an optimizer knob the config
leaves to its preset is the preset's).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ablations.results.tables import column
from ablations.results.trials import Trial
from ablations.run.resolved import Resolved


def setting_columns(
    spec: Mapping[str, Any], trials: Mapping[int, Trial]
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


def trial_settings(
    trial: Trial, spec: Mapping[str, Any], toggle_cols: list[str], param_cols: list[str]
) -> dict[str, Any]:
    """Variant, seed, stage, slot, toggles and hyperparameters of a trial.

    Variant, seed, stage and slot from trial.json, or, for a trial without a directory yet
    (queued, or claimed a moment ago), the study's user attributes (the worker writes both from
    the same claim). Every toggle and hyperparameter is what the run trains with: its
    ``resolved.json`` (:mod:`ablations.run.resolved`), one file per run; only a trial with no
    run directory yet falls back to what it was queued with (its variant's toggles, its params).
    """
    info = trial.info
    attrs: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for attempt in trial.attempts:
        attrs = {**attempt.user_attrs, **attrs}  # the oldest attempt's values win
        params = {**attempt.params, **params}
    variant = info.get("variant", attrs.get("variant"))
    spec_toggles = (spec.get("variants") or {}).get(variant) or (spec.get("candidates") or {}).get(
        variant
    )  # candidates: the variants the sweep's ``extend`` may add
    toggles = {**(spec_toggles or {}), **(info.get("toggles") or {})}
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
        value = _lookup(trial.resolved, path)
        if trial.resolved is None:  # not started: what the study queued it with
            value = given.get(path)
        out[column(path)] = json.dumps(value) if isinstance(value, list | dict) else value
    return out


def _lookup(run: Resolved | None, path: str) -> Any:
    """What the trial's run resolves ``path`` to (None without a run directory)."""
    return None if run is None else run.value(path)
