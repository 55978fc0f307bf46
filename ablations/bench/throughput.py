"""Training throughput of the harness's own Lightning module: tokens/s, MFU, memory, optimizer.

One phase is measured in three steps:

1. **The largest micro-batch that fits**, found by trying: one training step (forward,
   backward, ``nvlamb`` step) of :class:`~ablations.run.model.BertPretraining` under the run's
   autocast, at micro-batches doubling from ``start`` until one runs out of device memory (or
   ``cap`` is reached), then bisected between the last fit and the first failure down to an
   eighth of the fit. Out-of-memory is ``torch.OutOfMemoryError``; the CPU never raises it, so
   there the cap ends the search.
2. **The timed run**: :func:`ablations.run.train.train` (Lightning ``Trainer.fit`` of
   ``PretrainingModule``: NVIDIA's sparse MLM head, ``nvlamb``, the LR schedule, the per-step
   telemetry) at that micro-batch, no accumulation, on :mod:`ablations.bench.data`'s full-length
   random examples. :class:`StepTimer` marks the device clock after ``warmup`` optimizer steps
   and after ``timed`` more (CUDA events; :mod:`ablations.bench.device`) and marks each
   ``optimizer.step()`` through torch's optimizer step hooks; then it stops the run
   (:class:`Measured`), so no checkpoint of the model is written. If the harness's run does not
   fit at that micro-batch, the next smaller one that fitted is timed instead.
3. **Model FLOPs utilization** (PaLM, Chowdhery et al. 2022, arXiv 2204.02311, Appendix B):
   the FLOPs the model needs per step (:func:`train_flops`; not counting recomputation) per
   second, over the device's dense bf16 peak (:data:`PEAKS`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

import lamb_variants
from ablations.bench.data import RandomData, RandomExamples
from ablations.bench.device import Clock, free_memory, peak_memory_gib, reset_peak_memory
from ablations.config import MODEL_SIZES, ModelConfig, RunConfig
from ablations.run.model import BertPretraining
from ablations.run.train import train


@dataclass(frozen=True)
class Peak:
    """A device's dense bf16 tensor-core peak, matched by a substring of its CUDA name."""

    match: str
    tflops: float
    source: str


def _datasheet(sparse: float, sheet: str) -> str:
    return (
        f"{sheet}: BF16 Tensor Core {sparse:,.0f} TFLOPS with 2:4 sparsity; dense is half, "
        f"{sparse / 2:,.1f}"
    )


#: Dense bf16 peaks, first match wins (``torch.cuda.get_device_name()`` contains ``match``, case
#: ignored): so "GH200" before "H200", the NVL and PCIe H100s before "H100" (the SXM part is
#: named "NVIDIA H100 80GB HBM3"). NVIDIA's datasheets give the sparse number.
PEAKS: tuple[Peak, ...] = (
    Peak("GH200", 1979 / 2, _datasheet(1979, "NVIDIA GH200 Grace Hopper Superchip datasheet")),
    Peak("H200 NVL", 1671 / 2, _datasheet(1671, "NVIDIA H200 datasheet (H200 NVL)")),
    Peak("H200", 1979 / 2, _datasheet(1979, "NVIDIA H200 datasheet (H200 SXM)")),
    Peak("H100 NVL", 1671 / 2, _datasheet(1671, "NVIDIA H100 datasheet (H100 NVL)")),
    Peak("H100 PCIe", 1513 / 2, _datasheet(1513, "NVIDIA H100 datasheet (H100 PCIe)")),
    Peak("H100", 1979 / 2, _datasheet(1979, "NVIDIA H100 datasheet (H100 SXM)")),
    Peak("A100", 624 / 2, _datasheet(624, "NVIDIA A100 datasheet")),
)


def peak_for(device_name: str) -> Peak | None:
    """The dense bf16 peak of the device called ``device_name``; None for one not in the table
    (the CPU included: MFU is then not given)."""
    name = device_name.lower()
    return next((p for p in PEAKS if p.match.lower() in name), None)


