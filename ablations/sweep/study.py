"""An experiment's Optuna study: its storage opened, the study created and its advance slots
queued (:func:`prepare`), the experiment directory's definition checked, and a read-only view.

The study is where the sweep's state lives: every trial the experiment needs is a *slot*
(:mod:`ablations.sweep.slots`), handed to workers by :mod:`ablations.sweep.schedule` under the
experiment's lock (:func:`locked`), each claim held by a lease (:mod:`ablations.sweep.leases`).
With an RDB storage, Optuna's own heartbeat and
:class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` find and retry lost trials.

Layout of ``<results>/<experiment>/``::

    sweep.json        the resolved experiment (a restart with a different one is refused)
    study.journal     Optuna's journal (journal storage)
    data.json         the workload's unigram entropy of masked tokens (the reference line)
    <n>/              trial n's run directory (n = the original trial number), trial.json
    .leases/ .lock    claims and the lock
    slurm/            batch scripts and logs
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback

from ablations.config import ConfigError, plain
from ablations.core.fileio import flocked, read_json, write_json
from ablations.core.journal import open_journal
from ablations.sweep.experiment import Experiment
from ablations.sweep.plan import Plan
from ablations.sweep.slots import queue_slots, slots_ahead
from ablations.sweep.spec import Sweep


class SpecChangedError(ConfigError):
    """The experiment directory holds a study of a different experiment definition."""


def open_storage(sweep: Sweep, exp_dir: Path) -> optuna.storages.BaseStorage:
    """The journal file of ``exp_dir``, or the sweep's RDB URL with heartbeats and retries."""
    if sweep.storage == "journal":
        return open_journal(exp_dir)
    with warnings.catch_warnings():  # heartbeats and the retry callback are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            sweep.storage,
            heartbeat_interval=sweep.retry.heartbeat_seconds,
            grace_period=sweep.retry.grace_seconds,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                max_retry=sweep.retry.max_retry
            ),
        )


def load(sweep: Sweep, plan: Plan, exp_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=plan.name, storage=open_storage(sweep, exp_dir))


@contextlib.contextmanager
def locked(exp_dir: Path) -> Iterator[None]:
    """The experiment's lock (``flock``; held briefly: claim, queue, reap)."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    with flocked(exp_dir / ".lock"):
        yield


def prepare(sweep: Sweep, plan: Plan, exp_dir: Path) -> optuna.Study:
    """Create (or reopen) the study and queue the slots known in advance. Idempotent.

    Raises:
        SpecChangedError: ``exp_dir`` was prepared for a different definition of the experiment.
    """
    saved = check_snapshot(plan, exp_dir)
    with locked(exp_dir):
        if saved is None:
            write_json(exp_dir / "sweep.json", plan.to_dict())
        storage = open_storage(sweep, exp_dir)
        try:  # load first: create_study(load_if_exists=True) logs a creation every time
            study = optuna.load_study(study_name=plan.name, storage=storage)
        except KeyError:
            study = optuna.create_study(study_name=plan.name, storage=storage, direction="minimize")
        queue_slots(study, plan, slots_ahead(plan))
    return study


def check_snapshot(plan: Plan, exp_dir: Path) -> dict[str, Any] | None:
    """``exp_dir``'s ``sweep.json`` (None for a new experiment).

    Raises:
        SpecChangedError: it holds a different definition of the experiment.
    """
    saved = read_json(exp_dir / "sweep.json")
    if saved is not None and _upgraded(saved) != json.loads(json.dumps(plan.to_dict())):
        raise SpecChangedError(
            f"{exp_dir}: holds experiment {plan.name!r} with a different definition "
            "(sweep.json); use a new experiment name or remove the directory"
        )
    return saved


def _upgraded(saved: dict[str, Any]) -> dict[str, Any]:
    """A ``sweep.json`` written by an older harness, with the experiment keys added since then
    set to their defaults: adding an option (say ``targets``) must not orphan a running
    experiment, while any value that differs from the file's still refuses the restart."""
    experiment = saved.get("experiment")
    if not isinstance(experiment, dict):
        return saved
    defaults = {
        f.name: plain(f.default if f.default is not dataclasses.MISSING else f.default_factory())
        for f in dataclasses.fields(Experiment)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    added = {k: v for k, v in defaults.items() if k not in experiment}
    return {**saved, "experiment": json.loads(json.dumps({**experiment, **added}))}


class ReadOnlyStorage(optuna.storages.BaseStorage):
    """An Optuna storage that reads through to ``storage`` and refuses every write (a
    ``PermissionError``): optuna-dashboard can create and delete studies and write notes, and
    a dashboard must never change what a sweep recorded. Reads are live, so its views follow
    a running sweep."""

    WRITES = frozenset(
        {
            "create_new_study",
            "delete_study",
            "set_study_user_attr",
            "set_study_system_attr",
            "create_new_trial",
            "set_trial_param",
            "set_trial_state_values",
            "set_trial_intermediate_value",
            "set_trial_user_attr",
            "set_trial_system_attr",
        }
    )

    def __init__(self, storage: optuna.storages.BaseStorage) -> None:
        self._storage = storage

    def refuse(self, name: str) -> None:
        """Refuse the write ``name`` (a subclass may answer otherwise, e.g. with HTTP 403)."""
        raise PermissionError(f"the study is read-only here: {name} refused")


def _read_only_method(name: str) -> Any:
    def method(self: ReadOnlyStorage, *args: Any, **kwargs: Any) -> Any:
        if name in ReadOnlyStorage.WRITES:
            self.refuse(name)
        return getattr(self._storage, name)(*args, **kwargs)

    method.__name__ = name
    return method


for _name in optuna.storages.BaseStorage.__abstractmethods__ | ReadOnlyStorage.WRITES:
    setattr(ReadOnlyStorage, _name, _read_only_method(_name))
ReadOnlyStorage.__abstractmethods__ = frozenset()
