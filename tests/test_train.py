"""Training harness: model, module, curves, phases, resume, divergence, DDP, CLI.

Every run is a tiny BERT (2 x 128, vocab 512, seq 32) on the structured synthetic data of
``tests/synthetic.py`` on CPU. End-to-end runs that start processes are marked ``slow``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import synthetic
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from transformers import BertForPreTraining

import lamb_variants
from ablations.__main__ import main
from ablations.config import ModelConfig, PhaseConfig, RunConfig
from ablations.run.curves import Curves
from ablations.run.model import BertPretraining
from ablations.run.module import PretrainingModule
from ablations.run.phase_data import PhaseData
from ablations.run.sampling import StepBatchSampler
from ablations.run.train import train

REPO = Path(__file__).resolve().parents[1]
PHASE = {"global_batch": 16, "micro_batch": 8, "seq_len": 32, "max_predictions": 5}


def config(**overrides) -> RunConfig:
    raw = {
        "model": {"size": "tiny"},
        "data": {"vocab_size": 512},
        "phases": [{**PHASE, "steps": 8, "lr": 2e-2, "warmup": 0.25}],
        "log": {"layer_every": 3, "val_every": 4, "val_batches": 2},
        "checkpoint_every": 3,
    }
    for key, value in overrides.items():
        raw[key] = value
    return RunConfig.from_dict(raw)


def lines(run_dir: Path, kind: str = "metrics") -> list[dict]:
    return Curves(run_dir).read(kind)


def timeless(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "wall_time"}


def batch_of(n: int = 6, phase: PhaseConfig | None = None, vocab: int = 512) -> dict:
    phase = phase or PhaseConfig(**PHASE)
    data = synthetic.SyntheticData(config().data, phase, 0, num_train=n, num_val=1)
    data.setup("fit")
    return next(iter(torch.utils.data.DataLoader(data.train_set, batch_size=n)))


# --- model -------------------------------------------------------------------------------------


def test_mlm_head_runs_on_masked_positions_only_and_matches_transformers():
    torch.manual_seed(0)
    model = BertPretraining(ModelConfig(size="tiny", dropout=0.0), 512).eval()
    batch = batch_of(6)
    batch["masked_lm_weights"][0, -2:] = 0.0  # padding predictions are left out
    num_masked = int((batch["masked_lm_weights"] > 0).sum())
    assert num_masked < batch["masked_lm_weights"].numel()
    out = model(batch)
    assert out["mlm_logits"].shape == (num_masked, 512)
    assert int(out["mlm_count"]) == num_masked

    reference = BertForPreTraining(model.config).eval()
    reference.load_state_dict(model.state_dict())
    labels = torch.full_like(batch["input_ids"], -100)
    for b, (pos, ids, w) in enumerate(
        zip(
            batch["masked_lm_positions"],
            batch["masked_lm_ids"],
            batch["masked_lm_weights"],
            strict=True,
        )
    ):
        keep = w > 0
        labels[b, pos[keep]] = ids[keep]
    with torch.no_grad():
        ref = reference(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            labels=labels,
            next_sentence_label=batch["next_sentence_labels"],
        )
    ref_mlm = ref.loss - torch.nn.functional.cross_entropy(
        ref.seq_relationship_logits, batch["next_sentence_labels"]
    )
    assert abs(out["mlm_loss"].item() - ref_mlm.item()) < 1e-5
    assert abs(out["loss"].item() - ref.loss.item()) < 1e-5
    # the decoder is the word embedding matrix, as in BertForPreTraining
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_init_is_berts():
    torch.manual_seed(0)
    model = BertPretraining(ModelConfig(size="tiny", initializer_range=0.02), 512)
    emb = model.bert.embeddings.word_embeddings.weight
    assert torch.all(emb[0] == 0)  # padding row
    assert abs(emb[1:].std().item() - 0.02) < 1e-3
    dense = model.bert.encoder.layer[0].intermediate.dense
    assert abs(dense.weight.std().item() - 0.02) < 1e-3 and torch.all(dense.bias == 0)
    assert torch.all(model.cls.predictions.bias == 0)
    ln = model.bert.embeddings.LayerNorm
    assert torch.all(ln.weight == 1) and torch.all(ln.bias == 0)


def test_token_ids_beyond_the_vocabulary_are_a_one_line_error():
    model = BertPretraining(ModelConfig(size="tiny"), 32)  # the data uses ids up to 51
    with pytest.raises(ValueError, match=r"^vocab/model size mismatch: .*vocab_size is 32$"):
        model(batch_of(2))


# --- data order --------------------------------------------------------------------------------


def test_sampler_global_batch_is_the_same_on_any_number_of_ranks():
    def micro_batches(world: int, micro: int) -> list[list[int]]:
        out = []
        for window in range(3):
            for rank in range(world):
                s = StepBatchSampler(50, micro, 24, rank=rank, world_size=world, seed=3, windows=3)
                out += [s.micro_batch(window, j) for j in range(s.accumulation)]
        return out

    two_ranks, one_rank = micro_batches(2, 4), micro_batches(1, 4)
    assert two_ranks == one_rank  # rank-major: the same micro-batches, in the same order
    flat = [i for mb in one_rank for i in mb]
    assert sorted(flat[:50]) == list(range(50))  # an epoch is a permutation
    resumed = StepBatchSampler(50, 4, 24, seed=3, windows=3, start=lambda: 1)
    assert list(resumed) == one_rank[6:]  # restarts at the restored step
    assert len(resumed) == 12
    ordered = StepBatchSampler(5, 4, 8, windows=2, order=lambda e: torch.arange(5).roll(e))
    assert list(ordered) == [[0, 1, 2, 3], [4, 4, 0, 1], [2, 3, 3, 4], [0, 1, 2, 2]]


# --- curves ------------------------------------------------------------------------------------


def test_truncate_drops_lines_after_the_checkpoint_and_torn_lines(tmp_path):
    curves = Curves(tmp_path)
    curves.append("metrics", [{"step": s, "x": float(s)} for s in range(1, 6)])
    curves.append("val", [{"step": 2}, {"step": 4}])
    curves.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "x"')  # a crash mid-line
    curves.truncate(3)
    assert [r["step"] for r in lines(tmp_path)] == [1, 2, 3]
    assert [r["step"] for r in lines(tmp_path, "val")] == [2]
    curves.append("metrics", [{"step": 4, "x": math.nan}])
    curves.close()
    assert lines(tmp_path)[-1] == {"step": 4, "x": None}  # strict JSON: non-finite is null


# --- training ----------------------------------------------------------------------------------


def test_tiny_bert_learns_and_writes_its_run_files(tmp_path):
    cfg = config(phases=[{**PHASE, "steps": 40, "lr": 2e-2, "warmup": 0.1}])
    cfg = RunConfig.from_dict({**cfg.to_dict(), "log": {"layer_every": 10, "val_every": 20}})
    result = train(cfg, tmp_path, synthetic.make)

    assert result["status"] == "complete" and result["step"] == 40
    metrics = lines(tmp_path)
    assert [r["step"] for r in metrics] == list(range(1, 41))
    mlm = [r["train/mlm_loss"] for r in metrics]
    first, last = sum(mlm[:5]) / 5, sum(mlm[-5:]) / 5
    assert last < first - 1.0, (first, last)
    assert [r["step"] for r in lines(tmp_path, "val")] == [20, 40]
    layer_lines = lines(tmp_path, "layers")
    assert [r["step"] for r in layer_lines] == [10, 20, 30, 40]
    assert len(layer_lines[0]["tensors"]) == len(layer_lines[0]["trust_ratio"]) > 20
    row = metrics[-1]
    assert row["samples"] == 40 * 16 and row["tokens"] > 0 and row["wall_time"] > 0
    assert row["optim/trust_ratio_min"] <= row["optim/trust_ratio_p50"]
    assert row["optim/trust_ratio_p50"] <= row["optim/trust_ratio_max"]
    schedule = lamb_variants.PolyWarmup.from_proportion(40, 0.1)
    assert [r["optim/lr"] for r in metrics] == pytest.approx(
        [2e-2 * schedule(t) for t in range(1, 41)]
    )

    assert RunConfig.from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text())) == cfg
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["versions"]["lamb_variants"] == lamb_variants.__version__
    assert meta["attempts"][0]["device"] == "cpu"
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "complete" and status["metrics"]["step"] == 40
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "phase1").iterdir()) == ["end.ckpt"]
    # a finished run is not run again
    assert train(cfg, tmp_path, synthetic.make)["metrics"] == result["metrics"]


def test_divergence_stops_the_run_and_keeps_the_curve(tmp_path):
    cfg = config(phases=[{**PHASE, "steps": 20, "lr": 1e3, "warmup": 0.0}])
    result = train(cfg, tmp_path, synthetic.make)
    assert result["status"] == "diverged"
    step = result["step"]
    assert 1 < step < 20 and "loss" in result["reason"]
    metrics = lines(tmp_path)
    assert [r["step"] for r in metrics] == list(range(1, step + 1))
    loss = metrics[-1]["train/loss"]
    assert loss is None or loss > cfg.divergence_factor * metrics[0]["train/loss"]
    assert json.loads((tmp_path / "status.json").read_text())["step"] == step
    assert train(cfg, tmp_path, synthetic.make)["step"] == step  # not run again


def test_crash_between_last_checkpoint_and_end_checkpoint(tmp_path):
    """A phase whose last step was checkpointed but whose end.ckpt is missing just finishes."""
    cfg = config(phases=[{**PHASE, "steps": 6}])
    train(cfg, tmp_path, synthetic.make)
    before = lines(tmp_path)
    phase_dir = tmp_path / "checkpoints" / "phase1"
    (phase_dir / "end.ckpt").rename(phase_dir / "last.ckpt")  # a checkpoint at step 6
    (tmp_path / "status.json").unlink()
    assert train(cfg, tmp_path, synthetic.make)["status"] == "complete"
    assert lines(tmp_path) == before and [r["step"] for r in lines(tmp_path, "val")] == [4, 6]
    assert sorted(p.name for p in phase_dir.iterdir()) == ["end.ckpt"]
    # every phase complete but no status (a crash right after end.ckpt): the numbers come back
    status = json.loads((tmp_path / "status.json").read_text())
    (tmp_path / "status.json").unlink()
    again = train(cfg, tmp_path, synthetic.make)
    assert again["metrics"] == status["metrics"] and again["val"] == status["val"]


class _Deferred(PretrainingModule):
    """Reads the device numbers every 3 steps, as on an accelerator."""

    def _flush_every(self) -> int:
        return 3


def test_deferred_reads_write_the_same_curves(tmp_path):
    cfg = config(phases=[{**PHASE, "steps": 8}], checkpoint_every=2)
    L.seed_everything(0)
    _fit(PretrainingModule(cfg, run_dir=tmp_path / "every"), cfg)
    L.seed_everything(0)
    deferred = _Deferred(cfg, run_dir=tmp_path / "deferred")
    flushes = []
    deferred.flush = lambda flush=deferred.flush: flushes.append(len(deferred._steps)) or flush()
    _fit(deferred, cfg)
    for kind in ("metrics", "val", "layers"):
        got, want = lines(tmp_path / "deferred", kind), lines(tmp_path / "every", kind)
        assert [timeless(r) for r in got] == [timeless(r) for r in want], kind
    assert max(flushes) == 3  # several steps were read at once


def test_bad_data_fails_before_the_run_dir_exists(tmp_path):
    def broken(data, phase, seed):
        raise RuntimeError("no data here\nsecond line")

    with pytest.raises(RuntimeError, match="no data here"):
        train(config(), tmp_path / "run", broken)
    assert not (tmp_path / "run").exists()  # checked before anything is written


class _Boom(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 3:
            raise RuntimeError("boom in training\nsecond line")


def test_a_failure_is_recorded_in_one_line_and_raised(tmp_path):
    with pytest.raises(RuntimeError, match="boom in training"):
        train(config(), tmp_path, synthetic.make, callbacks=[_Boom()])
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "failed" and status["error"] == "RuntimeError: boom in training"


class _Capture(Callback):
    """Optimizer state and weights when each phase's training starts."""

    def __init__(self) -> None:
        self.start: dict[int, dict] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        opt = trainer.optimizers[0]
        state = opt.state_dict()
        self.start[pl_module.phase_index] = {
            "state": {i: {k: v.clone() for k, v in s.items()} for i, s in state["state"].items()},
            "steps": [g["step"] for g in opt.param_groups],
            "weights": {k: v.clone() for k, v in pl_module.model.state_dict().items()},
        }


