"""NVIDIA's pretraining HDF5 shards: write, validate, read with NVIDIA's semantics.

Format (``create_pretraining_data.py`` of NVIDIA DeepLearningExamples, PyTorch BERT, @7a4c4250;
lamb-implementations.md §3.2): one ``.hdf5`` file per shard, gzip-compressed datasets

======================  ===========================  ==========================
key                     shape                        dtype
======================  ===========================  ==========================
input_ids               [N, max_seq_length]          i4
input_mask              [N, max_seq_length]          i1
segment_ids             [N, max_seq_length]          i1
masked_lm_positions     [N, max_predictions]         i4 (zero-padded)
masked_lm_ids           [N, max_predictions]         i4 (zero-padded)
next_sentence_labels    [N]                          i1
======================  ===========================  ==========================

Reader (``pretraining_dataset`` in ``run_pretraining.py``): every array is cast to int64, and the
masked positions end at the first 0 (position 0 is [CLS], never masked): the first ``k`` entries
are the predictions, ``k`` being the index of the first 0, or the full width if there is none.
:func:`to_batch` turns that into the batch contract of ``ablations/data/batch.py``: positions and
ids
past ``k`` are zeroed and ``masked_lm_weights`` is 1.0 for the first ``k`` entries.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from ablations.data.errors import DataError

SHARD_DTYPES = {
    "input_ids": "i4",
    "input_mask": "i1",
    "segment_ids": "i1",
    "masked_lm_positions": "i4",
    "masked_lm_ids": "i4",
    "next_sentence_labels": "i1",
}
SHARD_KEYS = tuple(SHARD_DTYPES)


def write_shard(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Write one shard in NVIDIA's exact format (gzip; the dtypes of ``SHARD_DTYPES``)."""
    with h5py.File(path, "w") as f:
        for key, dtype in SHARD_DTYPES.items():
            f.create_dataset(key, data=arrays[key], dtype=dtype, compression="gzip")


def shard_files(source: str | os.PathLike[str]) -> list[Path]:
    """One ``.hdf5`` file, or the ``*.hdf5`` files of a folder (not recursive), sorted."""
    path = Path(source)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"data.source: no such file or folder: {source}")
    files = sorted(p for p in path.glob("*.hdf5") if p.is_file())
    if not files:
        raise DataError(f"data.source: {source} holds no .hdf5 files")
    return files


def check_shard(path: str | os.PathLike[str], seq_len: int, max_predictions: int) -> int:
    """Validate a shard's keys and shapes (metadata only); returns its number of examples."""
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise DataError(f"{path}: not an HDF5 file") from None
    with f:
        for key in SHARD_KEYS:
            if key not in f:
                raise DataError(
                    f"{path}: missing key '{key}' (a shard has {', '.join(SHARD_KEYS)})"
                )
        n, length = (f["input_ids"].shape + (None,))[:2]
        if length != seq_len:
            raise DataError(
                f"{path}: sequence length {length}, expected the phase's seq_len={seq_len}"
            )
        width = (f["masked_lm_positions"].shape + (None,))[1]
        if width != max_predictions:
            raise DataError(
                f"{path}: masked_lm_positions width {width}, expected the phase's "
                f"max_predictions={max_predictions}"
            )
        if n == 0:
            raise DataError(f"{path}: empty shard (0 examples)")
        expected = {"input_mask": (n, seq_len), "segment_ids": (n, seq_len)}
        expected |= {"masked_lm_ids": (n, width), "next_sentence_labels": (n,)}
        for key, shape in expected.items():
            if f[key].shape != shape:
                raise DataError(f"{path}: '{key}' has shape {f[key].shape}, expected {shape}")
    return n


def read_shard(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """All arrays of a shard, as stored (NVIDIA: ``np.asarray(f[key][:])``)."""
    with h5py.File(path, "r") as f:
        return {key: np.asarray(f[key][:]) for key in SHARD_KEYS}


def prediction_counts(masked_lm_positions: np.ndarray) -> np.ndarray:
    """Per example, the number of predictions: the index of the first 0 position, else the width."""
    zero = masked_lm_positions == 0
    return np.where(zero.any(axis=-1), zero.argmax(axis=-1), masked_lm_positions.shape[-1])


def to_batch(raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Shard rows -> the batch contract (int64; ``masked_lm_weights`` float32)."""
    positions = raw["masked_lm_positions"].astype(np.int64)
    valid = np.arange(positions.shape[-1]) < prediction_counts(positions)[..., None]
    return {
        "input_ids": raw["input_ids"].astype(np.int64),
        "token_type_ids": raw["segment_ids"].astype(np.int64),
        "attention_mask": raw["input_mask"].astype(np.int64),
        "masked_lm_positions": np.where(valid, positions, 0),
        "masked_lm_ids": np.where(valid, raw["masked_lm_ids"].astype(np.int64), 0),
        "masked_lm_weights": valid.astype(np.float32),
        "next_sentence_labels": raw["next_sentence_labels"].astype(np.int64),
    }


def unigram_entropy(masked_lm_ids: np.ndarray, masked_lm_positions: np.ndarray) -> float:
    """Entropy (nats) of the masked-token distribution: the loss of the best context-free model.

    A model that predicts every masked token from the marginal distribution of masked tokens
    (the "unigram plateau") has exactly this expected masked-LM loss; a model that uses no context
    cannot do better.
    """
    return entropy_of(token_counts(masked_lm_ids, masked_lm_positions))


def token_counts(masked_lm_ids: np.ndarray, masked_lm_positions: np.ndarray) -> np.ndarray:
    """Counts of each masked token id (the real predictions only)."""
    valid = (
        np.arange(masked_lm_positions.shape[-1]) < prediction_counts(masked_lm_positions)[..., None]
    )
    return np.bincount(masked_lm_ids[valid].astype(np.int64).ravel())


def entropy_of(counts: np.ndarray) -> float:
    counts = counts[counts > 0].astype(np.float64)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())
