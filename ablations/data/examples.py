"""BERT pretraining examples: Google's ``create_pretraining_data.py`` as NVIDIA runs it.

The logic of google-research/bert ``create_pretraining_data.py`` (reused unchanged by NVIDIA
DeepLearningExamples, which only writes the result to HDF5), with Python's ``random.Random``:

1. Documents are split into train and validation *by document* before anything else
   (:func:`split_documents`), then each document into sentences (:func:`split_sentences`), which
   are tokenised. Documents are shuffled.
2. For each of ``dupe_factor`` passes over the documents: the target length is
   ``seq_len - 3``, or with probability ``short_seq_prob`` a random length in
   ``[2, seq_len - 3]`` (drawn once per document and pass). Sentences are gathered into a chunk
   until the target length is reached; segment A is a random number of the chunk's leading
   sentences; B is the rest of the chunk ("IsNext", label 0) or, with probability 0.5 (always
   for a one-sentence chunk), sentences from a random position of another document (label 1),
   the unused sentences of the chunk being put back. The pair is truncated to ``seq_len - 3``
   tokens by dropping a token from the front or back (at random) of the longer segment.
3. Masking: ``num = min(max_predictions, max(1, round(len(tokens) * masked_lm_prob)))`` of the
   tokens other than [CLS] and [SEP], chosen at random; each becomes [MASK] with probability
   0.8, stays unchanged with 0.1, and becomes a token drawn uniformly from the whole vocabulary
   with 0.1. No whole-word masking.
4. The examples are shuffled and written as NVIDIA's shard arrays (``hdf5.SHARD_DTYPES``).

The validation split is built the same way with one pass (``dupe_factor=1``) and its own random
stream. Each split is cached as an NVIDIA shard,
``<cache_dir>/examples/<split>-<key>.hdf5`` with ``<...>.hdf5.json`` metadata (counts, unigram
entropy, largest token id), the key being the corpus and vocabulary sha256 and every setting that
changes the examples; the shard is read back by the same reader as user shards.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ablations.data import _cache, hdf5
from ablations.data.corpus import Corpus
from ablations.data.errors import DataError
from ablations.data.status import Stage
from ablations.data.tokenizer import WordPiece

#: Bump when the example logic changes: it is part of the cache key.
EXAMPLES_VERSION = 1

Split = Literal["train", "validation"]

# A sentence ends at . ! or ? (maybe followed by closing quotes or brackets) before white space
# and an upper-case letter, a digit or an opening quote or bracket ...
_BOUNDARY = re.compile(r"(?<=[.!?])([\"')\]]*)\s+(?=[\"'(\[]*[A-Z0-9])")
# ... unless the full stop belongs to an abbreviation or an initial.
_ABBREVIATION = re.compile(
    r"(\b(e\.g|i\.e|etc|vs|cf|al|approx|resp|Fig|Figs|Eq|Eqs|No|Nos|Sec|Ch|Vol|Mr|Mrs|Ms|Dr|Prof"
    r"|St|Jr|Sr|Inc|Ltd|Co)\.|\b[A-Z]\.)$"
)


def split_sentences(paragraph: str) -> list[str]:
    """Split a paragraph into sentences (a deterministic rule-based splitter)."""
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(paragraph):
        end = match.start() + len(match.group(1))
        if _ABBREVIATION.search(paragraph[start:end]):
            continue
        sentences.append(paragraph[start:end])
        start = match.end()
    sentences.append(paragraph[start:])
    return [s.strip() for s in sentences if s.strip()]


def split_documents(
    n_documents: int, val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices of the training and validation documents: a seeded random ``val_fraction``.

    At least one document is held out when ``val_fraction > 0`` and at least one is kept for
    training; both lists are sorted.
    """
    if val_fraction <= 0:
        return list(range(n_documents)), []
    if n_documents < 2:
        raise DataError(
            f"data.val_fraction: a validation split needs at least 2 documents, the corpus has "
            f"{n_documents} (or set data.val_fraction=0)"
        )
    order = list(range(n_documents))
    random.Random(f"split:{seed}").shuffle(order)
    n_val = min(max(1, round(n_documents * val_fraction)), n_documents - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])


def tokenize_documents(
    documents: Sequence[Sequence[str]], tokenizer: WordPiece
) -> list[list[list[int]]]:
    """Documents of paragraphs -> documents of tokenised sentences (empty ones dropped)."""
    sentences: list[str] = []
    owners: list[int] = []
    for d, document in enumerate(documents):
        for paragraph in document:
            for sentence in split_sentences(paragraph):
                sentences.append(sentence)
                owners.append(d)
    tokenized: list[list[list[int]]] = [[] for _ in documents]
    for owner, ids in zip(owners, tokenizer.encode_batch(sentences), strict=True):
        if ids:
            tokenized[owner].append(ids)
    return [doc for doc in tokenized if doc]


