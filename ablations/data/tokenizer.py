"""A BERT WordPiece tokenizer: trained on the corpus (cached), or read from a ``vocab.txt``.

Training uses ``tokenizers``' WordPiece trainer with BERT's normaliser and pre-tokeniser
(``BertWordPieceTokenizer``; lower-casing and accent stripping per ``DataConfig.lower_case``) and
the special tokens ``[PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4``.

Determinism: the trainer (tokenizers 0.23) numbers the ``##c`` continuation characters in
hash-map order, and those numbers break ties between merges of equal count, so two trainings on
the same text can learn different vocabularies (huggingface/tokenizers#1794, fix pending in #2066).
The work-around: a first training finds the set of ``##c`` tokens (that set does not depend on the
order), and a second one starts from them, sorted, given as extra initial tokens, so every id the
tie-break sees is fixed. The vocabulary is then written in a canonical order: special tokens,
single characters, ``##`` characters (both sorted), then the learned pieces in the order they were
learned. WordPiece reads only the token set, so the order changes ids, not tokenisation.

Trained vocabularies are cached as ``<cache_dir>/tokenizer/wordpiece-<key>/vocab.txt``, the key
being the corpus sha256, ``vocab_size``, ``lower_case`` and the ``tokenizers`` version.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import BertWordPieceTokenizer

from ablations.data import _cache
from ablations.data.corpus import Corpus
from ablations.data.errors import DataError
from ablations.data.status import Stage

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class WordPiece:
    """A BERT WordPiece tokenizer over a ``vocab.txt``.

    Attributes:
        vocab_size: the number of tokens in the vocabulary.
        pad_id, unk_id, cls_id, sep_id, mask_id: ids of the special tokens.
        vocab_sha256: sha256 of the vocabulary file.
    """

    def __init__(self, vocab_file: str | os.PathLike[str], lower_case: bool = True) -> None:
        path = Path(vocab_file)
        if not path.is_file():
            raise DataError(f"data.vocab_file: no such file: {vocab_file}")
        self.path = path
        self.lower_case = lower_case
        self._tok = BertWordPieceTokenizer(str(path), lowercase=lower_case)
        vocab = self._tok.get_vocab()
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise DataError(f"data.vocab_file: {vocab_file} lacks the special token {missing[0]}")
        if vocab["[PAD]"] != 0:
            raise DataError(f"data.vocab_file: {vocab_file} must have [PAD] at id 0")
        self.vocab_size = self._tok.get_vocab_size()
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            vocab[t] for t in SPECIAL_TOKENS
        )
        self.vocab_sha256 = _cache.sha256_file(path)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens (Rust, multi-threaded)."""
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def tokens(self, ids: Sequence[int]) -> list[str]:
        """The tokens of ``ids``."""
        return [self._tok.id_to_token(int(i)) for i in ids]


def train_wordpiece(
    corpus: Corpus, vocab_size: int, lower_case: bool, cache_dir: str | os.PathLike[str]
) -> tuple[WordPiece, bool]:
    """Train (once) a WordPiece vocabulary on ``corpus``; returns it and whether it was built."""
    version = importlib.metadata.version("tokenizers")
    key = _cache.key_of("wordpiece", corpus.sha256, vocab_size, lower_case, version)
    path = Path(cache_dir) / "tokenizer" / f"wordpiece-{key}" / "vocab.txt"

    def train(initial: Sequence[str]) -> dict[str, int]:
        tok = BertWordPieceTokenizer(lowercase=lower_case)
        tok.train_from_iterator(
            (p for doc in corpus.documents for p in doc),
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=[*SPECIAL_TOKENS, *initial],
            show_progress=False,
        )
        return tok.get_vocab()

    def build(tmp: Path) -> dict[str, Any]:
        with Stage(f"vocabulary (WordPiece, {vocab_size} tokens)", total=2, unit="passes") as s:
            continuation = sorted(t for t in train(()) if len(t) == 3 and t.startswith("##"))
            s.advance()
            tokens = _canonical_order(train(continuation))
            s.advance()
        tmp.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
        return {
            "corpus_sha256": corpus.sha256,
            "corpus_source": corpus.source,
            "vocab_size_requested": vocab_size,
            "vocab_size": len(tokens),
            "lower_case": lower_case,
            "tokenizers": version,
            "vocab_sha256": hashlib.sha256(tmp.read_bytes()).hexdigest(),
        }

    entry = _cache.cached(path, build)
    return WordPiece(entry.path, lower_case), entry.built


def _canonical_order(vocab: dict[str, int]) -> list[str]:
    def rank(token: str) -> tuple[int, Any]:
        if token in SPECIAL_TOKENS:
            return (0, SPECIAL_TOKENS.index(token))
        if len(token) == 1:
            return (1, token)
        if len(token) == 3 and token.startswith("##"):
            return (2, token)
        return (3, vocab[token])

    return sorted(vocab, key=rank)


def load_tokenizer(
    vocab_file: str | None,
    corpus: Corpus | None,
    vocab_size: int,
    lower_case: bool,
    cache_dir: str | os.PathLike[str],
) -> WordPiece:
    """The tokenizer ``DataConfig`` asks for: ``vocab_file``, or else trained on ``corpus``."""
    if vocab_file is not None:
        return WordPiece(vocab_file, lower_case)
    if corpus is None:
        raise ValueError("a corpus is needed to train a vocabulary")
    return train_wordpiece(corpus, vocab_size, lower_case, cache_dir)[0]
