"""``python -m ablations dashboard`` (``make dashboard``): optuna-dashboard on one experiment's
study, bound to 127.0.0.1 only (a study is not something to serve to the network by default).

Where the study is: with a sweep file (``--file``), the experiment's journal or the file's RDB
URL; with only a results folder (``--results DIR``, e.g. a committed study under
``reproduction/``), the journal in ``DIR/<experiment>/``: a journal study needs nothing else, so
no sweep file has to be guessed. Without ``--experiment`` it lists the experiments it can show.
A journal written before every toggle was an Optuna parameter is shown re-derived
(:func:`derived`): its toggles and validation curves from the experiment's own tables.

The view is read-only (:class:`~ablations.sweep.study.ReadOnlyStorage`): a write the dashboard
tries (create, delete, rename a study, a note) is answered with HTTP 403 and one log line, not a
500 and a traceback (optuna-dashboard's JSON views turn bottle's ``HTTPError`` into its status).
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from bottle import HTTPError
from optuna.distributions import CategoricalDistribution
from optuna_dashboard import run_server

from ablations.config import ConfigError
from ablations.core.errors import fail
from ablations.core.fileio import read_json
from ablations.core.journal import open_journal
from ablations.sweep import study as studies
from ablations.sweep.slots import choice


class DashboardStorage(studies.ReadOnlyStorage):
    """The read-only storage, refusing a write as HTTP 403 with one line on stderr. A trial
    whose toggles are parameters shows them without ``variant``: the variant is a function of
    its toggles, and the dashboard's parameter importance would split each toggle's credit
    with it (the variant stays a user attribute)."""

    def refuse(self, name: str) -> None:
        print(f"dashboard: refused {name}: the study is read-only here", file=sys.stderr)
        raise HTTPError(403, f"the study is read-only here: {name} refused")

    def get_trial(self, trial_id: int) -> optuna.trial.FrozenTrial:
        return _without_variant(self._storage.get_trial(trial_id))

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Any = None
    ) -> list[optuna.trial.FrozenTrial]:
        trials = self._storage.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        return [_without_variant(t) for t in trials]


def _without_variant(trial: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial:
    """``trial`` without its ``variant`` parameter when it has a categorical toggle besides."""
    toggles = [
        k
        for k, d in trial.distributions.items()
        if k != "variant" and isinstance(d, CategoricalDistribution)
    ]
    if "variant" not in trial.params or not toggles:
        return trial
    out = copy.copy(trial)
    out.params = {k: v for k, v in trial.params.items() if k != "variant"}
    out.distributions = {k: v for k, v in trial.distributions.items() if k != "variant"}
    return out


def experiments(results: Path) -> list[str]:
    """The experiments under ``results`` that have a journal study, sorted."""
    return sorted(p.parent.name for p in results.glob("*/study.journal"))


def serve_folder(results: Path, names: list[str], port: int) -> int:
    """The dashboard of ``results/<name>``'s journal; the list of experiments without a name."""
    found = experiments(results)
    if not found:
        return fail(ConfigError(f"--results {results}: no experiment with a study.journal"))
    if not names:
        print(f"experiments in {results} (name one: EXPERIMENT=<name>, or --experiment):")
        for name in found:
            print(f"  {name}")
        return 0
    if len(names) != 1 or names[0] not in found:
        return fail(ConfigError(f"--experiment {' '.join(names)}: expected one of {found}"))
    exp_dir = results / names[0]
    return serve(DashboardStorage(derived(exp_dir) or open_journal(exp_dir)), names[0], port)


def derived(exp_dir: Path) -> optuna.storages.InMemoryStorage | None:
    """The study of a journal written before every toggle was an Optuna parameter and the
    validation curve its intermediate values (the committed studies), re-derived into memory:
    each trial as recorded, plus one categorical per toggle (from ``sweep.json``'s variants)
    and the objective's validation curve (from ``curves.parquet``). None when the journal has
    them already (a study of today's sweeps is served live instead)."""
    spec = read_json(exp_dir / "sweep.json")
    study = optuna.load_study(study_name=exp_dir.name, storage=open_journal(exp_dir))
    trials = study.get_trials(deepcopy=False)
    variants: dict[str, dict[str, Any]] = (spec or {}).get("variants") or {}
    paths = list(dict.fromkeys(k for toggles in variants.values() for k in toggles))
    if not trials or not paths or all(set(paths) <= set(t.params) for t in trials):
        return None
    toggles = {v: {k: choice(x) for k, x in t.items()} for v, t in variants.items()}
    dists: dict[str, Any] = {"variant": CategoricalDistribution(list(variants))}
    for path in paths:
        values = [t[path] for t in toggles.values() if path in t]
        dists[path] = CategoricalDistribution(list(dict.fromkeys(values)))
    objective = spec["experiment"].get("objective", "val/mlm_loss")
    curves = _curves(exp_dir, objective)
    storage = optuna.storages.InMemoryStorage()
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "a new study created in memory"
    try:
        view = optuna.create_study(
            study_name=exp_dir.name, storage=storage, directions=study.directions
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    for t in trials:
        variant = t.params.get("variant", t.user_attrs.get("variant"))
        params = {"variant": variant, **toggles.get(variant, {}), **t.params}
        run = t.system_attrs.get("failed_trial", t.number)
        finished = t.state.is_finished()
        view.add_trial(
            optuna.trial.create_trial(
                state=t.state,
                values=t.values if finished else None,
                params=params,
                distributions={k: t.distributions.get(k, dists.get(k)) for k in params},
                user_attrs=t.user_attrs,
                system_attrs=t.system_attrs,
                intermediate_values=curves.get(run, {}) if finished else {},
            )
        )
    return storage


def _curves(exp_dir: Path, objective: str) -> dict[int, dict[int, float]]:
    """Run number -> step -> the objective's validation value (inf where it was not finite)."""
    path = exp_dir / "curves.parquet"
    if not path.exists():
        return {}
    table = pd.read_parquet(path, columns=["trial", "step", "metric", "value"])
    table = table[table["metric"].astype(str) == objective]
    out: dict[int, dict[int, float]] = {}
    for (run, step), value in zip(
        zip(table["trial"], table["step"], strict=True), table["value"], strict=True
    ):
        v = float(value)
        out.setdefault(int(run), {})[int(step)] = v if math.isfinite(v) else math.inf
    return out


def serve(storage: DashboardStorage, name: str, port: int) -> int:
    print(f"optuna-dashboard of {name}: http://127.0.0.1:{port}/ (Ctrl-C stops it)", flush=True)
    run_server(storage, host="127.0.0.1", port=port)
    return 0
