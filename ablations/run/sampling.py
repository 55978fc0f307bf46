"""Which examples each micro-batch holds: a pure function of (seed, optimizer step, rank).

The examples form one endless stream, the concatenation of per-epoch permutations of the dataset
(epoch ``e`` is ``randperm(N)`` from a generator seeded by ``(seed, e)``, or the data's own
``order(e)``, e.g. shard by shard so that consecutive examples come from one file). Window ``w``
(the ``w``-th optimizer step of a phase, 0-based, counting steps that fp16 skipped) takes the
next ``global_batch`` examples of the stream::

    stream[w * G : (w + 1) * G]

and splits them rank-major: rank ``r`` of ``W`` takes the ``r``-th slice of ``G / W`` examples
and cuts it into ``A = G / (W * m)`` micro-batches of ``m``. Micro-batch ``j`` of rank ``r`` is
therefore micro-batch ``r * A + j`` of a single process with ``W * A`` micro-batches: a run on 2
devices and a run on 1 device with twice the accumulation see the same micro-batches, so their
mean losses and mean gradients over the global batch are the same numbers up to summation order.

Resuming needs no sampler state: the sampler starts at window ``start()`` (the restored optimizer
step) every time it is iterated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Sampler


class StepBatchSampler(Sampler[list[int]]):
    """Micro-batches of example indices for one rank, window after window.

    Args:
        num_examples: dataset length ``N`` (>= 1).
        micro_batch: ``m``, examples per micro-batch.
        global_batch: ``G``, examples per optimizer step over all ranks.
        rank: this process's global rank ``r``.
        world_size: ``W``; ``G`` must be a multiple of ``W * m``.
        seed: seeds the per-epoch permutations.
        windows: one past the last window to yield.
        start: the first window to yield, read at every ``iter()`` (default 0).
        order: epoch -> a permutation of ``range(N)`` (a LongTensor); default ``randperm``
            seeded by ``(seed, epoch)``. It must not depend on the rank.
    """

    def __init__(
        self,
        num_examples: int,
        micro_batch: int,
        global_batch: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        windows: int,
        start: Callable[[], int] = lambda: 0,
        order: Callable[[int], torch.Tensor] | None = None,
    ) -> None:
        if num_examples < 1:
            raise ValueError("the training dataset is empty")
        if global_batch % (micro_batch * world_size):
            raise ValueError(
                f"global_batch={global_batch} is not a multiple of micro_batch x world_size = "
                f"{micro_batch * world_size}"
            )
        self.n, self.m, self.g = num_examples, micro_batch, global_batch
        self.rank, self.world = rank, world_size
        self.accumulation = global_batch // (micro_batch * world_size)
        self.seed, self.windows, self.start, self.order = seed, windows, start, order
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return max(0, self.windows - self.start()) * self.accumulation

    def __iter__(self) -> Iterator[list[int]]:
        for window in range(self.start(), self.windows):
            for j in range(self.accumulation):
                yield self.micro_batch(window, j)

    def micro_batch(self, window: int, j: int) -> list[int]:
        """Indices of micro-batch ``j`` of this rank in window ``window``."""
        first = window * self.g + (self.rank * self.accumulation + j) * self.m
        return self.stream(first, first + self.m)

    def stream(self, lo: int, hi: int) -> list[int]:
        """Positions ``lo:hi`` of the endless example stream."""
        out: list[int] = []
        while lo < hi:
            epoch, offset = divmod(lo, self.n)
            take = min(hi - lo, self.n - offset)
            out += self._permutation(epoch)[offset : offset + take].tolist()
            lo += take
        return out

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            if self.order is not None:
                perm = torch.as_tensor(self.order(epoch), dtype=torch.long)
                if perm.shape != (self.n,):
                    raise ValueError(
                        f"order({epoch}) has shape {tuple(perm.shape)}, not ({self.n},)"
                    )
            else:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                perm = torch.randperm(self.n, generator=gen)
            self._perm, self._epoch = perm, epoch
        return self._perm