def train_flops(size: str, vocab: int, batch: int, seq_len: int, predictions: int) -> float:
    """Model FLOPs of one training step (forward + backward) of ``BertPretraining``.

    Per sequence, forward, 2 FLOPs per multiply-add (L layers, hidden h, intermediate I, S
    tokens, P predictions, V the vocabulary):

    - encoder matmuls: 2·S·L·(4h² + 2hI) (Q, K, V, output; the two feed-forward matrices);
    - attention: 2·L·(2·S²·h) (QKᵀ and the product with V);
    - pooler and NSP head: 2·(h² + 2h), once per sequence;
    - NVIDIA's sparse MLM head on the P predictions only: 2·P·(h² + h·V).

    The backward pass costs twice the forward (a gradient for the input and one for the
    weights), so a step is 3 x forward: with N the encoder's matmul parameters this is PaLM's
    6·N + 12·L·h·S per token (Chowdhery et al. 2022, Appendix B) plus the heads. Embedding
    lookups, normalizations and softmax are not counted (MFU's convention).
    """
    m = MODEL_SIZES[size]
    h, layers, inter = m["hidden"], m["layers"], m["intermediate"]
    forward = 2 * seq_len * layers * (4 * h * h + 2 * h * inter)
    forward += layers * 2 * (2 * seq_len * seq_len * h)
    forward += 2 * (h * h + 2 * h)
    forward += 2 * predictions * (h * h + h * vocab)
    return 3.0 * batch * forward


class Measured(Exception):
    """Raised by :class:`StepTimer` once its steps are timed: ends the run, nothing saved."""


class StepTimer(Callback):
    """Times optimizer steps ``warmup + 1 .. warmup + timed`` of a run and their
    ``optimizer.step()`` calls on the device clock, then raises :class:`Measured`.

    ``result``: ``ms_per_step``, ``optimizer_ms`` (per step), ``peak_memory_gib`` (allocated
    during the timed steps; None on the CPU).
    """

    def __init__(self, device: torch.device, warmup: int, timed: int) -> None:
        self.device, self.warmup, self.timed = device, warmup, timed
        self.clock = Clock(device)
        self.result: dict[str, Any] | None = None
        self._start: Any = None
        self._steps: list[list[Any]] = []
        self._hooks: list[Any] = []

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        # torch's own hooks around Optimizer.step: they see the step however Lightning's
        # precision plugin calls it
        opt = trainer.optimizers[0]
        self._hooks = [
            opt.register_step_pre_hook(self._before),
            opt.register_step_post_hook(self._after),
        ]
        if self.warmup == 0:
            self._begin()

    def _before(self, *_: Any) -> None:
        if self._start is not None:
            self._steps.append([self.clock.mark()])

    def _after(self, *_: Any) -> None:
        if self._start is not None:
            self._steps[-1].append(self.clock.mark())

    def _begin(self) -> None:
        self.clock.sync()  # the warm-up's work is done before the window opens
        reset_peak_memory(self.device)
        self._start = self.clock.mark()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *_: Any) -> None:
        step = pl_module.progress.phase_step
        if step == self.warmup and self._start is None:
            self._begin()
        elif step == self.warmup + self.timed:
            end = self.clock.mark()
            self.clock.sync()
            for hook in self._hooks:
                hook.remove()
            total = self.clock.ms(self._start, end)
            optimizer = sum(self.clock.ms(a, b) for a, b in self._steps)
            self.result = {
                "ms_per_step": total / self.timed,
                "optimizer_ms": optimizer / self.timed,
                "peak_memory_gib": peak_memory_gib(self.device),
            }
            raise Measured(f"{self.timed} steps timed")


def _autocast(device: torch.device, precision: str) -> Any:
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _fits(
    model: BertPretraining,
    opt: torch.optim.Optimizer,
    batch: int,
    seq_len: int,
    predictions: int,
    device: torch.device,
    precision: str,
) -> bool:
    """Whether one training step at micro-batch ``batch`` runs without running out of memory."""
    examples = RandomExamples(batch, model.vocab_size, seq_len, predictions)
    try:
        data = {k: v.to(device) for k, v in examples.__getitems__(range(batch)).items()}
        with _autocast(device, precision):
            loss = model(data)["loss"]
        loss.backward()
        opt.step()
        Clock(device).sync()
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        opt.zero_grad(set_to_none=True)


