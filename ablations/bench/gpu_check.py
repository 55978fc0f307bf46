"""``python -m ablations gpu-check`` (``make gpu-check``): validate and time a GPU in one command.

On the first CUDA device, within a time budget (``--budget`` seconds, else ``$GPU_CHECK_BUDGET``,
else :data:`BUDGET_S`), the checks run in this order, the cheapest and most telling first:

1. ``environment``: versions, driver, device, memory, bf16 support (:mod:`.environment`);
2. ``cuda_tests``: ``tests/test_cuda.py`` by pytest (:mod:`.device_tests`);
3. ``optimizer_step``: ``nvlamb``, fused and foreach AdamW and timm's Lamb at BERT-base and
   BERT-large shapes, against the HBM floor (:mod:`.optimizer_step`);
4. ``throughput``: BERT-large phase 1 (sequence 128) and phase 2 (512) in bf16-mixed at the
   largest micro-batch that fits, through the Lightning module: tokens/s, MFU, peak memory,
   the optimizer's share (:mod:`.throughput`);
5. ``precision``: a 200-step BERT-base run in bf16 and in fp32 (:mod:`.short_run`);
6. ``resume``: that run killed and resumed against the uninterrupted one (:mod:`.short_run`).

A check starts only while the budget lasts (once started it finishes); the ones left are listed
under ``skipped``. A check that raises is recorded with its one-line error and the next one
runs: a short loan of a machine is not lost to one failure. After each check the record is
rewritten (atomically) to ``benchmarks/gpu/<device>-<date>.json``; at the end its tables are
printed (:mod:`.table`). Exit status: 0 when every check that ran passed, 1 when one failed or
raised (the tables say which), 2 for bad input (one ``error:`` line).

Without a CUDA device, ``--device cuda`` (the default) prints one line and exits 0.
``--device cpu`` runs the same checks on the CPU with tiny shapes (tiny BERT, a few steps; under
two minutes) into ``results/gpu-check/`` (not committed): the test suite runs it, so the
command cannot rot while no GPU is at hand.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ablations.bench import device_tests, optimizer_step, short_run, table, throughput
from ablations.bench.device import free_memory
from ablations.bench.environment import device_name, environment
from ablations.core.errors import ConfigError, fail, one_line
from ablations.core.fileio import FrozenError, check_writable, write_json

#: The repository's root (this file is two folders below it).
REPO = Path(__file__).resolve().parents[2]
#: Default budget, seconds (the issue's 8 minutes).
BUDGET_S = 480.0
DEVICES = ("cuda", "cpu")
#: The environment variable of the budget (``make gpu-check GPU_CHECK_BUDGET=300``).
_ENV = "GPU_CHECK_BUDGET"


@dataclass(frozen=True)
class Phase:
    """A throughput phase: its shape and the micro-batches the search may try."""

    seq_len: int
    predictions: int
    start: int
    cap: int


@dataclass(frozen=True)
class Scale:
    """The sizes of one mode: a GPU's, or the CPU mode's tiny ones."""

    shapes: tuple[str, ...]
    rounds: int
    model: str
    vocab: int
    phases: dict[str, Phase]
    warmup: int
    timed: int
    short: short_run.ShortRun
    extra: dict[str, Any] = field(default_factory=dict)


_CACHE = str(REPO / ".cache" / "ablations")  # the harness's data cache, wherever we are run

#: A GPU: BERT-large at NVIDIA's phases (vocabulary 30522 padded to 30528 as NVIDIA pads it;
#: 20 and 80 predictions), BERT-base for the 200-step run (killed after 130: resumed from 100).
GPU = Scale(
    shapes=("base", "large"),
    rounds=20,
    model="large",
    vocab=30528,
    phases={"phase1": Phase(128, 20, 32, 2048), "phase2": Phase(512, 80, 8, 512)},
    warmup=5,
    timed=20,
    short=short_run.ShortRun(
        size="base",
        steps=200,
        batch=32,
        seq_len=128,
        predictions=20,
        lr=2e-3,
        vocab=4096,
        checkpoint_every=100,
        val_every=100,
        kill_at=130,
        cache_dir=_CACHE,
    ),
)
#: The CPU mode: the same code on tiny shapes (a few steps each).
CPU = Scale(
    shapes=("tiny", "mini"),
    rounds=3,
    model="tiny",
    vocab=4096,
    phases={"phase1": Phase(128, 20, 2, 8), "phase2": Phase(512, 80, 1, 2)},
    warmup=2,
    timed=3,
    short=short_run.ShortRun(
        size="tiny",
        steps=40,
        batch=16,
        seq_len=64,
        predictions=10,
        lr=6e-3,
        vocab=4096,
        checkpoint_every=20,
        val_every=20,
        kill_at=26,
        cache_dir=_CACHE,
    ),
)


@dataclass
class Context:
    device: torch.device
    scale: Scale
    workdir: Path
    deadline: float


def _environment(ctx: Context) -> dict[str, Any]:
    return environment(ctx.device)


def _cuda_tests(ctx: Context) -> dict[str, Any]:
    # a hung child must not eat the machine: at most the budget left, at least 2 minutes
    return device_tests.run_tests(REPO, max(120.0, ctx.deadline - time.monotonic()))


def _optimizer_step(ctx: Context) -> dict[str, Any]:
    out = {}
    for shapes in ctx.scale.shapes:
        out[shapes] = optimizer_step.compare(shapes, ctx.device, ctx.scale.rounds)
        free_memory(ctx.device)
    return out


def _throughput(ctx: Context) -> dict[str, Any]:
    s, out = ctx.scale, {}
    for name, phase in s.phases.items():
        out[name] = throughput.measure_phase(
            size=s.model,
            vocab=s.vocab,
            seq_len=phase.seq_len,
            predictions=phase.predictions,
            device=ctx.device,
            precision="bf16-mixed",
            start=phase.start,
            cap=phase.cap,
            warmup=s.warmup,
            timed=s.timed,
        )
        free_memory(ctx.device)
    return out


def _precision(ctx: Context) -> dict[str, Any]:
    return short_run.precision_agreement(ctx.scale.short, ctx.device, ctx.workdir)


def _resume(ctx: Context) -> dict[str, Any]:
    return short_run.resume_equality(ctx.scale.short, ctx.device, ctx.workdir)


#: The checks, in the order they run.
CHECKS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "environment": _environment,
    "cuda_tests": _cuda_tests,
    "optimizer_step": _optimizer_step,
    "throughput": _throughput,
    "precision": _precision,
    "resume": _resume,
}

#: Lightning's INFO lines (devices available, tips) and warnings that say nothing here: the
#: timed runs have no workers by design (their data is an in-memory pool), fp32 is the
#: reference on purpose (no TF32), and the runs are single-process even where SLURM is.
_QUIET = (
    r".*does not have many workers",
    r".*Tensor Cores.*set `torch.set_float32_matmul_precision",
    r"The `srun` command is available on your system but is not used",
)


def check(device: str, budget_s: float, out: Path, command: str) -> dict[str, Any]:
    """Run :data:`CHECKS` on ``device`` within ``budget_s``, rewriting ``out`` after each."""
    started = time.monotonic()
    dev = torch.device(device)
    scale = GPU if dev.type == "cuda" else CPU
    record: dict[str, Any] = {
        "command": command,
        "mode": dev.type,
        "device": device_name(dev),
        "date": time.strftime("%Y-%m-%d"),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "budget_s": budget_s,
        "checks": {},
        "skipped": [],
    }
    deadline = started + budget_s
    for name, fn in CHECKS.items():
        # the environment is the record's header: it is always taken
        if name != "environment" and time.monotonic() >= deadline:
            record["skipped"].append(name)
            continue
        print(f"gpu-check: {name} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        # each check's run directories (GB of checkpoints on a GPU) go when it ends
        with tempfile.TemporaryDirectory(prefix=f"gpu-check-{name}-") as tmp:
            try:
                result = fn(Context(dev, scale, Path(tmp), deadline))
            except Exception as e:  # recorded; the next check still runs
                result = {"error": one_line(e), "ok": False}
            free_memory(dev)
        result["seconds"] = time.monotonic() - t0
        record["checks"][name] = result
        print(f"gpu-check: {name} done in {result['seconds']:.1f} s", file=sys.stderr)
        write_json(out, record)
    record["targets"] = table.targets(record)
    record["wall_s"] = time.monotonic() - started
    write_json(out, record)
    return record


def default_out(device: str, name: str, date: str) -> Path:
    """``benchmarks/gpu/<device-name>-<date>.json`` for a GPU (committed: the README's table is
    made from these), ``results/gpu-check/cpu-<date>.json`` for the CPU mode (not committed)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    folder = REPO / ("benchmarks/gpu" if device == "cuda" else "results/gpu-check")
    return folder / f"{slug}-{date}.json"


