"""One optimizer step at BERT's parameter shapes, timed side by side against its memory floor.

An optimizer step is bound by memory traffic: it reads and writes every parameter, gradient and
moment once or more and does a few flops per element. The floor of a step is therefore

    floor = (bytes that must move per element) x (elements) / (measured copy bandwidth),

with the bandwidth of ``dst.copy_(src)`` (one read + one write per element) measured on the same
device in the same run, and per float32 element (4 B per read or write):

- AdamW: read w, g, m, v; write w, m, v: 28 B;
- LAMB (NVLAMB): the global gradient norm reads g before the moments can start, and ‖u‖ must be
  known before w is written: + read g, + write and read u (or re-read m, v): 44 B.

Candidates are timed round-robin in a shuffled order each round, so noise and cache state hit
all alike; each timed call follows an untimed one of the same candidate (the previous
candidate's traffic left other data in the caches), and a warm-up call allocates the state
first. The minimum over rounds is the estimator (interference only ever adds time; timeit's
reasoning), the median is reported beside it. ``benchmarks/optimizer_step.py`` uses the same
shapes, floors and timing with more candidates.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import random
import statistics
import sys
import types
from collections.abc import Callable
from typing import Any

import torch

import lamb_variants as lv
from ablations.bench.device import Clock

#: Bytes per float32 element that any implementation must move (see the module docstring).
FLOOR_BYTES = {"adamw": 28, "lamb": 44}


def bert_shapes(hidden: int, layers: int, inter: int, vocab: int, pos: int = 512) -> list[tuple]:
    """Parameter shapes of transformers' BertForPreTraining (tied decoder weight counted once)."""
    h = hidden
    s: list[tuple] = [(vocab, h), (pos, h), (2, h), (h,), (h,)]
    for _ in range(layers):
        s += [(h, h), (h,)] * 4 + [(h,), (h,), (inter, h), (inter,), (h, inter), (h,), (h,), (h,)]
    s += [(h, h), (h,), (h, h), (h,), (h,), (h,), (vocab,), (2, h), (2,)]
    return s


SHAPES = {
    "large": bert_shapes(1024, 24, 4096, 30522),  # 336,226,108 parameters in 398 tensors
    "base": bert_shapes(768, 12, 3072, 30522),  # 110,106,428 parameters in 206 tensors
    "mini": bert_shapes(256, 4, 1024, 8192),  # 5.53M parameters in 78 tensors
    "tiny": bert_shapes(128, 2, 512, 8192),  # 1.55M parameters in 46 tensors
}