def largest_micro_batch(
    size: str,
    vocab: int,
    seq_len: int,
    predictions: int,
    device: torch.device,
    precision: str,
    start: int,
    cap: int,
) -> dict[int, bool]:
    """Every micro-batch tried and whether it fit (see the module docstring, step 1)."""
    model = BertPretraining(ModelConfig(size=size), vocab).to(device)
    groups = lamb_variants.nvidia_param_groups(model.named_parameters())
    opt = lamb_variants.create("nvlamb", groups, lr=1e-6)
    tried: dict[int, bool] = {}

    def attempt(batch: int) -> bool:
        tried[batch] = _fits(model, opt, batch, seq_len, predictions, device, precision)
        if not tried[batch]:
            free_memory(device)
        return tried[batch]

    batch = start
    while batch <= cap and attempt(batch):
        batch *= 2
    fit = max((b for b, ok in tried.items() if ok), default=None)
    fail = min((b for b, ok in tried.items() if not ok), default=None)
    while fit is not None and fail is not None and fail - fit > max(1, fit // 8):
        middle = (fit + fail) // 2
        if attempt(middle):
            fit = middle
        else:
            fail = middle
    return dict(sorted(tried.items()))  # the model goes with this frame: free_memory() after


def measure_phase(
    *,
    size: str,
    vocab: int,
    seq_len: int,
    predictions: int,
    device: torch.device,
    precision: str,
    start: int,
    cap: int,
    warmup: int,
    timed: int,
) -> dict[str, Any]:
    """One phase's throughput through the harness (the module docstring's three steps).

    Returns:
        the micro-batches tried, the one timed, ``tokens_per_s``, ``ms_per_step``,
        ``optimizer_ms`` and ``optimizer_share``, ``model_tflops_per_step``,
        ``achieved_tflops``, ``mfu`` (None without a known peak), ``peak_memory_gib``.
    """
    tried = largest_micro_batch(size, vocab, seq_len, predictions, device, precision, start, cap)
    free_memory(device)  # the search's model and optimizer, before the harness builds its own
    fitting = sorted((b for b, ok in tried.items() if ok), reverse=True)
    out: dict[str, Any] = {
        "model": size,
        "seq_len": seq_len,
        "max_predictions": predictions,
        "precision": precision,
        "tried": {str(b): ok for b, ok in tried.items()},
    }
    for batch in fitting:
        timer = StepTimer(device, warmup, timed)
        try:
            _timed_run(size, vocab, seq_len, predictions, device, precision, batch, timer)
        except torch.OutOfMemoryError:
            free_memory(device)
            out.setdefault("did_not_fit_in_the_run", []).append(batch)
            continue
        flops = train_flops(size, vocab, batch, seq_len, predictions)
        step_s = timer.result["ms_per_step"] / 1e3
        name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
        peak = peak_for(name)
        achieved = flops / step_s / 1e12
        return {
            **out,
            "micro_batch": batch,
            "timed_steps": timed,
            "tokens_per_s": batch * seq_len / step_s,
            **timer.result,
            "optimizer_share": timer.result["optimizer_ms"] / timer.result["ms_per_step"],
            "model_tflops_per_step": flops / 1e12,
            "achieved_tflops": achieved,
            "peak_tflops": peak.tflops if peak else None,
            "peak_source": peak.source if peak else f"no bf16 peak known for {name!r}",
            "mfu": achieved / peak.tflops if peak else None,
        }
    return {**out, "micro_batch": None, "note": "no micro-batch fitted"}


def _timed_run(
    size: str,
    vocab: int,
    seq_len: int,
    predictions: int,
    device: torch.device,
    precision: str,
    batch: int,
    timer: StepTimer,
) -> None:
    steps = timer.warmup + timer.timed + 1  # the timer ends the run before its last step
    config = RunConfig.from_dict(
        {
            "model": {"size": size},
            "data": {"vocab_size": vocab},
            "phases": [
                {
                    "steps": steps,
                    "global_batch": batch,
                    "micro_batch": batch,
                    "seq_len": seq_len,
                    "max_predictions": predictions,
                }
            ],
            "precision": precision,
            "accelerator": "gpu" if device.type == "cuda" else "cpu",
            "log": {"val_batches": 0, "progress": "none"},
            "checkpoint_every": steps + 1,  # no resume point inside the timed steps
        }
    )
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as run_dir:
        try:
            train(config, run_dir, RandomData, callbacks=[timer])
        except Measured:
            return
    raise RuntimeError(f"the run ended before {timer.timed} steps were timed")
