"""The private attributes of other libraries that the harness reads, each where no public API
gives the same thing, in one place.

Checked against ``optuna==5.0.0`` and ``torch==2.13.0`` (the pins in pyproject.toml);
``tests/test_internals.py`` fails when an upgrade changes one of them.

- An Optuna study's storage and a trial's storage id. The sweep claims a WAITING trial by an
  atomic compare-and-set of its state (``BaseStorage.set_trial_state_values`` returns False when
  another worker won), writes a reaped trial's attributes while it runs in another process, and
  beats an RDB storage's heartbeat for a trial run outside ``Study.optimize``. ``Study.ask()``
  would pop the first waiting trial, but the sweep picks which one (seed reruns once a
  variant's tuning is done), and ``Study.tell`` cannot set attributes; the storage methods are
  public, only reaching them from a study and a trial is not.
- A GradScaler's scale as a device tensor: ``GradScaler.get_scale()`` returns a Python float,
  one host sync per step on an accelerator, which the module's deferred reads exist to avoid.
"""

from __future__ import annotations

from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage ``study`` was loaded with (``Study._storage``)."""
    return study._storage


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    """The storage's id of ``trial`` (``_trial_id``; ``number`` is per study, the id is what the
    storage methods take)."""
    return trial._trial_id


def loss_scale(scaler: Any) -> torch.Tensor | None:
    """The current loss scale of a ``torch.amp.GradScaler`` as a tensor on its device, without a
    host sync (``GradScaler._scale``); None before its first step or without a scaler."""
    return None if scaler is None else scaler._scale
