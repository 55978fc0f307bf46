"""BERT pretraining end to end on real data: the embedded corpus, NVIDIA HDF5 shards, the CLI.

test_train.py checks the training machinery (resume, phases, DDP, divergence) on small
synthetic data; here the real ``BertDataModule`` feeds it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from ablations.config import RunConfig
from ablations.run.train import train

ROOT = Path(__file__).resolve().parents[1]


def _config(data: dict, steps: int, **phase) -> RunConfig:
    return RunConfig.from_dict(
        {
            "model": {"size": "tiny", "dropout": 0.0},
            "data": data,
            "phases": [
                {
                    "steps": steps,
                    "global_batch": 32,
                    "micro_batch": 32,
                    "seq_len": 64,
                    "max_predictions": 10,
                    "lr": 6e-3,
                    "warmup": 0.1,
                    "decay_power": 0.5,
                    **phase,
                }
            ],
            "log": {"val_every": steps, "layer_every": steps},
            "checkpoint_every": steps,
        }
    )


def _curve(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_tiny_bert_learns_on_the_embedded_corpus(embedded_cache, tmp_path):
    cache, _ = embedded_cache
    steps = 60
    config = _config({"source": "embedded", "vocab_size": 4096, "cache_dir": str(cache)}, steps)
    result = train(config, tmp_path / "run")
    assert result["status"] == "complete"
    curve = _curve(tmp_path / "run")
    assert [r["step"] for r in curve] == list(range(1, steps + 1))
    first = np.mean([r["train/mlm_loss"] for r in curve[:5]])
    last = np.mean([r["train/mlm_loss"] for r in curve[-5:]])
    # ln(4096) = 8.3 at initialisation; 60 steps of 32 sequences must take a clear bite out of it
    assert first > 7.5 and last < first - 0.5, (first, last)
    assert all(r["samples"] == 32 * r["step"] for r in curve)
    val = [json.loads(line) for line in (tmp_path / "run" / "val.jsonl").read_text().splitlines()]
    assert val[-1]["step"] == steps and val[-1]["val/mlm_loss"] < first


def _nvidia_shard(path: Path, n: int, seq_len: int, max_pred: int, vocab: int, seed: int) -> None:
    """A shard in NVIDIA's exact format (create_pretraining_data.py: gzip, i4/i1 datasets).

    The content is learnable: tokens follow a Zipf law (a model learns the unigram quickly,
    entropy ~1 nat below uniform) and segment B repeats segment A.
    """
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, vocab - 5 + 1)
    zipf /= zipf.sum()
    half = (seq_len - 3) // 2
    ids = np.zeros((n, seq_len), np.int32)
    mask = np.zeros((n, seq_len), np.int8)
    segment = np.zeros((n, seq_len), np.int8)
    positions = np.zeros((n, max_pred), np.int32)
    masked_ids = np.zeros((n, max_pred), np.int32)
    cls, sep, mask_id = 2, 3, 4
    for i in range(n):
        a = 5 + rng.choice(vocab - 5, size=half, p=zipf)
        row = np.concatenate([[cls], a, [sep], a, [sep]])
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
        segment[i, half + 2 : len(row)] = 1
        k = int(rng.integers(1, max_pred + 1))
        pos = np.sort(rng.choice(np.arange(1, half + 1), size=k, replace=False))
        positions[i, :k] = pos
        masked_ids[i, :k] = ids[i, pos]
        ids[i, pos] = mask_id
    with h5py.File(path, "w") as f:
        for key, value in (
            ("input_ids", ids),
            ("input_mask", mask),
            ("segment_ids", segment),
            ("masked_lm_positions", positions),
            ("masked_lm_ids", masked_ids),
            ("next_sentence_labels", rng.integers(0, 2, n).astype(np.int8)),
        ):
            f.create_dataset(key, data=value, dtype=value.dtype, compression="gzip")


@pytest.mark.slow
def test_trains_on_nvidia_hdf5_shards(tmp_path):
    shards = tmp_path / "hdf5_lower_case_1_seq_len_32_max_pred_5" / "training"
    shards.mkdir(parents=True)
    for k in range(2):
        _nvidia_shard(shards / f"part_{k}.hdf5", 256, 32, 5, vocab=200, seed=k)
    data = {"source": str(shards), "format": "hdf5", "cache_dir": str(tmp_path / "cache")}
    config = _config(data, 40, seq_len=32, max_predictions=5, global_batch=32, micro_batch=16)
    result = train(config, tmp_path / "run")
    assert result["status"] == "complete"
    curve = _curve(tmp_path / "run")
    assert len(curve) == 40
    first = np.mean([r["train/mlm_loss"] for r in curve[:5]])
    last = np.mean([r["train/mlm_loss"] for r in curve[-5:]])
    assert last < first - 0.5, (first, last)  # at least the unigram law is learnt


def _cli(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "ablations", "train", "--run-dir", str(run_dir), *overrides],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def _bad_shard(path: Path, drop: str | None = None, seq_len: int = 32) -> Path:
    path.mkdir(parents=True)
    _nvidia_shard(path / "part_0.hdf5", 64, seq_len, 5, vocab=200, seed=0)
    if drop:
        with h5py.File(path / "part_0.hdf5", "a") as f:
            del f[drop]
    return path


BAD_INPUT = [
    ("missing corpus", lambda t: ["data.source=" + str(t / "nope")], "no such file or folder"),
    ("empty corpus", lambda t: ["data.source=" + str(_empty(t))], "holds no text"),
    (
        "shard without a key",
        lambda t: _hdf5(_bad_shard(t / "s", drop="masked_lm_ids")),
        "missing key 'masked_lm_ids'",
    ),
    (
        "shard of another length",
        lambda t: _hdf5(_bad_shard(t / "s", seq_len=48)),
        "seq_len",
    ),
    (
        "vocab smaller than the shards",
        lambda t: _hdf5(_bad_shard(t / "s")) + ["data.vocab_file=" + str(_vocab(t, 50))],
        "has 50 tokens",
    ),
    ("unknown preset", lambda t: ["optimizer.preset=lamb"], "optimizer.preset"),
    ("unknown override", lambda t: ["optimizer.overrides.clip=1"], "optimizer.overrides.clip"),
    (
        "corpus smaller than a micro-batch",
        lambda t: ["data.source=" + str(_tiny_text(t)), "data.vocab_size=128"],
        "micro_batch",
    ),
]


def _empty(t: Path) -> Path:
    (t / "empty").mkdir()
    (t / "empty" / "a.txt").write_text("\n\n")
    return t / "empty"


def _tiny_text(t: Path) -> Path:
    path = t / "tiny.txt"
    path.write_text("One short sentence. And another one here.\n\nA second document.\n")
    return path


def _hdf5(source: Path) -> list[str]:
    return [f"data.source={source}", "data.format=hdf5", "phases.0.seq_len=32"]


def _vocab(t: Path, n: int) -> Path:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    path = t / "vocab.txt"
    path.write_text("\n".join(specials + [f"w{i}" for i in range(n - len(specials))]) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize(("case", "args", "message"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, args, message, tmp_path):
    run_dir = tmp_path / "run"
    common = ["phases.0.max_predictions=5", f"data.cache_dir={tmp_path / 'cache'}"]
    done = _cli(run_dir, *common, *args(tmp_path))
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not run_dir.exists()
