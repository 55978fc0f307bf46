"""Time and memory on a device: CUDA events on a GPU, the host's clock on the CPU.

A CUDA call returns once its kernel is queued, so host time around it measures the launch, not
the work. A ``torch.cuda.Event(enable_timing=True)`` recorded in the stream is stamped when the
GPU reaches it, and ``start.elapsed_time(end)`` is the GPU time between two of them in ms, valid
once both have completed (PyTorch documentation, "CUDA semantics", asynchronous execution and
``torch.cuda.Event``). On the CPU every op has finished when it returns: ``time.perf_counter``
is the clock. The rest of the code sees one :class:`Clock` for both.
"""

from __future__ import annotations

import gc
import time

import torch

#: A point in time: a recorded CUDA event, or ``perf_counter`` seconds.
Mark = torch.cuda.Event | float


class Clock:
    """Marks and elapsed milliseconds on ``device`` (CUDA events there; the host clock else)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self) -> Mark:
        """Now, in the device's stream order (a CUDA event is stamped when the GPU reaches it)."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def sync(self) -> None:
        """Wait until the device has done everything queued (every mark is then stamped)."""
        if self.cuda:
            torch.cuda.synchronize()

    def ms(self, start: Mark, end: Mark) -> float:
        """Milliseconds from ``start`` to ``end``; call :meth:`sync` after ``end`` first."""
        if self.cuda:
            return start.elapsed_time(end)
        return (end - start) * 1e3


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak of allocated memory (CUDA's caching allocator; nothing on the CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: torch.device) -> float | None:
    """The peak of memory held by tensors since :func:`reset_peak_memory`, GiB; None on the CPU
    (no allocator statistics there)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated() / 2**30


def free_memory(device: torch.device) -> None:
    """Free what the last run or try held, and return cached blocks to the device.

    A Lightning trainer and its module refer to each other: their tensors are freed by the
    garbage collector's cycle pass, not when the last name goes, so it is run here first.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