@pytest.mark.parametrize("phase2", ["carry", "fresh"])
def test_phase_two_starts_from_phase_one(tmp_path, phase2):
    p2 = {**PHASE, "steps": 4, "global_batch": 8, "seq_len": 48, "max_predictions": 8}
    cfg = config(
        phases=[{**PHASE, "steps": 5}, {**p2, "lr": 4e-3, "warmup": 0.5}],
        optimizer={"preset": "nvlamb", "phase2": phase2},
    )
    capture = _Capture()
    result = train(cfg, tmp_path, synthetic.make, callbacks=[capture])
    assert result["status"] == "complete" and result["step"] == 9

    end1 = torch.load(tmp_path / "checkpoints/phase1/end.ckpt", weights_only=True)
    start2 = capture.start[1]
    assert start2["steps"] == [0, 0]  # the step count restarts (bias correction from t = 1)
    for key, value in end1["state_dict"].items():
        assert torch.equal(start2["weights"][key.removeprefix("model.")], value)
    if phase2 == "carry":
        final1 = end1["optimizer_states"][0]["state"]
        assert final1.keys() == start2["state"].keys()
        for i, s in final1.items():
            assert torch.equal(start2["state"][i]["exp_avg"], s["exp_avg"])
            assert torch.equal(start2["state"][i]["exp_avg_sq"], s["exp_avg_sq"])
    else:
        assert start2["state"] == {}  # a new optimizer: moments start at zero
    end2 = torch.load(tmp_path / "checkpoints/phase2/end.ckpt", weights_only=True)
    assert [g["step"] for g in end2["optimizer_states"][0]["param_groups"]] == [4, 4]

    metrics = lines(tmp_path)
    assert [(r["phase"], r["step"], r["phase_step"]) for r in metrics] == [
        *((1, s, s) for s in range(1, 6)),
        *((2, 5 + s, s) for s in range(1, 5)),
    ]
    schedule = lamb_variants.PolyWarmup.from_proportion(4, 0.5)
    assert metrics[5]["optim/lr"] == pytest.approx(4e-3 * schedule(1))  # phase 2 warmup: 2e-3
    assert metrics[5]["samples"] == 5 * 16 + 8
    assert [(r["phase"], r["step"]) for r in lines(tmp_path, "val")] == [
        (1, 4),
        (1, 5),
        (2, 8),
        (2, 9),
    ]


