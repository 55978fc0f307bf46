"""The private attributes of Optuna and torch that the harness reads
(``ablations/core/internals.py``):
each still means what the harness relies on. An upgrade that changes one fails here first."""

from __future__ import annotations

import optuna
import pytest
import torch
from optuna.trial import TrialState, create_trial

from ablations.core.internals import loss_scale, study_storage, trial_id
from ablations.core.journal import open_journal
from ablations.run.checkpoints import AtomicCheckpointIO


def test_a_studys_storage_and_trial_ids_claim_a_waiting_trial_once(tmp_path):
    storage = open_journal(tmp_path)  # the sweep's own journal, file and lock
    study = optuna.create_study(study_name="s", storage=storage)
    assert study_storage(study) is storage
    for i in range(3):
        study.add_trial(create_trial(state=TrialState.WAITING, user_attrs={"i": i}))
    waiting = study.get_trials(states=(TrialState.WAITING,))
    ids = [trial_id(t) for t in waiting]
    assert [storage.get_trial(i).number for i in ids] == [t.number for t in waiting]
    # the claim: a compare-and-set that only the first caller wins
    assert storage.set_trial_state_values(ids[1], TrialState.RUNNING) is True
    assert storage.set_trial_state_values(ids[1], TrialState.RUNNING) is False
    # another process's view of the same journal agrees
    again = optuna.load_study(study_name="s", storage=open_journal(tmp_path))
    assert again.trials[1].state == TrialState.RUNNING
    storage.set_trial_user_attr(ids[1], "status", "lost")
    assert storage.set_trial_state_values(ids[1], TrialState.FAIL) is True
    assert study.trials[1].user_attrs == {"i": 1, "status": "lost"}
    trial = optuna.Trial(study, ids[0])  # what the worker hands a pruner
    assert trial.number == waiting[0].number and trial_id(trial) == ids[0]


def test_the_loss_scale_is_the_scalers_own_tensor():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    assert loss_scale(scaler) is None and loss_scale(None) is None  # before its first use
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    scaler.scale((w**2).sum()).backward()
    scaler.step(opt)
    scaler.update()
    scale = loss_scale(scaler)
    assert isinstance(scale, torch.Tensor) and scale.device == w.device
    assert scale.item() == scaler.get_scale() == 2.0**10


def test_a_checkpoint_appears_whole_or_not_at_all(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)
    with pytest.raises(Exception):  # noqa: B017 (whatever torch.save raises for it)
        io.save_checkpoint({"step": 2, "bad": lambda: None}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    io.save_checkpoint({"step": 3}, path)
    assert torch.load(path, weights_only=True) == {"step": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
