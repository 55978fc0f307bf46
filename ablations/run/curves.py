"""A run's files: append-only curves, and atomically replaced status, config and metadata.

Layout of ``<run_dir>``::

    config.yaml     RunConfig.to_dict()
    meta.json       versions, git SHA, host, device, start time of every attempt
    resolved.json   what the run trains with: knobs and λ per group, tensors, data (resolved.py)
    status.json     {"status": "running" | "complete" | "diverged" | "failed" | "interrupted"
                    | "pruned", ...} (the vocabulary: ablations/core/status.py)
    metrics.jsonl   one line per optimizer step
    layers.jsonl    per-tensor trust ratios and norms every ``log.layer_every`` steps
    val.jsonl       validation losses every ``log.val_every`` steps and at each phase end
    checkpoints/    phase1/, phase2/: last.ckpt (resume point), end.ckpt (phase complete)
                    (checkpoints.py)

Every curve line has ``phase`` (1 or 2), ``step`` (optimizer steps since the start of the run,
1-based and continuous across phases: phase 2's first step is ``phases[0].steps + 1``) and
``phase_step`` (1-based within the phase). A step is an applied update: a window that fp16's
GradScaler skipped is not a step (NVIDIA counts the same way) and has no line; ``optim/skipped``
counts them.

``metrics.jsonl`` fields (one line per step; per-step values are means over the global batch):

- ``train/loss`` = ``train/mlm_loss + train/nsp_loss``: the micro-batch losses (masked-LM CE
  averaged over the micro-batch's real predictions, NSP CE averaged over its examples) averaged
  over micro-batches and ranks, i.e. the loss whose gradient the update used;
- ``train/mlm_acc`` (over all predictions of the step), ``train/nsp_acc``;
- ``optim/lr``: the lr this update used (param group 0; every group has the same schedule);
- ``optim/grad_norm``: global L2 norm of the gradients before pre-normalization/clipping
  (``opt.stats.grad_norm``, unscaled under fp16);
- ``optim/moments_grad_norm``: the same after pre-normalization, the gradient the moments see
  (``opt.stats.moments_grad_norm``: G for ``prenorm="none"``, min(G, 1) for ``"clip"``);
- ``optim/update_norm``: global L2 norm of the update direction ``u`` (moments direction plus
  weight decay, stage 4 of ``Lamb``) before the trust ratio and the lr, ``sqrt(sum_layers
  ||u_layer||^2)``; the applied step ``lr * r * u`` is ``lr * ||w||`` per adapted layer, so
  ``||u||`` is the informative one;
- ``optim/trust_ratio_min`` / ``_p50`` / ``_max``: over layers that get a trust ratio (null
  when none does, ``adapt="none"``);
- ``optim/skipped``: fp16 windows skipped so far; ``optim/loss_scale`` (fp16 only: the
  GradScaler's scale after this step's update);
- ``noise/small_sq``, ``noise/big_sq`` (``log.noise_scale`` only): the mean squared norm of the
  step's micro-batch gradients (per rank, before the all-reduce) and the squared norm of the
  step's gradient; ``noise/grad_sq`` and ``noise/trace``, the two-batch estimates of |G|² and
  tr Σ from them, and ``noise/b_simple``, the ratio of their moving averages
  (:mod:`ablations.run.noise`; McCandlish et al. 2018, Appendix A);
- ``samples``, ``tokens``: examples and non-padding input tokens of the applied updates so far;
- ``wall_time``: seconds spent in ``Trainer.fit`` of this run up to this step, summed over
  attempts (the time between a run's last checkpoint and a crash is not counted).

``val.jsonl``: ``val/loss``, ``val/mlm_loss`` (CE over all predictions of the first
``log.val_batches`` validation batches), ``val/nsp_loss``, ``val/mlm_acc``, ``val/nsp_acc``,
``samples``, ``wall_time``. ``layers.jsonl``: ``tensors`` (parameter names), ``layers``
(trust-ratio layer of each), and per tensor ``trust_ratio``, ``weight_norm``, ``update_norm``
(``opt.stats``: the norms are the layer's), ``eps_dominated`` (fraction of elements with
√v̂ ≤ ε) and ``sqrt_v_over_eps`` (median √v̂/ε) from ``opt.direction_stats()``
(:mod:`lamb_variants.telemetry`), and ``relative_update``: the applied ‖Δw‖/‖w‖ of the tensor,
measured from a copy of the weights taken before the step.

Values that are not finite (a diverging loss) are written as ``null``: the files are strict JSON.

Resume: :meth:`Curves.truncate` drops every line with ``step`` greater than the checkpoint's (and
a torn last line) before the resumed run appends, so a crash between a checkpoint and a later
line leaves neither a duplicate nor a gap.
"""

