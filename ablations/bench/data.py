"""Random full-length examples in the batch contract (``ablations/data/batch.py``), for timing.

Throughput is measured on full sequences, as NVIDIA's phase-1 and phase-2 shards mostly are:
no padding, ``max_predictions`` real predictions per sequence, segment B in the second half.
The content is random (a step costs the same whatever the tokens), drawn once from a seeded
generator into a pool held as tensors, and a micro-batch is one indexing of the pool
(``__getitems__``): the data path costs next to nothing beside the step it feeds.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ablations.config import DataConfig, PhaseConfig


class RandomExamples(Dataset):
    """``n`` random examples of ``seq_len`` tokens with ``predictions`` masked positions."""

    def __init__(self, n: int, vocab: int, seq_len: int, predictions: int, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        # ids >= 5: past [PAD], [UNK], [CLS], [SEP], [MASK] in BERT's and our vocabularies
        self.columns = {
            "input_ids": torch.randint(5, vocab, (n, seq_len), generator=gen),
            "token_type_ids": (torch.arange(seq_len) >= seq_len // 2).long().expand(n, -1),
            "attention_mask": torch.ones(n, seq_len, dtype=torch.long),
            # distinct positions in [1, seq_len - 2], sorted (0 is [CLS], the last is [SEP])
            "masked_lm_positions": torch.rand(n, seq_len - 2, generator=gen)
            .argsort(dim=1)[:, :predictions]
            .sort(dim=1)
            .values
            + 1,
            "masked_lm_ids": torch.randint(5, vocab, (n, predictions), generator=gen),
            "masked_lm_weights": torch.ones(n, predictions),
            "next_sentence_labels": torch.randint(0, 2, (n,), generator=gen),
        }
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.columns.items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        rows = torch.as_tensor(indices)
        return {k: v[rows] for k, v in self.columns.items()}


def _as_is(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The loader's ``collate_fn``: ``__getitems__`` returns the batch whole."""
    return batch


class RandomData(L.LightningDataModule):
    """A data module of :class:`RandomExamples` with ``BertDataModule``'s signature: a pool of
    ``pool`` micro-batches of the phase's shape, vocabulary ``data.vocab_size``."""

    def __init__(self, data: DataConfig, phase: PhaseConfig, seed: int, pool: int = 4) -> None:
        super().__init__()
        self.vocab_size = data.vocab_size
        self.examples = RandomExamples(
            pool * phase.micro_batch, data.vocab_size, phase.seq_len, phase.max_predictions, seed
        )
        self.micro_batch = phase.micro_batch

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.examples, batch_size=self.micro_batch, collate_fn=_as_is)
