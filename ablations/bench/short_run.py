"""A short run (BERT-base, 200 steps on a GPU) in bf16 against fp32, and killed and resumed.

Both checks train through :func:`ablations.run.train.train` on the embedded corpus
(``BertDataModule``) from one seed:

- **bf16 against fp32** (:func:`precision_agreement`): the same run in ``bf16-mixed`` and in
  ``32``. Both must train: the mean training loss of the last tenth of the steps at most
  :data:`FALL` times that of the first tenth (a run that does not learn stays within the batch
  noise of its start, under 1% for such a window mean). Neither may skip a step. And their
  curves must agree: in every window of a tenth of the steps, the mean losses differ by at most
  :data:`AGREEMENT` of the fp32 mean. Why that bound: the two runs see the same batches, from
  one seed, and train without dropout (a mask drawn for a bf16 tensor need not be the one drawn
  for an fp32 tensor from the same generator state), so they differ by rounding only. bf16 keeps 8
  significant bits (unit roundoff 2⁻⁸ ≈ 0.4%); the matmuls of the forward and backward passes
  round their inputs to it, and the runs drift apart slowly from there. Mixed-precision training
  matches fp32's loss curve (Micikevicius et al. 2018, arXiv 1710.03740; bf16: Kalamkar et al.
  2019, arXiv 1905.12322), so the bound is a few roundoffs, 2%: far above what the CPU mode
  measures (0.01%), far below what a defect does (a broken cast or a lost loss term moves the
  loss by tens of percent).
- **killed and resumed** (:func:`resume_equality`): the bf16 run stopped at once after step
  ``kill_at`` (an exception raised from a callback: nothing saved, as under SIGKILL; the
  checkpoint it resumes from is the last ``checkpoint_every`` one), then resumed from its run
  directory, must write the same ``metrics``, ``val`` and ``layers`` lines, every field but
  ``wall_time``, as the same run uninterrupted (``tests/test_resume.py`` proves it bit for bit
  on the CPU). On a GPU that needs deterministic kernels, so both runs train under
  :func:`deterministic`: ``torch.use_deterministic_algorithms(True)`` (cuDNN included), with
  cuBLAS's ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` set by the command before CUDA starts
  (PyTorch, "Reproducibility"). Strict first: an op with no deterministic kernel then raises;
  if one does, both runs are redone with ``warn_only=True`` and the error is recorded, with
  every warning of such an op, as the reason the runs may differ.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from ablations.config import RunConfig
from ablations.core.errors import one_line
from ablations.core.fileio import read_json
from ablations.run.curves import Curves
from ablations.run.train import train

#: A run trains when its last window's mean loss is at most this fraction of its first's.
FALL = 0.97
#: bf16 and fp32 agree when every window's mean loss differs by at most this fraction.
AGREEMENT = 0.02


@dataclass(frozen=True)
class ShortRun:
    """The run both checks train (a GPU's or the CPU mode's sizes)."""

    size: str
    steps: int
    batch: int
    seq_len: int
    predictions: int
    lr: float
    vocab: int
    checkpoint_every: int
    val_every: int
    kill_at: int
    cache_dir: str

    def config(self, precision: str, device: torch.device, dropout: float = 0.1) -> RunConfig:
        return RunConfig.from_dict(
            {
                "model": {"size": self.size, "dropout": dropout},
                "data": {"vocab_size": self.vocab, "cache_dir": self.cache_dir},
                "phases": [
                    {
                        "steps": self.steps,
                        "global_batch": self.batch,
                        "micro_batch": self.batch,
                        "seq_len": self.seq_len,
                        "max_predictions": self.predictions,
                        "lr": self.lr,
                        "warmup": 0.1,
                    }
                ],
                "precision": precision,
                "accelerator": "gpu" if device.type == "cuda" else "cpu",
                "log": {"val_every": self.val_every, "val_batches": 4, "progress": "none"},
                "checkpoint_every": self.checkpoint_every,
            }
        )


def settings() -> dict[str, Any]:
    """What decides whether a GPU run repeats itself exactly."""
    out: dict[str, Any] = {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
    if torch.cuda.is_available():
        out.update(
            cudnn_deterministic=torch.backends.cudnn.deterministic,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
        )
    return out


@contextlib.contextmanager
def deterministic(warn_only: bool) -> Iterator[list[str]]:
    """Deterministic algorithms for the block (the previous setting after it); yields the list
    that collects the warnings of ops without a deterministic kernel (each message once)."""
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    found: list[str] = []
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield found
        for w in caught:
            text = " ".join(str(w.message).split())
            if "determinis" in text and text not in found:
                found.append(text)
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def curves(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """A run's curve lines without ``wall_time`` (the one field that may differ)."""
    return {
        kind: [{k: v for k, v in r.items() if k != "wall_time"} for r in Curves(run_dir).read(kind)]
        for kind in ("metrics", "val", "layers")
    }


