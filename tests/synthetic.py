"""A small structured pretraining dataset in the batch contract (``ablations/data/batch.py``).

Every example is ``[CLS] A [SEP] B [SEP]`` then padding, where A is a run of an arithmetic
progression of token ids (``4 + (start + i * stride) mod 48``, stride in {1, 2, 3, 5}) and B
either continues it (``next_sentence_labels = 0``) or is another progression (1). A masked token is
therefore predictable from its neighbours and the NSP label from the A/B boundary, so a tiny BERT's
losses fall within a few dozen steps. Masking is BERT's (15% of the tokens, at most
``max_predictions``; 80% [MASK], 10% random, 10% unchanged), drawn once per example from a
generator seeded by (data seed, split, index): the examples are fixed, like NVIDIA's HDF5 shards.

``make(data, phase, seed)`` has ``BertDataModule``'s signature, so the CLI can load it with
``--datamodule synthetic:make`` (with ``tests/`` on ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from ablations.config import DataConfig, PhaseConfig

PAD, CLS, SEP, MASK = 0, 1, 2, 3
FIRST = 4  # first ordinary token id
ALPHABET = 48  # ordinary tokens used (fewer than the vocabulary: quick to learn)
STRIDES = (1, 2, 3, 5)


def example(
    gen: torch.Generator, vocab: int, seq_len: int, max_pred: int, mask_prob: float
) -> dict[str, torch.Tensor]:
    span = min(vocab - FIRST, ALPHABET)

    def randint(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi, (), generator=gen))

    def progression(start: int, stride: int, n: int) -> list[int]:
        return [FIRST + (start + i * stride) % span for i in range(n)]

    room = seq_len - 3 - randint(0, seq_len // 4)  # some examples are padded
    a_len = randint(2, room - 1)
    b_len = room - a_len
    start, stride = randint(0, span), STRIDES[randint(0, len(STRIDES))]
    a = progression(start, stride, a_len)
    is_random = randint(0, 2)
    if is_random:
        b = progression(randint(0, span), STRIDES[randint(0, len(STRIDES))], b_len)
    else:
        b = progression(start + a_len * stride, stride, b_len)
    tokens = [CLS, *a, SEP, *b, SEP]
    segments = [0] * (a_len + 2) + [1] * (b_len + 1)

    candidates = [i for i, t in enumerate(tokens) if t >= FIRST]
    n_pred = min(max_pred, max(1, round(len(candidates) * mask_prob)))
    order = torch.randperm(len(candidates), generator=gen)[:n_pred].tolist()
    positions = sorted(candidates[i] for i in order)
    ids = [tokens[p] for p in positions]
    for p in positions:
        roll = float(torch.rand((), generator=gen))
        if roll < 0.8:
            tokens[p] = MASK
        elif roll < 0.9:
            tokens[p] = randint(FIRST, vocab)

    def pad(values: list, n: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
        return torch.tensor(values + [0] * (n - len(values)), dtype=dtype)

    return {
        "input_ids": pad(tokens, seq_len),
        "token_type_ids": pad(segments, seq_len),
        "attention_mask": pad([1] * len(tokens), seq_len),
        "masked_lm_positions": pad(positions, max_pred),
        "masked_lm_ids": pad(ids, max_pred),
        "masked_lm_weights": pad([1.0] * len(positions), max_pred, torch.float32),
        "next_sentence_labels": torch.tensor(is_random),
    }


class Examples(Dataset):
    """``n`` fixed examples (generated up front)."""

    def __init__(self, n: int, data: DataConfig, phase: PhaseConfig, split: int) -> None:
        rows = []
        for i in range(n):
            gen = torch.Generator().manual_seed(data.seed * 1_000_003 + split * 100_003 + i)
            rows.append(
                example(
                    gen, data.vocab_size, phase.seq_len, phase.max_predictions, data.masked_lm_prob
                )
            )
        self.columns = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.columns.items()}


class SyntheticData(L.LightningDataModule):
    """Train and validation :class:`Examples`; ``vocab_size`` is ``data.vocab_size``."""

    def __init__(
        self,
        data: DataConfig,
        phase: PhaseConfig,
        seed: int,
        num_train: int = 1024,
        num_val: int = 128,
    ) -> None:
        super().__init__()
        self.data, self.phase, self.seed = data, phase, seed
        self.vocab_size = data.vocab_size
        self.num_train, self.num_val = num_train, num_val
        self.train_set: Examples | None = None
        self.val_set: Examples | None = None

    def setup(self, stage: str) -> None:
        if self.train_set is None:
            self.train_set = Examples(self.num_train, self.data, self.phase, split=0)
            self.val_set = Examples(self.num_val, self.data, self.phase, split=1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set, batch_size=self.phase.micro_batch, shuffle=True, collate_fn=collate
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.phase.micro_batch)


def collate(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``default_collate``, slowed by ``$SYNTHETIC_DELAY`` seconds (tests that kill a run)."""
    delay = float(os.environ.get("SYNTHETIC_DELAY", "0"))
    if delay:
        time.sleep(delay)
    return default_collate(rows)


def make(data: DataConfig, phase: PhaseConfig, seed: int) -> SyntheticData:
    """``BertDataModule``'s signature."""
    return SyntheticData(data, phase, seed)