def create_examples(
    documents: list[list[list[int]]],
    *,
    seq_len: int,
    max_predictions: int,
    masked_lm_prob: float,
    short_seq_prob: float,
    dupe_factor: int,
    vocab_size: int,
    cls_id: int,
    sep_id: int,
    mask_id: int,
    rng: random.Random,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Pretraining examples from tokenised documents, as NVIDIA's shard arrays.

    Args:
        documents: documents of sentences of token ids (shuffled in place by ``rng``).
        seq_len: ``max_seq_length``; ``max_predictions``: ``max_predictions_per_seq``.
        rng: the random stream; the same stream gives the same examples.
        progress: called with 1 after each document of each pass (status lines).
    """
    rng.shuffle(documents)
    instances: list[tuple[list[int], int, list[int], list[int], int]] = []
    for _ in range(dupe_factor):
        for index in range(len(documents)):
            instances.extend(
                _instances_from_document(
                    documents,
                    index,
                    seq_len,
                    max_predictions,
                    masked_lm_prob,
                    short_seq_prob,
                    vocab_size,
                    (cls_id, sep_id, mask_id),
                    rng,
                )
            )
            if progress is not None:
                progress(1)
    rng.shuffle(instances)
    n = len(instances)
    out = {
        "input_ids": np.zeros((n, seq_len), np.int32),
        "input_mask": np.zeros((n, seq_len), np.int8),
        "segment_ids": np.zeros((n, seq_len), np.int8),
        "masked_lm_positions": np.zeros((n, max_predictions), np.int32),
        "masked_lm_ids": np.zeros((n, max_predictions), np.int32),
        "next_sentence_labels": np.zeros(n, np.int8),
    }
    for i, (tokens, len_a, positions, labels, is_random) in enumerate(instances):
        out["input_ids"][i, : len(tokens)] = tokens
        out["input_mask"][i, : len(tokens)] = 1
        out["segment_ids"][i, len_a + 2 : len(tokens)] = 1
        out["masked_lm_positions"][i, : len(positions)] = positions
        out["masked_lm_ids"][i, : len(labels)] = labels
        out["next_sentence_labels"][i] = is_random
    return out


def _instances_from_document(
    documents: list[list[list[int]]],
    index: int,
    seq_len: int,
    max_predictions: int,
    masked_lm_prob: float,
    short_seq_prob: float,
    vocab_size: int,
    specials: tuple[int, int, int],
    rng: random.Random,
) -> list[tuple[list[int], int, list[int], list[int], int]]:
    """``create_instances_from_document`` of Google's script, line for line."""
    cls_id, sep_id, _ = specials
    document = documents[index]
    max_num_tokens = seq_len - 3
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)
    instances = []
    current_chunk: list[list[int]] = []
    current_length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            if current_chunk:
                a_end = 1
                if len(current_chunk) >= 2:
                    a_end = rng.randint(1, len(current_chunk) - 1)
                tokens_a = [t for seg in current_chunk[:a_end] for t in seg]
                tokens_b: list[int] = []
                if len(current_chunk) == 1 or rng.random() < 0.5:
                    is_random_next = 1
                    target_b_length = target_seq_length - len(tokens_a)
                    # Another document (ten tries; a one-document corpus uses itself).
                    for _ in range(10):
                        random_index = rng.randint(0, len(documents) - 1)
                        if random_index != index:
                            break
                    random_document = documents[random_index]
                    random_start = rng.randint(0, len(random_document) - 1)
                    for j in range(random_start, len(random_document)):
                        tokens_b.extend(random_document[j])
                        if len(tokens_b) >= target_b_length:
                            break
                    # Put the unused segments back: they start the next chunk.
                    i -= len(current_chunk) - a_end
                else:
                    is_random_next = 0
                    tokens_b = [t for seg in current_chunk[a_end:] for t in seg]
                _truncate_pair(tokens_a, tokens_b, max_num_tokens, rng)
                tokens = [cls_id, *tokens_a, sep_id, *tokens_b, sep_id]
                positions, labels = _mask(
                    tokens, masked_lm_prob, max_predictions, vocab_size, specials, rng
                )
                instances.append((tokens, len(tokens_a), positions, labels, is_random_next))
            current_chunk = []
            current_length = 0
        i += 1
    return instances


