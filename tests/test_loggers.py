"""``log.loggers``: Lightning's CSV and TensorBoard loggers get the curves' numbers; read back with
pandas and with TensorBoard's own event reader, they equal metrics.jsonl and val.jsonl."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import synthetic
from sweep_files import TINY, write_sweep
from test_train import PHASE, config, lines

from ablations.config import RunConfig
from ablations.run.train import train


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


# --- W&B (offline) and MLflow (SQLite): read back with their own schema and client ----------

_BLOCK, _HEADER = 32768, 7  # W&B's transaction log: LevelDB's log format in 32 KiB blocks


def _wandb_records(path) -> list:
    """The protobuf records of an offline W&B run file (``run-<id>.wandb``), parsed with W&B's
    own schema. The framing is LevelDB's log format: a 7-byte file header (``:W&B``, magic,
    version), then chunks of ``crc32 (4) | length (2) | type (1) | data``, never crossing a
    32 KiB block (full = 1, first = 2, middle = 3, last = 4; a block's tail under 7 bytes is
    padding)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    records, pending, pos = [], b"", _HEADER
    while pos + _HEADER <= len(raw):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + _HEADER])
        pos += _HEADER
        pending += raw[pos : pos + length]
        pos += length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _wandb_history(run_dir) -> tuple[str, dict[str, dict[int, float]]]:
    """The display name and the per-step scalars of the one W&B run under ``run_dir``."""
    import json

    (path,) = (run_dir / "logs" / "wandb").glob("offline-run-*/run-*.wandb")
    name, history = None, {}
    for record in _wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            name = record.run.display_name
        elif kind == "history":
            row = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in record.history.item
            }
            for key, value in row.items():
                if "/" in key and key != "trainer/global_step":
                    history.setdefault(key, {})[row["trainer/global_step"]] = value
    return name, history


def test_wandb_offline_holds_the_curves_numbers_and_each_run_is_its_own(tmp_path):
    """Two runs trained in one process (as a sweep worker does) write two offline W&B runs, each
    named after its directory and holding its own curves: the harness ends the W&B run with the
    training run (Lightning's WandbLogger would reuse it)."""
    phases = [
        {**PHASE, "steps": 6, "lr": 1e-2, "warmup": 0.25},
        {**PHASE, "steps": 3, "lr": 1e-2, "warmup": 0.25},
    ]
    for trial, lr in (("0", 1e-2), ("1", 3e-2)):
        runs = [{**p, "lr": lr} for p in phases]
        cfg = _with_loggers(config(phases=runs), ["wandb"])
        assert train(cfg, tmp_path / "exp" / trial, synthetic.make)["status"] == "complete"
    for trial in ("0", "1"):
        run_dir = tmp_path / "exp" / trial
        name, history = _wandb_history(run_dir)
        assert name == f"exp/{trial}"
        metrics, val = lines(run_dir), lines(run_dir, "val")
        assert history["train/loss"] == pytest.approx(
            {r["step"]: r["train/loss"] for r in metrics}, rel=1e-6
        )
        assert history["optim/lr"] == pytest.approx({r["step"]: r["optim/lr"] for r in metrics})
        assert history["val/mlm_loss"] == pytest.approx(
            {r["step"]: r["val/mlm_loss"] for r in val}, rel=1e-6
        )