from __future__ import annotations

import json
import math
import platform
import re
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning
import torch
import transformers
import yaml

import lamb_variants
from ablations.core.fileio import finite, read_json, write_atomic, write_json
from ablations.core.status import Status
from ablations.run import writer

CURVES = ("metrics", "layers", "val")
#: ``layers.jsonl``'s per-tensor values, in the order the module writes them
#: (:mod:`ablations.run.step_stats`); runs older than the ε and ‖Δw‖ telemetry lack the last three.
LAYER_VALUES = (
    "trust_ratio",
    "weight_norm",
    "update_norm",
    "eps_dominated",
    "sqrt_v_over_eps",
    "relative_update",
)


def write_config(run_dir: Path, config: Mapping[str, Any]) -> None:
    writer.check()
    write_atomic(run_dir / "config.yaml", yaml.safe_dump(dict(config), sort_keys=False))


def write_status(run_dir: Path, status: Status, **fields: Any) -> dict[str, Any]:
    """Replace ``status.json``; returns what was written."""
    data = {"status": status, **fields, "updated": _now()}
    writer.check()
    write_json(run_dir / "status.json", data)
    return json.loads(json.dumps(finite(data)))


def write_meta(run_dir: Path, device: str) -> dict[str, Any]:
    """Record this attempt in ``meta.json``: versions and git SHA of the first attempt, and the
    host, device, start time and command of every attempt (a resume adds one)."""
    path = run_dir / "meta.json"
    meta = read_json(path) or {
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lightning": lightning.__version__,
            "transformers": transformers.__version__,
            "lamb_variants": lamb_variants.__version__,
        },
        "git": _git(Path(__file__).resolve().parents[2]),  # the repository root
        "attempts": [],
    }
    meta["attempts"].append(
        {
            "start": _now(),
            "host": socket.gethostname(),
            "device": device,
            "argv": sys.argv,
            "numerics": numerics(),
        }
    )
    writer.check()
    write_json(path, meta)
    return meta


def numerics() -> dict[str, Any]:
    """What decides whether two machines give the same seeded run to the last digit: the CPU
    model and the kernels torch dispatches to on it (its vector capability), the threads (sums
    split over threads add in another order), the BLAS/oneDNN versions and, on a GPU, the
    device and cuDNN. Near a stability edge one ulp of difference grows into a different run,
    so a run is reproduced exactly only where these agree (docs/guide/run.md, "What reproduces
    where")."""
    dnn = re.search(r"(?:oneDNN|MKL-DNN)\D*v?([\d.]+)", torch.__config__.show())
    out: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "onednn": dnn.group(1) if dnn else None,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version()
        out["gpu"] = torch.cuda.get_device_name()
    return out


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux; ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(repo: Path) -> dict[str, Any] | None:
    """SHA and dirtiness of the git checkout holding the code, or None outside one."""

    def run(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        return {"sha": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return None


class Curves:
    """Appends JSON lines to the run's curve files (only where ``enabled``: global rank 0)."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._files: dict[str, Any] = {}

    def path(self, kind: str) -> Path:
        return self.run_dir / f"{kind}.jsonl"

    def truncate(self, step: int) -> None:
        """Keep only lines with ``step <= step`` (and no torn line) in every curve file."""
        if not self.enabled:
            return
        writer.check()
        self.close()
        for kind in CURVES:
            path = self.path(kind)
            if not path.exists():
                continue
            kept = []
            for line in path.read_text().splitlines(keepends=True):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # torn by a crash mid-write
                if line.endswith("\n") and record.get("step", math.inf) <= step:
                    kept.append(line)
            write_atomic(path, "".join(kept))

    def append(self, kind: str, records: list[dict[str, Any]]) -> None:
        """Append ``records`` to ``<kind>.jsonl`` and flush them to the OS."""
        if not self.enabled or not records:
            return
        writer.check()  # a writer whose lease was taken stops here, before the line
        f = self._files.get(kind)
        if f is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            f = self._files[kind] = open(self.path(kind), "a")  # noqa: SIM115 (kept open)
        f.write("".join(json.dumps(finite(r), allow_nan=False) + "\n" for r in records))
        f.flush()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def read(self, kind: str) -> list[dict[str, Any]]:
        path = self.path(kind)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