class _InfAt(PretrainingModule):
    """Makes the loss of one micro-batch infinite: fp16's GradScaler must skip that step."""

    bad_call = 5  # the 5th micro-batch: window 3 (2 micro-batches per window)

    def configure_model(self) -> None:
        super().configure_model()
        forward, calls = self.model.forward, [0]

        def poisoned(batch):
            out = forward(batch)
            calls[0] += 1
            if calls[0] == self.bad_call:
                out["loss"] = out["loss"] * math.inf
            return out

        self.model.forward = poisoned


def _fit(module, cfg: RunConfig, **trainer_kwargs) -> L.Trainer:
    phase = cfg.phases[0]
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=2 * phase.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        **trainer_kwargs,
    )
    data = PhaseData(synthetic.make(cfg.data, phase, cfg.seed), phase, cfg.seed)
    trainer.fit(module, datamodule=data)
    return trainer


def test_fp16_skipped_step_advances_neither_optimizer_nor_schedule(tmp_path):
    from lightning.pytorch.plugins.precision import MixedPrecision

    cfg = config(phases=[{**PHASE, "steps": 5, "lr": 2e-2, "warmup": 0.4}])
    L.seed_everything(0)
    fp32 = PretrainingModule(cfg, run_dir=tmp_path / "fp32")
    _fit(fp32, cfg)
    L.seed_everything(0)
    module = _InfAt(cfg, run_dir=tmp_path / "fp16")
    trainer = _fit(module, cfg, plugins=[MixedPrecision("16-mixed", "cpu")])

    metrics = lines(tmp_path / "fp16")
    assert [r["step"] for r in metrics] == [1, 2, 3, 4, 5]
    assert [r["optim/skipped"] for r in metrics] == [0, 0, 1, 1, 1]
    assert trainer.global_step == 6  # Lightning counts the skipped window too
    opt = trainer.optimizers[0]
    assert [g["step"] for g in opt.param_groups] == [5, 5]
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 5
    schedule = lamb_variants.PolyWarmup.from_proportion(5, 0.4)
    assert [r["optim/lr"] for r in metrics] == pytest.approx(
        [2e-2 * schedule(t) for t in range(1, 6)]
    )
    # the scale halves at the skipped window
    scales = [r["optim/loss_scale"] for r in metrics]
    assert scales[:2] == [65536.0] * 2 and scales[2:] == [32768.0] * 3
    # Lamb saw unscaled gradients: step 1 matches the fp32 run's norm, not 65536 x it
    g16, g32 = metrics[0]["optim/grad_norm"], lines(tmp_path / "fp32")[0]["optim/grad_norm"]
    assert abs(g16 - g32) < 0.02 * g32


