"""Data for BERT pretraining: corpora, WordPiece, BERT's example creation, NVIDIA HDF5 shards.

- ``corpus``: the embedded English corpus (docs of the pinned dependencies) and user text.
- ``tokenizer``: a WordPiece vocabulary trained on the corpus (cached) or read from a file.
- ``examples``: Google's / NVIDIA's ``create_pretraining_data`` logic; cached as NVIDIA shards.
- ``hdf5``: NVIDIA's shard format: writer, validation, reader semantics -> the batch contract.
- ``datamodule``: ``BertDataModule``, the LightningDataModule of one phase.

Every bad setting or file raises :class:`DataError` (a ``ValueError``) with a one-line message.
"""

from __future__ import annotations

from ablations.data.corpus import Corpus, build_embedded, load_corpus, read_text
from ablations.data.datamodule import BertDataModule
from ablations.data.errors import DataError
from ablations.data.examples import (
    build_examples,
    create_examples,
    split_documents,
    split_sentences,
    tokenize_documents,
)
from ablations.data.hdf5 import read_shard, to_batch, unigram_entropy, write_shard
from ablations.data.tokenizer import WordPiece, load_tokenizer, train_wordpiece

__all__ = [
    "BertDataModule",
    "Corpus",
    "DataError",
    "WordPiece",
    "build_embedded",
    "build_examples",
    "create_examples",
    "load_corpus",
    "load_tokenizer",
    "read_shard",
    "read_text",
    "split_documents",
    "split_sentences",
    "to_batch",
    "tokenize_documents",
    "train_wordpiece",
    "unigram_entropy",
    "write_shard",
]
