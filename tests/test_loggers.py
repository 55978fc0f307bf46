"""``log.loggers``: Lightning's CSV and TensorBoard loggers get the curves' numbers; read back with
pandas and with TensorBoard's own event reader, they equal metrics.jsonl and val.jsonl."""

from __future__ import annotations

import pandas as pd
import pytest
import synthetic
from test_train import PHASE, config, lines

from ablations.config import RunConfig
from ablations.train import train


def _with_loggers(cfg: RunConfig, loggers: list[str]) -> RunConfig:
    raw = cfg.to_dict()
    return RunConfig.from_dict({**raw, "log": {**raw["log"], "loggers": loggers}})


def _tensorboard(folder) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = {}
    for version in sorted(p for p in folder.iterdir() if p.is_dir()):
        events = EventAccumulator(str(version))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            out.setdefault(tag, {}).update({e.step: e.value for e in events.Scalars(tag)})
    return out


def test_csv_and_tensorboard_hold_the_curves_numbers_across_phases_and_a_resume(tmp_path):
    phases = [
        {**PHASE, "steps": 8, "lr": 1e-2, "warmup": 0.25},
        {**PHASE, "steps": 4, "lr": 1e-2, "warmup": 0.25},
    ]
    cfg = _with_loggers(config(phases=phases), ["csv", "tensorboard"])
    assert train(cfg, tmp_path, synthetic.make)["status"] == "complete"
    metrics, val = lines(tmp_path), lines(tmp_path, "val")
    logs = tmp_path / "logs"
    assert sorted(p.name for p in (logs / "csv").iterdir()) == ["phase1", "phase2"]

    csv = pd.concat(pd.read_csv(p) for p in sorted((logs / "csv").glob("*/metrics.csv")))
    by_step = csv.groupby("step").first()
    for record in metrics:
        row = by_step.loc[record["step"]]
        for key in ("train/loss", "train/mlm_loss", "optim/lr", "optim/grad_norm"):
            assert row[key] == pytest.approx(record[key], rel=1e-6), (record["step"], key)
    for record in val:
        assert by_step.loc[record["step"], "val/mlm_loss"] == pytest.approx(record["val/mlm_loss"])

    scalars = _tensorboard(logs / "tensorboard")
    assert scalars["train/loss"] == pytest.approx(  # float32 in the event file
        {r["step"]: r["train/loss"] for r in metrics}, rel=1e-6
    )
    assert scalars["val/mlm_loss"] == pytest.approx(
        {r["step"]: r["val/mlm_loss"] for r in val}, rel=1e-6
    )


def test_a_resumed_attempt_writes_its_own_folder_and_loses_nothing(tmp_path):
    """A second attempt of a run (here its phase made to run again, with one more logger: the
    loggers are display keys, so the run is the same run) writes ``phase1.1`` and leaves the
    first attempt's file byte for byte as it was."""
    phases = [{**PHASE, "steps": 6, "lr": 1e-2, "warmup": 0.25}]
    first = _with_loggers(config(phases=phases), ["csv"])
    assert train(first, tmp_path, synthetic.make)["status"] == "complete"
    csv_before = (tmp_path / "logs" / "csv" / "phase1" / "metrics.csv").read_bytes()
    (tmp_path / "status.json").unlink()
    for end in (tmp_path / "checkpoints").rglob("end.ckpt"):
        end.unlink()  # the phase runs again from its last periodic checkpoint
    second = _with_loggers(config(phases=phases), ["csv", "tensorboard"])
    assert train(second, tmp_path, synthetic.make)["status"] == "complete"
    assert (tmp_path / "logs" / "csv" / "phase1" / "metrics.csv").read_bytes() == csv_before
    assert (tmp_path / "logs" / "csv" / "phase1.1" / "metrics.csv").exists()
    assert (tmp_path / "logs" / "tensorboard" / "phase1").is_dir()