# --- resume, DDP, CLI (processes) --------------------------------------------------------------


def _cli(run_dir: Path, cfg_path: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}",
        "OMP_NUM_THREADS": "1",  # as conftest.py: same threads, same float summation order
        **(env or {}),
    }
    cmd = [sys.executable, "-m", "ablations", "train", "--config", str(cfg_path)]
    cmd += ["--run-dir", str(run_dir), "--datamodule", "synthetic:make", *args]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _kill_when(proc: subprocess.Popen, run_dir: Path, done, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited early:\n{proc.communicate()[1][-3000:]}")
        if (run_dir / "metrics.jsonl").exists() and done(lines(run_dir)):
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            return
        time.sleep(0.01)
    proc.kill()
    proc.communicate()
    raise AssertionError("timed out")


@pytest.mark.slow
def test_resume_after_sigkill_in_each_phase_reproduces_the_curve(tmp_path):
    cfg = config(
        phases=[{**PHASE, "steps": 8}, {**PHASE, "steps": 8, "lr": 1e-2}],
        model={"size": "tiny", "dropout": 0.1},  # dropout: the RNG state must be restored too
    )
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.to_dict()))
    reference = train(cfg, tmp_path / "ref", synthetic.make)
    assert reference["status"] == "complete"

    run = tmp_path / "run"
    slow = {"SYNTHETIC_DELAY": "0.05"}  # seconds per micro-batch: room to kill mid-phase

    def checkpointed(phase: int) -> int:
        last = torch.load(run / f"checkpoints/phase{phase}/last.ckpt", weights_only=True)
        return last["ablations"]["phase_step"]

    # killed in phase 1, with lines written after the last checkpoint (step 3 of every 3)
    _kill_when(_cli(run, cfg_path, env=slow), run, lambda m: len(m) >= 4)
    assert not (run / "checkpoints/phase1/end.ckpt").exists()
    assert checkpointed(1) < lines(run)[-1]["phase_step"]
    # killed in phase 2, the same way
    _kill_when(_cli(run, cfg_path, env=slow), run, lambda m: m[-1]["step"] >= 12)
    assert (run / "checkpoints/phase1/end.ckpt").exists()
    assert not (run / "checkpoints/phase2/end.ckpt").exists()
    assert checkpointed(2) < lines(run)[-1]["phase_step"]
    assert json.loads((run / "status.json").read_text())["status"] == "running"
    result = train(cfg, run, synthetic.make)
    assert result["status"] == "complete"

    for kind in ("metrics", "val", "layers"):
        got, want = lines(run, kind), lines(tmp_path / "ref", kind)
        assert [r["step"] for r in got] == [r["step"] for r in want], kind
        for g, w in zip(got, want, strict=True):  # bit for bit (tests/test_resume.py)
            assert timeless(g) == timeless(w), (kind, w["step"])
    assert len(json.loads((run / "meta.json").read_text())["attempts"]) == 3


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_twice_the_accumulation(tmp_path):
    phases = [{**PHASE, "steps": 4, "global_batch": 32, "micro_batch": 8}]
    one = config(phases=phases, model={"size": "tiny", "dropout": 0.0})
    # the noise scale's micro-batch norms: per rank, before the all-reduce
    one = RunConfig.from_dict(
        {**one.to_dict(), "log": {**one.to_dict()["log"], "noise_scale": True}}
    )
    two = RunConfig.from_dict({**one.to_dict(), "devices": 2})
    assert one.phases[0].accumulation(1) == 2 * two.phases[0].accumulation(2)
    cfg_path = tmp_path / "ddp.yaml"
    cfg_path.write_text(yaml.safe_dump(two.to_dict()))

    proc = _cli(tmp_path / "ddp", cfg_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert json.loads(out)["status"] == "complete"
    assert "Starting with 2 processes" in err and "distributed_backend=gloo" in err
    train(one, tmp_path / "one", synthetic.make)

    ddp, single = lines(tmp_path / "ddp"), lines(tmp_path / "one")
    assert [r["step"] for r in ddp] == [r["step"] for r in single] == [1, 2, 3, 4]
    for d, s in zip(ddp, single, strict=True):
        for key in ("train/loss", "train/mlm_loss", "optim/grad_norm", "optim/update_norm"):
            assert d[key] == pytest.approx(s[key], rel=1e-4), key
        for key in ("noise/small_sq", "noise/big_sq", "noise/b_simple"):
            assert d[key] == pytest.approx(s[key], rel=1e-4), key
        assert d["tokens"] == s["tokens"] and d["train/mlm_acc"] == s["train/mlm_acc"]
    val_d, val_s = lines(tmp_path / "ddp", "val"), lines(tmp_path / "one", "val")
    assert val_d[-1]["val/loss"] == pytest.approx(val_s[-1]["val/loss"], rel=1e-4)


BAD_CLI = [
    (["model.sise=3"], "error: model.sise: unknown key"),
    (["sise.x=3"], "error: sise: unknown key"),
    (["optimizer.preset=lamb"], "error: optimizer.preset: expected one of"),
    (["optimizer.overrides.clip=1.0"], "error: optimizer.overrides.clip: expected a knob"),
    (["phases.3.lr=1e-3"], "error: phases.3: expected an index below 1"),
    (["phases.0.lr=fast"], "error: phases[0].lr: expected a number"),
    (["seed"], "error: 'seed': expected key=value"),
]


@pytest.mark.parametrize(("args", "message"), BAD_CLI, ids=[a[0][0] for a in BAD_CLI])
def test_cli_errors_exit_2_with_one_line_and_create_nothing(tmp_path, capsys, args, message):
    run_dir = tmp_path / "run"
    assert main(["train", "--run-dir", str(run_dir), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not run_dir.exists()


def test_cli_overrides_parse_yaml_values(tmp_path):
    from ablations.__main__ import load_config

    path = tmp_path / "run.yaml"
    path.write_text("phases:\n  - {steps: 3, lr: 1e-3}\n")
    cfg = load_config(path, ["phases.0.lr=2e-3", "optimizer.overrides.prenorm=none", "seed=7"])
    assert cfg.phases[0].lr == 2e-3 and cfg.phases[0].steps == 3 and cfg.seed == 7
    assert dict(cfg.optimizer.overrides) == {"prenorm": "none"}


@pytest.mark.slow
def test_cli_process_exits_2_for_a_bad_key(tmp_path):
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text("seed: 1\n")
    proc = _cli(tmp_path / "run", cfg_path, "optimizer.preset=nope")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and out == ""
    assert err.startswith("error: optimizer.preset: expected one of") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_a_run_prints_no_warning_or_advertisement_that_does_not_apply(tmp_path):
    """Outside SLURM on a machine with ``srun`` installed (one is put on the PATH if the machine
    has none), a two-phase run prints neither Lightning's "srun is available but not used" check
    nor its litlogger advertisement (issue 21, item 5); its status lines are still there."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if shutil.which("srun") is None:  # what Lightning's check looks for: any srun on the PATH
        (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / "srun").chmod(0o755)
    cfg = config(phases=[{**PHASE, "steps": 2}, {**PHASE, "steps": 2}])
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.to_dict()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    proc = _cli(tmp_path / "run", cfg_path, env=env)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "srun` command is available" not in err
    assert "litlogger" not in err and "Tip:" not in err
    assert "phase 2 step 4/4" in err  # the run's own status lines