def _truncate_pair(a: list[int], b: list[int], max_num_tokens: int, rng: random.Random) -> None:
    """Truncate the longer sequence one token at a time, from the front or the back at random."""
    while len(a) + len(b) > max_num_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def _mask(
    tokens: list[int],
    masked_lm_prob: float,
    max_predictions: int,
    vocab_size: int,
    specials: tuple[int, int, int],
    rng: random.Random,
) -> tuple[list[int], list[int]]:
    """``create_masked_lm_predictions`` (no whole-word masking); masks ``tokens`` in place."""
    cls_id, sep_id, mask_id = specials
    candidates = [i for i, t in enumerate(tokens) if i > 0 and t != sep_id and t != cls_id]
    rng.shuffle(candidates)
    num_to_predict = min(max_predictions, max(1, int(round(len(tokens) * masked_lm_prob))))
    chosen = []
    for index in candidates[:num_to_predict]:
        original = tokens[index]
        if rng.random() < 0.8:
            tokens[index] = mask_id
        elif rng.random() < 0.5:
            pass  # kept
        else:
            tokens[index] = rng.randint(0, vocab_size - 1)
        chosen.append((index, original))
    chosen.sort()
    return [i for i, _ in chosen], [t for _, t in chosen]


def build_examples(
    corpus: Corpus,
    tokenizer: WordPiece,
    split: Split,
    *,
    seq_len: int,
    max_predictions: int,
    masked_lm_prob: float,
    short_seq_prob: float,
    dupe_factor: int,
    val_fraction: float,
    seed: int,
    cache_dir: str | os.PathLike[str],
) -> _cache.Entry:
    """Build (once) the examples of one split as a cached NVIDIA shard.

    Returns the cache entry: ``path`` (the ``.hdf5``), ``meta`` (``examples``, ``documents``,
    ``unigram_entropy``, ``max_token_id`` and the settings) and ``built``. Concurrent callers
    with the same key build it once (``_cache.cached``).
    """
    if split not in ("train", "validation"):
        raise ValueError(f"split: expected 'train' or 'validation', got {split!r}")
    passes = dupe_factor if split == "train" else 1
    settings = {
        "seq_len": seq_len,
        "max_predictions": max_predictions,
        "masked_lm_prob": masked_lm_prob,
        "short_seq_prob": short_seq_prob,
        "dupe_factor": passes,
        "val_fraction": val_fraction,
        "seed": seed,
        "split": split,
    }
    key = _cache.key_of(
        "examples",
        EXAMPLES_VERSION,
        corpus.sha256,
        tokenizer.vocab_sha256,
        tokenizer.lower_case,
        settings,
    )
    path = Path(cache_dir) / "examples" / f"{split}-{key}.hdf5"

    def build(tmp: Path) -> dict[str, Any]:
        train, val = split_documents(len(corpus.documents), val_fraction, seed)
        chosen = [corpus.documents[i] for i in (train if split == "train" else val)]
        stage = Stage(f"{split} examples (sequence {seq_len})", unit="documents × passes")
        with stage:
            documents = tokenize_documents(chosen, tokenizer)
            if not documents:
                raise DataError(f"data.source: {corpus.source} holds no text for the {split} split")
            stage.total = passes * len(documents)
            arrays = create_examples(
                documents,
                seq_len=seq_len,
                max_predictions=max_predictions,
                masked_lm_prob=masked_lm_prob,
                short_seq_prob=short_seq_prob,
                dupe_factor=passes,
                vocab_size=tokenizer.vocab_size,
                cls_id=tokenizer.cls_id,
                sep_id=tokenizer.sep_id,
                mask_id=tokenizer.mask_id,
                rng=random.Random(f"examples:{seed}:{split}"),
                progress=stage.advance,
            )
        hdf5.write_shard(tmp, arrays)
        positions, ids = arrays["masked_lm_positions"], arrays["masked_lm_ids"]
        return {
            **settings,
            "corpus_sha256": corpus.sha256,
            "vocab_sha256": tokenizer.vocab_sha256,
            "vocab_size": tokenizer.vocab_size,
            "documents": len(documents),
            "examples": int(len(arrays["input_ids"])),
            "predictions": int(hdf5.prediction_counts(positions).sum()),
            "unigram_entropy": hdf5.unigram_entropy(ids, positions),
            "max_token_id": int(max(arrays["input_ids"].max(), ids.max())),
        }

    return _cache.cached(path, build)