def budget(text: str | None) -> float:
    """Seconds from ``--budget`` or ``$GPU_CHECK_BUDGET`` (None: :data:`BUDGET_S`)."""
    if text is None or not text.strip():
        return BUDGET_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 <= value < math.inf):
        raise ConfigError(f"budget: expected seconds (a number >= 0), got {text!r}")
    return value


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gpu-check", help="validate and time this machine's GPU (make gpu-check)")
    p.add_argument("--device", default="cuda", help="cuda (the first device; default) or cpu")
    p.add_argument(
        "--budget",
        help=f"seconds; no check starts after it (default $GPU_CHECK_BUDGET, else {BUDGET_S:.0f})",
    )
    p.add_argument("--out", type=Path, help="the JSON record (default: see the module doc)")


def run(args: argparse.Namespace) -> int:
    try:
        if args.device not in DEVICES:
            raise ConfigError(f"--device: expected one of {list(DEVICES)}, got {args.device!r}")
        seconds = budget(args.budget if args.budget is not None else os.environ.get(_ENV))
        if args.out is not None:
            check_writable(args.out)
    except (ConfigError, FrozenError) as e:
        return fail(e)
    if args.device == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU build"
        print(
            f"gpu-check: no CUDA device visible to torch {torch.__version__} ({build}); nothing "
            "checked (--device cpu runs the checks on the CPU with tiny shapes)"
        )
        return 0
    if args.device == "cpu":
        # tiny shapes run as fast on one thread, and one thread is not slowed down by other
        # work on the machine's cores (as the tests, conftest.py)
        torch.set_num_threads(1)
    if args.device == "cuda":
        # cuBLAS is deterministic only with a fixed workspace configuration, read when its first
        # handle is made (PyTorch, "Reproducibility"): the resume check needs it, so it is set
        # before any CUDA work; 8 buffers of 4 MiB, the value PyTorch's documentation gives
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    out = args.out or default_out(
        args.device, device_name(torch.device(args.device)), time.strftime("%Y-%m-%d")
    )
    command = f"python -m ablations gpu-check --device {args.device} --budget {seconds:g}"
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for message in _QUIET:
            warnings.filterwarnings("ignore", message=message)
        record = check(args.device, seconds, out, command)
    print(table.render(record))
    print(f"\nwritten: {_shown(out)}")
    ran = record["checks"].values()
    return 0 if all(r.get("ok") is not False for r in ran) else 1


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ablations")
    add_command(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))