def test_mlflow_sqlite_store_holds_the_curves_numbers_per_phase(tmp_path, monkeypatch):
    """MLflow writes the run's own SQLite store (one MLflow run per phase, named after the run
    directory and the phase); its public client reads back metrics.jsonl's numbers."""
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    phases = [
        {**PHASE, "steps": 6, "lr": 1e-2, "warmup": 0.25},
        {**PHASE, "steps": 3, "lr": 1e-2, "warmup": 0.25},
    ]
    run_dir = tmp_path / "exp" / "7"
    cfg = _with_loggers(config(phases=phases), ["mlflow"])
    assert train(cfg, run_dir, synthetic.make)["status"] == "complete"
    client = MlflowClient(f"sqlite:///{run_dir / 'logs' / 'mlflow.db'}")
    (experiment,) = client.search_experiments(filter_string="name = 'ablations'")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["exp/7 phase1", "exp/7 phase2"]
    assert {r.info.status for r in runs.values()} == {"FINISHED"}

    def history(key: str) -> dict[int, float]:
        return {
            m.step: m.value
            for r in runs.values()
            for m in client.get_metric_history(r.info.run_id, key)
        }

    metrics, val = lines(run_dir), lines(run_dir, "val")
    assert history("train/loss") == pytest.approx(
        {r["step"]: r["train/loss"] for r in metrics}, rel=1e-6
    )
    assert history("val/mlm_loss") == pytest.approx(
        {r["step"]: r["val/mlm_loss"] for r in val}, rel=1e-6
    )


