"""``BertDataModule``: the batches of one pretraining phase, from text or NVIDIA shards.

Sources (``DataConfig``):

- ``format="text"``: the embedded corpus or a user text source -> WordPiece vocabulary (trained,
  or ``vocab_file``) -> examples of the phase's ``seq_len`` / ``max_predictions``, train and
  validation split by document. Everything is cached under ``cache_dir``; ``prepare_data`` builds
  it (Lightning runs it once per node), ``setup`` reads it (and builds what is missing, so the
  module also works without a Trainer). Each split is one NVIDIA shard on disk.
- ``format="hdf5"``: NVIDIA shards, one file or the ``*.hdf5`` of a folder. Validation: the
  shards of a ``validation`` subfolder if there is one; otherwise the last ``val_fraction`` of the
  examples (in sorted shard order), which are then left out of training; none if
  ``val_fraction=0``.

Both go through the same reader (``hdf5.to_batch``: NVIDIA's reader semantics) and yield the
batch contract of ``ablations/data/batch.py``: dicts of tensors, ``phase.micro_batch`` examples
each.

Order and distribution: the samplers are ``DistributedSampler`` subclasses that shard by rank
themselves (``num_replicas`` and ``rank`` from the Trainer, 1 and 0 without one), so Lightning
leaves them in place whatever ``use_distributed_sampler`` says. Training order, per epoch: the
shards in a random order, the examples of each shard in a random order, both from a generator
seeded with ``seed + epoch`` (``set_epoch`` is called by Lightning, so a resumed run that restores
the epoch sees the same order); rank ``r`` of ``w`` takes every ``w``-th example; incomplete
micro-batches are dropped. Reading shard by shard keeps one shard in memory per worker (NVIDIA
also reads one shard at a time). ``epoch_order(epoch)`` returns that order over all ranks, for a
caller that batches the dataset with its own sampler (the dataset returns whole batches through
``__getitems__``; use the loader's ``collate_fn`` with it). Validation: the fixed order, padded
to a multiple of the ranks as ``DistributedSampler`` does.

``vocab_size``: the tokenizer's for text sources and for shards with a ``vocab_file``; for shards
without one, the largest token id in the training shards plus one, rounded up to a multiple of 8
(as NVIDIA pads BERT's 30522 to 30528). ``unigram_entropy``: the entropy (nats) of the masked
tokens of the training examples, the loss of the best model that ignores context. For shards both
need one pass over every training shard, cached under ``cache_dir`` (keyed by file, size and
modification time).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ablations.config import DataConfig, PhaseConfig
from ablations.data import _cache, hdf5
from ablations.data.corpus import load_corpus
from ablations.data.errors import DataError
from ablations.data.examples import build_examples
from ablations.data.tokenizer import WordPiece, load_tokenizer

#: A run of examples: (shard file, first row, end row).
Slice = tuple[Path, int, int]


class ShardDataset(Dataset):
    """Examples from slices of NVIDIA shards, read a whole shard at a time (two kept loaded).

    ``__getitems__`` (what the DataLoader calls with a list of indices) returns a whole batch as
    a dict of tensors; ``__getitem__`` returns one example.
    """

    def __init__(self, slices: Sequence[Slice]) -> None:
        self.slices = list(slices)
        self.sizes = [stop - start for _, start, stop in self.slices]
        self.offsets = np.cumsum([0, *self.sizes])
        self._loaded: OrderedDict[Path, dict[str, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_loaded": OrderedDict()}

    def _shard(self, path: Path) -> dict[str, np.ndarray]:
        if path not in self._loaded:
            self._loaded[path] = hdf5.read_shard(path)
            while len(self._loaded) > 2:
                self._loaded.popitem(last=False)
        return self._loaded[path]

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        index = np.asarray(indices, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} examples")
        which = np.searchsorted(self.offsets, index, side="right") - 1
        parts: list[dict[str, np.ndarray]] = []
        where: list[np.ndarray] = []
        for s in np.unique(which):
            selected = np.nonzero(which == s)[0]
            path, start, _ = self.slices[s]
            rows = index[selected] - self.offsets[s] + start
            shard = self._shard(path)
            parts.append({key: shard[key][rows] for key in hdf5.SHARD_KEYS})
            where.append(selected)
        inverse = np.argsort(np.concatenate(where), kind="stable")
        raw = {key: np.concatenate([p[key] for p in parts])[inverse] for key in hdf5.SHARD_KEYS}
        return {key: torch.from_numpy(value) for key, value in hdf5.to_batch(raw).items()}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([i]).items()}


def _batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The collate function: ``ShardDataset.__getitems__`` already returns a batch."""
    return batch


