"""The data of one phase: a data module's examples, cut into the phase's batches.

A data module (``BertDataModule(data, phase, seed)`` unless the caller injects one or a factory,
:func:`phase_datamodule`) provides examples; :class:`PhaseData` wraps it for ``Trainer.fit`` and
cuts the training batches with :class:`~ablations.run.sampling.StepBatchSampler` from
``train_dataloader().dataset`` (a map-style dataset, collated by the loader's ``collate_fn``), so
that the data order is a function of (seed, optimizer step, rank): restored exactly on resume and
the same global batches on any number of devices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.utils.data import DataLoader, IterableDataset

from ablations.config import DataConfig, PhaseConfig, RunConfig
from ablations.data.datamodule import BertDataModule
from ablations.run.sampling import StepBatchSampler

#: What ``train`` accepts instead of a data module: ``f(data, phase, seed)`` for each phase.
DataModuleFactory = Callable[[DataConfig, PhaseConfig, int], L.LightningDataModule]


def windows(phase: PhaseConfig) -> int:
    """Optimizer-step calls allowed in a phase: its steps plus fp16 steps the GradScaler skips."""
    return phase.steps + max(100, phase.steps)


def phase_datamodule(
    given: L.LightningDataModule | DataModuleFactory | None, config: RunConfig, phase: PhaseConfig
) -> L.LightningDataModule:
    """The data module of ``phase``: ``given`` itself if it is one, else ``given`` (a factory;
    None: ``BertDataModule``) called with the phase's data config, the phase and the seed."""
    if isinstance(given, L.LightningDataModule):
        return given
    if given is None:
        given = BertDataModule
    return given(config.phase_data(phase), phase, config.seed)


class PhaseData(L.LightningDataModule):
    """A data module's examples, batched by :class:`StepBatchSampler` for one phase."""

    def __init__(self, inner: L.LightningDataModule, phase: PhaseConfig, seed: int) -> None:
        super().__init__()
        self.inner, self.phase, self.seed = inner, phase, seed

    @property
    def vocab_size(self) -> int:
        return self.inner.vocab_size

    def prepare_data(self) -> None:
        self.inner.prepare_data()

    def setup(self, stage: str) -> None:
        self.inner.trainer = self.trainer
        self.inner.setup(stage)

    def teardown(self, stage: str) -> None:
        self.inner.teardown(stage)

    def train_dataloader(self) -> DataLoader:
        base = self.inner.train_dataloader()
        dataset = base.dataset
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            raise TypeError("the training dataset must be map-style (__len__ and __getitem__)")
        trainer = self.trainer
        sampler = StepBatchSampler(
            len(dataset),
            self.phase.micro_batch,
            self.phase.global_batch,
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            seed=self.seed,
            windows=windows(self.phase),
            start=lambda: trainer.global_step,  # restored before the loader is iterated
            order=getattr(self.inner, "epoch_order", None),
        )
        workers = {}
        if base.num_workers > 0:
            workers = {
                "persistent_workers": base.persistent_workers,
                "prefetch_factor": base.prefetch_factor,
                "worker_init_fn": base.worker_init_fn,
                "multiprocessing_context": base.multiprocessing_context,
            }
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=base.collate_fn,
            num_workers=base.num_workers,
            pin_memory=base.pin_memory,
            # its own generator: creating an iterator must not draw from the global RNG
            generator=torch.Generator().manual_seed(self.seed),
            **workers,
        )

    def validation_loader(self) -> Any:
        """The inner module's validation loader, or None (not Lightning's ``val_dataloader``:
        the module validates at its own steps, outside Lightning's validation loop)."""
        if not is_overridden("val_dataloader", self.inner, L.LightningDataModule):
            return None
        return self.inner.val_dataloader()