@pytest.mark.parametrize("logger, module", [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_logger_whose_package_is_missing_is_one_line_before_anything_is_written(
    tmp_path, monkeypatch, logger, module
):
    """Without the ``trackers`` extra (its package made unimportable here, as Python does for a
    ``None`` entry in ``sys.modules``), ``train`` and a sweep refuse in one line naming
    ``log.loggers`` and the extra, and write nothing."""
    import sys

    from ablations.config import ConfigError
    from ablations.sweep import driver
    from ablations.sweep.spec import load_sweep

    monkeypatch.setitem(sys.modules, module, None)
    cfg = _with_loggers(config(phases=[{**PHASE, "steps": 2}]), ["csv", logger])
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError) as e:
        train(cfg, run_dir, synthetic.make)
    line = str(e.value)
    assert line.startswith(f"log.loggers: '{logger}' needs the '{module}' package") and (
        "trackers" in line and "\n" not in line
    ), line
    assert not run_dir.exists()

    experiment = {
        "workload": {**TINY, "log": {"loggers": [logger]}},
        "variants": {"named": {"a": {"optimizer.preset": "nvlamb"}}},
    }
    sweep = load_sweep(write_sweep(tmp_path, {"e": experiment}))
    with pytest.raises(ConfigError, match=f"log.loggers: '{logger}'"):
        driver.prepare_experiments(sweep, ["e"], tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_every_tracker_gets_the_run_s_settings_and_a_toggle_is_filterable(tmp_path, monkeypatch):
    """Issue 21, item 1: the resolved settings (every config key, each param group's knobs as
    the optimizer reads them, and a sweep trial's experiment, variant and toggles) reach CSV's
    hparams.yaml, TensorBoard's HParams plugin, W&B's offline config and MLflow's params, each
    read back with the tool's own reader; MLflow's client filters runs by a toggle."""
    import json

    import yaml
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for variable in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    run_dir = tmp_path / "exp" / "3"
    run_dir.mkdir(parents=True)
    trial = {"experiment": "exp", "trial": 3, "variant": "b16", "stage": "seed", "seed": 0}
    trial["toggles"] = {"phases.0.global_batch": 16}
    (run_dir / "trial.json").write_text(json.dumps(trial))  # what a sweep worker writes first
    phases = [{**PHASE, "steps": 2, "lr": 1e-2, "warmup": 0.5}]
    raw = config(phases=phases).to_dict()
    raw["optimizer"] = {"preset": "apex", "overrides": {"bias_correction": False}}
    cfg = _with_loggers(RunConfig.from_dict(raw), ["csv", "tensorboard", "wandb", "mlflow"])
    assert train(cfg, run_dir, synthetic.make)["status"] == "complete"
    expected = {
        "optimizer.preset": "apex",
        "optimizer.no_decay.bias_correction": False,
        "optimizer.decay.weight_decay": 0.01,
        "experiment": "exp",
        "variant": "b16",
        "toggle.phases.0.global_batch": 16,
    }
    logs = run_dir / "logs"
    csv = yaml.safe_load((logs / "csv" / "phase1" / "hparams.yaml").read_text())
    assert {k: csv[k] for k in expected} == expected

    events = EventAccumulator(str(logs / "tensorboard" / "phase1"))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["optimizer.preset"].string_value == "apex"
    bias_correction = hparams["optimizer.no_decay.bias_correction"]
    assert bias_correction.WhichOneof("kind") == "number_value"  # Lightning writes bools as 0/1
    assert bias_correction.number_value == 0
    assert hparams["toggle.phases.0.global_batch"].number_value == 16
    final = [e.value for e in events.Scalars("final/val/mlm_loss")]  # the HParams metric
    assert final == pytest.approx([lines(run_dir, "val")[-1]["val/mlm_loss"]], rel=1e-6)

    (path,) = (logs / "wandb").glob("offline-run-*/run-*.wandb")
    config_items, groups = {}, set()
    for record in _wandb_records(path):
        if record.WhichOneof("record_type") == "run":
            groups.add(record.run.run_group)
        if record.WhichOneof("record_type") == "config":
            config_items.update({i.key: json.loads(i.value_json) for i in record.config.update})
    assert {k: config_items[k] for k in expected} == expected
    assert groups == {"exp"}  # W&B groups a sweep's runs by experiment

    # a sweep's runs: one store under the results folder, the sweep's experiment as MLflow's
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (experiment,) = client.search_experiments(filter_string="name = 'exp'")
    found = client.search_runs(
        [experiment.experiment_id], filter_string="params.`toggle.phases.0.global_batch` = '16'"
    )
    assert [r.info.run_name for r in found] == ["exp/3 phase1"]
    assert found[0].data.params["optimizer.no_decay.bias_correction"] == "False"
    assert found[0].data.tags["variant"] == "b16"
    none = client.search_runs(
        [experiment.experiment_id], filter_string="params.`optimizer.preset` = 'nvlamb'"
    )
    assert none == []


def test_wandb_follows_the_user_s_own_mode_when_set(tmp_path):
    """Offline is only the default: with W&B configured through its own variables (here
    ``WANDB_MODE=disabled``), the harness does not force offline, and W&B writes no run (a
    process of its own: W&B reads its settings once per process)."""
    import yaml
    from test_train import _cli

    phases = [{**PHASE, "steps": 2, "lr": 1e-2, "warmup": 0.5}]
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(_with_loggers(config(phases=phases), ["wandb"]).to_dict()))
    proc = _cli(tmp_path / "run", cfg_path, env={"WANDB_MODE": "disabled"})
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert (tmp_path / "run" / "metrics.jsonl").exists()
    assert not list((tmp_path / "run" / "logs").glob("wandb/offline-run-*"))


@pytest.mark.slow
def test_a_sweep_s_runs_share_one_mlflow_store_and_its_experiment(tmp_path, embedded_cache):
    """Two workers train a sweep's two variants at once, each logging to MLflow: one store for
    the sweep (``<results>/mlflow.db``), the sweep's experiment as MLflow's, one MLflow run per
    trial, and MLflow's client finds each by its toggle."""
    from mlflow import MlflowClient
    from sweep_files import python, workload

    cache, _ = embedded_cache
    work = workload(cache, steps=4)
    file = write_sweep(
        tmp_path,
        {
            "mlf": {
                "workload": {**work, "log": {**work["log"], "loggers": ["mlflow"]}},
                "variants": {"grid": {"optimizer.overrides.prenorm": ["clip", "none"]}},
                "seeds": 1,
            }
        },
        local={"workers": 2, "threads_per_worker": 1},
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = python("sweep", "--file", str(file), "--local", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    (experiment,) = client.search_experiments(filter_string="name = 'mlf'")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["mlf/0 phase1", "mlf/1 phase1"]
    for prenorm in ("clip", "none"):
        (run,) = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"params.`toggle.optimizer.overrides.prenorm` = '{prenorm}'",
        )
        assert run.data.params["optimizer.decay.prenorm"] == prenorm
    assert not list((tmp_path / "results" / "mlf").glob("*/logs/mlflow.db"))