def _train(run: ShortRun, precision: str, device: torch.device, run_dir: Path) -> dict[str, Any]:
    """Train the run without dropout in ``run_dir``; its status and per-step losses."""
    status = train(run.config(precision, device, dropout=0.0), run_dir)
    metrics = Curves(run_dir).read("metrics")
    return {
        "status": status["status"],
        "losses": [m["train/loss"] for m in metrics],
        "skipped": metrics[-1]["optim/skipped"] if metrics else None,
        "val_mlm_loss": (status.get("val") or {}).get("val/mlm_loss"),
    }


def _windows(losses: list[float], width: int) -> list[float]:
    return [statistics.fmean(losses[i : i + width]) for i in range(0, len(losses), width)]


#: The two runs of :func:`precision_agreement`: name (its run folder) -> Lightning precision.
PRECISIONS = {"bf16": "bf16-mixed", "fp32": "32"}


def precision_agreement(run: ShortRun, device: torch.device, workdir: Path) -> dict[str, Any]:
    """The run in bf16-mixed and in fp32 (module docstring), with the machine's default
    kernels (the ones training uses) and without dropout."""
    runs = {name: _train(run, p, device, workdir / name) for name, p in PRECISIONS.items()}
    width = max(1, run.steps // 10)
    out: dict[str, Any] = {"model": run.size, "steps": run.steps, "window": width, "dropout": 0.0}
    windows = {}
    for name, r in runs.items():
        windows[name] = w = _windows(r["losses"], width)
        complete = r["status"] == "complete" and len(r["losses"]) == run.steps
        out[name] = {
            "precision": PRECISIONS[name],
            "status": r["status"],
            "first_loss": w[0] if w else None,
            "last_loss": w[-1] if w else None,
            "val_mlm_loss": r["val_mlm_loss"],
            "skipped": r["skipped"],
            "trains": complete and w[-1] <= FALL * w[0],
        }
    gaps = [abs(a - b) / b for a, b in zip(windows["bf16"], windows["fp32"], strict=False)]
    out["max_window_gap"] = max(gaps) if gaps else None
    out["bound"] = AGREEMENT
    out["fall"] = FALL
    out["settings"] = settings()
    trained = all(out[name]["trains"] and out[name]["skipped"] == 0 for name in runs)
    out["ok"] = trained and max(gaps) <= AGREEMENT
    return out


class Killed(Exception):
    """Raised by :class:`Kill`."""


class Kill(Callback):
    """Raise :class:`Killed` once step ``step`` is done and its end-of-step work (curve lines,
    a checkpoint) with it: the run stops with nothing more saved."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: Any, pl_module: Any, *_: Any) -> None:
        if pl_module.step == self.step:
            raise Killed(f"killed after step {self.step}")


def resume_equality(run: ShortRun, device: torch.device, workdir: Path) -> dict[str, Any]:
    """The bf16 run killed after ``run.kill_at`` and resumed, against the same run
    uninterrupted, under deterministic kernels: strict, else warn-only (module docstring)."""
    try:
        return _resume(run, device, workdir / "strict", warn_only=False)
    except RuntimeError as e:
        if "determinis" not in str(e).lower():
            raise
        out = _resume(run, device, workdir / "warn-only", warn_only=True)
        return {**out, "strict_error": one_line(e)}


def _resume(run: ShortRun, device: torch.device, workdir: Path, warn_only: bool) -> dict[str, Any]:
    config = run.config("bf16-mixed", device)
    whole, resumed = workdir / "uninterrupted", workdir / "resumed"
    with deterministic(warn_only) as nondeterministic:
        train(config, whole)
        with contextlib.suppress(Killed):
            train(config, resumed, callbacks=[Kill(run.kill_at)])
        status = train(config, resumed)
        used = settings()
    attempts = len(read_json(resumed / "meta.json")["attempts"])
    want, got = curves(whole), curves(resumed)
    out: dict[str, Any] = {
        "model": run.size,
        "precision": "bf16-mixed",
        "steps": run.steps,
        "killed_after": run.kill_at,
        "checkpoint_every": run.checkpoint_every,
        "attempts": attempts,
        "status": status["status"],
        "equal": want == got,
        "settings": used,
        "nondeterministic_ops": nondeterministic,
    }
    if want != got:
        out.update(_first_difference(want["metrics"], got["metrics"]))
    out["ok"] = out["equal"] and attempts == 2 and status["status"] == "complete"
    return out


def _first_difference(want: list[dict], got: list[dict]) -> dict[str, Any]:
    """Where the resumed run's metrics part from the uninterrupted run's, and by how much."""
    pairs = list(zip(want, got, strict=False))
    differing = [a["step"] for a, b in pairs if a != b]
    gap = [abs(a["train/loss"] - b["train/loss"]) for a, b in pairs]
    return {
        "first_differing_step": differing[0] if differing else None,
        "max_loss_difference": max(gap, default=None),
        "lines": [len(want), len(got)],
    }
