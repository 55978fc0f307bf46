"""Exact resume: a run stopped at any step and resumed from its last checkpoint writes the same
curves as the run that was never stopped, bit for bit (CPU, fp32), dropout on.

Every source of randomness a run draws from is either a pure function of (seed, step) (the data
order, ``ablations.run.sampling``), fixed in the examples (masking, NSP pairing, made once like
NVIDIA's shards), or the global RNGs, whose states are in every checkpoint (dropout). The one
draw that used to differ: reading the validation batches creates a DataLoader iterator, which
draws a seed from the global torch RNG; a phase resumed after its first validation read them a
second time, so every dropout mask after its next validation differed (issue 22). The table
stops a run before, after and between validations and checkpoints, in phase 2, and twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import synthetic
import torch
from lightning.pytorch.callbacks import Callback

from ablations.config import RunConfig
from ablations.run.checkpoints import save_resume_point
from ablations.run.curves import Curves
from ablations.run.train import train

PHASE = {"global_batch": 16, "micro_batch": 8, "seq_len": 32, "max_predictions": 5}
#: Phase 1: 10 steps, phase 2: 8; validation every 4 steps, a checkpoint every 3.
CONFIG = {
    "model": {"size": "tiny", "dropout": 0.1},  # dropout draws from the global RNG every step
    "data": {"vocab_size": 512},
    "phases": [
        {**PHASE, "steps": 10, "lr": 2e-2, "warmup": 0.2},
        {**PHASE, "steps": 8, "lr": 1e-2, "warmup": 0.25},
    ],
    "log": {"layer_every": 2, "val_every": 4, "val_batches": 2, "progress": "none"},
    "checkpoint_every": 3,
}


class StopAfter(Callback):
    """Raise (the process dies with nothing saved, as under SIGKILL) once step ``step`` of the
    run is done and its end-of-step work (curve lines, checkpoint) with it; with ``save``, first
    write a resume point there, as the sweep's worker does at a signal."""

    def __init__(self, step: int, save: bool = False) -> None:
        self.step, self.save = step, save

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.step == self.step:
            if self.save:
                save_resume_point(trainer)
            raise RuntimeError(f"stopped after step {self.step}")


def curves(run_dir: Path) -> dict[str, list[dict]]:
    return {
        kind: [{k: v for k, v in r.items() if k != "wall_time"} for r in Curves(run_dir).read(kind)]
        for kind in ("metrics", "val", "layers")
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, list[dict]]:
    run = tmp_path_factory.mktemp("uninterrupted")
    assert train(RunConfig.from_dict(CONFIG), run, synthetic.make)["status"] == "complete"
    return curves(run)


#: Where each case stops the run (steps done; phase 2 starts after step 10), in order.
#: Validations at steps 4, 8, 10 (phase 1's end), 12, 16, 18; checkpoints every 3 steps of a
#: phase (3, 6, 9; 13, 16).
CASES = {
    "before_the_first_validation": [3],  # checkpoint 3, validation 4 still to come
    "after_a_validation": [7],  # checkpoint 6, after validation 4: the read must not redraw
    "between_checkpoints": [5],  # checkpoint 3, after validation 4
    "in_phase_2": [14],  # phase 2's checkpoint at its step 3, after its validation at 2 (step 12)
    "after_a_second_resume": [7, 15],  # resumed once, stopped again in phase 2
    # resumed from 6 (validation 4 read before), a signal's checkpoint at 7 before the next
    # read: it must carry "read before" on, or the third attempt's read at 8 redraws
    "signal_right_after_a_resume": [7, (7, "save")],
}


@pytest.mark.parametrize("stops", list(CASES.values()), ids=list(CASES))
def test_a_resumed_run_writes_the_uninterrupted_runs_curves(tmp_path, uninterrupted, stops):
    config = RunConfig.from_dict(CONFIG)
    for stop in stops:
        step, save = (stop[0], True) if isinstance(stop, tuple) else (stop, False)
        with pytest.raises(RuntimeError, match=f"stopped after step {step}"):
            train(config, tmp_path, synthetic.make, callbacks=[StopAfter(step, save)])
        assert max(r["step"] for r in Curves(tmp_path).read("metrics")) >= step
    assert train(config, tmp_path, synthetic.make)["status"] == "complete"
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert len(meta["attempts"]) == len(stops) + 1  # it was resumed, not restarted
    # what decides bit-identity across machines is recorded with every attempt
    assert {a["numerics"]["threads"] for a in meta["attempts"]} == {torch.get_num_threads()}
    assert all(a["numerics"]["cpu_capability"] for a in meta["attempts"])
    got = curves(tmp_path)
    for kind, want in uninterrupted.items():
        assert [r["step"] for r in got[kind]] == [r["step"] for r in want], kind
        for mine, theirs in zip(got[kind], want, strict=True):
            assert mine == theirs, f"{kind}.jsonl step {theirs['step']} differs"