def shard_order(sizes: Sequence[int], seed: int, epoch: int) -> torch.Tensor:
    """One epoch's order of the examples of consecutive slices of ``sizes`` examples: the slices
    in a random order, the examples of each in a random order (seeded by ``seed + epoch``)."""
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    offsets = np.cumsum([0, *sizes])
    parts = [
        int(offsets[s]) + torch.randperm(sizes[s], generator=g)
        for s in torch.randperm(len(sizes), generator=g).tolist()
    ]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


class ShardSampler(DistributedSampler):
    """Shard-by-shard order (shuffled or fixed), split over ranks; see the module docstring."""

    def __init__(
        self,
        dataset: ShardDataset,
        *,
        num_replicas: int,
        rank: int,
        shuffle: bool,
        seed: int,
        drop_last: bool,
    ) -> None:
        super().__init__(
            dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self.sizes = list(dataset.sizes)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = shard_order(self.sizes, self.seed, self.epoch).tolist()
        else:
            order = list(range(sum(self.sizes)))
        if self.drop_last:
            order = order[: self.total_size]
        else:
            order += (order * math.ceil(self.total_size / max(len(order), 1)))[
                : self.total_size - len(order)
            ]
        return iter(order[self.rank : self.total_size : self.num_replicas])


class BertDataModule(L.LightningDataModule):
    """The batches of one pretraining phase (see the module docstring).

    Args:
        data: where the examples come from.
        phase: ``seq_len``, ``max_predictions`` and ``micro_batch`` of the phase.
        seed: the run's seed, for the training order (``data.seed`` makes the examples).
    """

    def __init__(self, data: DataConfig, phase: PhaseConfig, seed: int = 0) -> None:
        super().__init__()
        self.data = data
        self.phase = phase
        self.seed = seed
        self.cache_dir = Path(data.cache_dir)
        self.train_set: ShardDataset | None = None
        self.val_set: ShardDataset | None = None
        self.tokenizer: WordPiece | None = None
        self._vocab_size: int | None = None
        self._entropy: float | None = None

    # --- building -----------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Build the caches (text) or validate the shards (hdf5)."""
        if self.data.format == "text":
            self._text_entries()
        else:
            self._hdf5_slices()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.data.format == "text":
            entries = self._text_entries()
            train = [(entries["train"].path, 0, entries["train"].meta["examples"])]
            val = []
            if "validation" in entries:
                val = [(entries["validation"].path, 0, entries["validation"].meta["examples"])]
            for path, _, _ in train + val:
                hdf5.check_shard(path, self.phase.seq_len, self.phase.max_predictions)
            assert self.tokenizer is not None
            self._vocab_size = self.tokenizer.vocab_size
            self._entropy = float(entries["train"].meta["unigram_entropy"])
        else:
            train, val = self._hdf5_slices()
            if self.data.vocab_file is not None:
                self.tokenizer = WordPiece(self.data.vocab_file, self.data.lower_case)
                self._vocab_size = self.tokenizer.vocab_size
        self.train_set = ShardDataset(train)
        self.val_set = ShardDataset(val) if val else None

    def _text_entries(self) -> dict[str, _cache.Entry]:
        data, phase = self.data, self.phase
        corpus = load_corpus(data.source, data.cache_dir)
        self.tokenizer = load_tokenizer(
            data.vocab_file, corpus, data.vocab_size, data.lower_case, data.cache_dir
        )
        splits = ["train", "validation"] if data.val_fraction > 0 else ["train"]
        return {
            split: build_examples(
                corpus,
                self.tokenizer,
                split,
                seq_len=phase.seq_len,
                max_predictions=phase.max_predictions,
                masked_lm_prob=data.masked_lm_prob,
                short_seq_prob=data.short_seq_prob,
                dupe_factor=data.dupe_factor,
                val_fraction=data.val_fraction,
                seed=data.seed,
                cache_dir=data.cache_dir,
            )
            for split in splits
        }

    def _hdf5_slices(self) -> tuple[list[Slice], list[Slice]]:
        source = Path(self.data.source)
        files = hdf5.shard_files(source)
        val_dir = source / "validation"
        val_files = hdf5.shard_files(val_dir) if source.is_dir() and val_dir.is_dir() else []
        seq_len, max_predictions = self.phase.seq_len, self.phase.max_predictions
        train = [(f, 0, hdf5.check_shard(f, seq_len, max_predictions)) for f in files]
        if val_files:
            val = [(f, 0, hdf5.check_shard(f, seq_len, max_predictions)) for f in val_files]
            return train, val
        total = sum(stop for _, _, stop in train)
        if self.data.val_fraction <= 0 or total < 2:
            return train, []
        n_val = min(max(1, round(total * self.data.val_fraction)), total - 1)
        return _take(train, 0, total - n_val), _take(train, total - n_val, total)

    def sampled_unigram_entropy(self, max_shards: int) -> tuple[float, str]:
        """The masked-token unigram entropy from at most ``max_shards`` training shards spread
        evenly over the set, and what it was computed from: the reference line a sweep records
        on the machine that prepares it (a login node), where one pass over NVIDIA's thousands
        of shards would take hours. Text data: the entropy of all examples (computed while they
        were built)."""
        self.setup()
        if self.data.format != "hdf5":
            return self.unigram_entropy, "all training examples"
        assert self.train_set is not None
        slices = self.train_set.slices
        if len(slices) <= max_shards:
            return self.unigram_entropy, f"all {len(slices)} training shards"
        picks = sorted({round(i * (len(slices) - 1) / (max_shards - 1)) for i in range(max_shards)})
        stats = self._hdf5_stats([slices[i] for i in picks])
        return float(stats["unigram_entropy"]), f"{len(picks)} of {len(slices)} training shards"

    def _hdf5_stats(self, slices: list[Slice] | None = None) -> dict[str, Any]:
        """Largest token id and unigram entropy of the training shards, or of ``slices`` of
        them (one pass, cached)."""
        assert self.train_set is not None
        slices = self.train_set.slices if slices is None else slices
        described = [
            (str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns, start, stop)
            for p, start, stop in slices
        ]
        path = self.cache_dir / "hdf5-stats" / f"{_cache.key_of(described)}.json"

        def compute() -> dict[str, Any]:
            counts = np.zeros(0, np.int64)
            max_id = 0
            for file, start, stop in slices:
                shard = hdf5.read_shard(file)
                ids = shard["masked_lm_ids"][start:stop]
                c = hdf5.token_counts(ids, shard["masked_lm_positions"][start:stop])
                if len(c) > len(counts):
                    counts = np.pad(counts, (0, len(c) - len(counts)))
                counts[: len(c)] += c
                max_id = max(max_id, int(shard["input_ids"][start:stop].max()), int(ids.max()))
            return {"max_token_id": max_id, "unigram_entropy": hdf5.entropy_of(counts)}

        stats = _cache.cached_json(path, compute)
        if self._vocab_size is not None and stats["max_token_id"] >= self._vocab_size:
            raise DataError(
                f"data.vocab_file: {self.data.vocab_file} has {self._vocab_size} tokens, but "
                f"the shards hold token id {stats['max_token_id']}"
            )
        return stats

    # --- what the model and the loop read -----------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """The number of token ids the model's embedding needs (see the module docstring)."""
        self.setup()
        if self._vocab_size is None:
            self._vocab_size = (self._hdf5_stats()["max_token_id"] + 1 + 7) // 8 * 8
        return self._vocab_size

    @property
    def unigram_entropy(self) -> float:
        """Entropy (nats) of the masked-token distribution over the training examples."""
        self.setup()
        if self._entropy is None:
            self._entropy = float(self._hdf5_stats()["unigram_entropy"])
        return self._entropy

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The training order of ``epoch`` over all ranks (what ``train_dataloader`` uses, before
        each rank takes its share): a permutation of the training examples, shard by shard."""
        self.setup()
        assert self.train_set is not None
        return shard_order(self.train_set.sizes, self.seed, epoch)

    def _ranks(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _loader(self, dataset: ShardDataset, sampler: ShardSampler, drop_last: bool) -> DataLoader:
        workers = self.data.num_workers
        return DataLoader(
            dataset,
            batch_size=self.phase.micro_batch,
            sampler=sampler,
            drop_last=drop_last,
            collate_fn=_batch,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        assert self.train_set is not None
        world, rank = self._ranks()
        sampler = ShardSampler(
            self.train_set,
            num_replicas=world,
            rank=rank,
            shuffle=True,
            seed=self.seed,
            drop_last=True,
        )
        if len(sampler) < self.phase.micro_batch:
            raise DataError(
                f"micro_batch: expected at most {len(sampler)} (the training examples per "
                f"device), got {self.phase.micro_batch}"
            )
        return self._loader(self.train_set, sampler, drop_last=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """The held-out examples in a fixed order; ``[]`` (no validation) if there are none."""
        self.setup()
        if self.val_set is None:
            return []
        world, rank = self._ranks()
        sampler = ShardSampler(
            self.val_set, num_replicas=world, rank=rank, shuffle=False, seed=0, drop_last=False
        )
        return self._loader(self.val_set, sampler, drop_last=False)


def _take(slices: list[Slice], begin: int, end: int) -> list[Slice]:
    """The examples ``[begin, end)`` of the concatenation of ``slices``, as slices."""
    out = []
    offset = 0
    for path, start, stop in slices:
        n = stop - start
        lo, hi = max(begin - offset, 0), min(end - offset, n)
        if lo < hi:
            out.append((path, start + lo, start + hi))
        offset += n
    return out