@functools.cache
def load_timm_lamb() -> type[torch.optim.Optimizer]:
    """``timm.optim.lamb.Lamb`` without running timm's package ``__init__`` (which imports
    torchvision, not installed beside this torch): stub packages ``timm`` and ``timm.optim`` are
    in ``sys.modules`` for the import only, then ``sys.modules`` is restored (the class keeps
    working through its own module's globals)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("timm is not installed (make setup installs timm==1.0.31 --no-deps)")
    root = list(spec.submodule_search_locations)[0]
    saved = {k: v for k, v in sys.modules.items() if k == "timm" or k.startswith("timm.")}
    try:
        for name, path in (("timm", root), ("timm.optim", f"{root}/optim")):
            stub = types.ModuleType(name)
            stub.__path__ = [path]
            sys.modules[name] = stub
        return importlib.import_module("timm.optim.lamb").Lamb
    finally:
        for k in [k for k in sys.modules if k == "timm" or k.startswith("timm.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def make_params(
    shapes: list[tuple], device: torch.device | str = "cpu", seed: int = 0
) -> list[tuple[str, torch.nn.Parameter]]:
    """Named float32 parameters of ``shapes`` with gradients, BERT-like in scale: w ~ N(0, 0.02²),
    g ~ N(0, 1e-6), so the global gradient norm is above 1 and the clip path is exercised."""
    device = torch.device(device)
    gen = torch.Generator(device).manual_seed(seed)  # drawn where they live: no host copy
    named = []
    for i, shape in enumerate(shapes):
        p = torch.nn.Parameter(torch.randn(shape, generator=gen, device=device) * 0.02)
        p.grad = torch.randn(shape, generator=gen, device=device) * 1e-3
        named.append((f"p{i}.weight" if len(shape) > 1 else f"p{i}.bias", p))
    return named


def copy_bandwidth(device: torch.device | str = "cpu", numel: int | None = None) -> float:
    """Bytes per second of ``dst.copy_(src)`` (one read + one write of 4 B per element), the best
    of 5 copies; ``numel`` defaults to 2^26 floats on the CPU and 2^28 (1 GiB) on a GPU, far
    beyond any cache."""
    device = torch.device(device)
    numel = numel or (1 << 28 if device.type == "cuda" else 1 << 26)
    src = torch.rand(numel, device=device)
    dst = torch.empty_like(src)
    clock = Clock(device)
    dst.copy_(src)
    marks = []
    for _ in range(5):
        start = clock.mark()
        dst.copy_(src)
        marks.append((start, clock.mark()))
    clock.sync()
    return 2 * 4 * numel / (min(clock.ms(a, b) for a, b in marks) / 1e3)


def time_candidates(
    candidates: dict[str, Callable[[], Any]], rounds: int, clock: Clock, seed: int = 0
) -> dict[str, list[float]]:
    """Milliseconds per call of each candidate, ``rounds`` times each, round-robin.

    Each round visits the candidates in a new shuffled order (no candidate always follows the
    same neighbour); each timed call follows an untimed one of the same candidate. One warm-up
    call each first (state allocation, first-touch page faults, kernel caches).
    """
    for fn in candidates.values():
        fn()
    marks: dict[str, list[tuple[Any, Any]]] = {k: [] for k in candidates}
    order = list(candidates.items())
    shuffle = random.Random(seed)
    for _ in range(rounds):
        shuffle.shuffle(order)
        for label, fn in order:
            fn()
            start = clock.mark()
            fn()
            marks[label].append((start, clock.mark()))
        clock.sync()  # bounds the queue of marks; stamps this round's events
    return {k: [clock.ms(a, b) for a, b in v] for k, v in marks.items()}


#: The candidates of the GPU check: label -> (floor kind, factory of an optimizer).
CANDIDATES: dict[str, tuple[str, Callable[[list], torch.optim.Optimizer]]] = {
    "nvlamb": ("lamb", lambda named: lv.Lamb(named, lr=1e-6)),
    "AdamW(fused=True)": (
        "adamw",
        lambda named: torch.optim.AdamW([p for _, p in named], lr=1e-6, fused=True),
    ),
    "AdamW(foreach=True)": (
        "adamw",
        lambda named: torch.optim.AdamW([p for _, p in named], lr=1e-6, foreach=True),
    ),
    "timm.optim.Lamb": ("lamb", lambda named: load_timm_lamb()([p for _, p in named], lr=1e-6)),
}


def compare(shape_set: str, device: torch.device, rounds: int) -> dict[str, Any]:
    """The step of every :data:`CANDIDATES` optimizer at ``SHAPES[shape_set]`` on ``device``.

    Returns:
        ``params``, ``tensors``, ``copy_gb_s``, ``floor_ms`` per kind, and per candidate
        ``min_ms``, ``median_ms``, ``floor`` (its kind) and ``x_floor`` (min / its floor).
    """
    shapes = SHAPES[shape_set]
    numel = sum(math.prod(s) for s in shapes)
    named = make_params(shapes, device)
    optimizers = {label: make(named) for label, (_, make) in CANDIDATES.items()}
    times = time_candidates({k: o.step for k, o in optimizers.items()}, rounds, Clock(device))
    del optimizers  # their state before the copy buffers are allocated
    bandwidth = copy_bandwidth(device)
    floor = {kind: numel * b / bandwidth * 1e3 for kind, b in FLOOR_BYTES.items()}
    rows = {}
    for label, ms in times.items():
        kind = CANDIDATES[label][0]
        rows[label] = {
            "min_ms": min(ms),
            "median_ms": statistics.median(ms),
            "floor": kind,
            "x_floor": min(ms) / floor[kind],
        }
    return {
        "params": numel,
        "tensors": len(shapes),
        "rounds": rounds,
        "copy_gb_s": bandwidth / 1e9,
        "floor_ms": floor,
        "candidates": rows,
    }
