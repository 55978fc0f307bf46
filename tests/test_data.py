"""The data pipeline, with real components at tiny sizes: corpora, WordPiece, BERT's example
creation and masking, NVIDIA's shard format and reader semantics, the cache, the DataModule."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import multiprocessing
import random
from pathlib import Path

import h5py
import numpy as np
import pytest

from ablations.config import DataConfig, PhaseConfig
from ablations.data import (
    DataError,
    WordPiece,
    build_embedded,
    build_examples,
    create_examples,
    load_corpus,
    read_text,
    split_documents,
    split_sentences,
    tokenize_documents,
    train_wordpiece,
)
from ablations.data.batch import BATCH_KEYS
from ablations.data.corpus import parse_documents

SEQ_LEN, MAX_PRED = 32, 5
PHASE = PhaseConfig(seq_len=SEQ_LEN, max_predictions=MAX_PRED, micro_batch=8, global_batch=8)
PAD, UNK, CLS, SEP, MASK = range(5)

_WORDS = (
    "the a of model training data batch layer weight gradient optimizer learning rate norm trust "
    "ratio step moment bias decay large small every each when then with without over under "
    "between after before loss value tensor vector matrix update scale phase warmup schedule "
    "token sentence document corpus vocabulary mask predict next random example sequence length"
)
WORDS = _WORDS.split()


def _english_like(n_docs: int, seed: int = 0) -> list[list[str]]:
    """Documents of paragraphs of sentences of random words."""
    rng = random.Random(seed)
    documents = []
    for _ in range(n_docs):
        sentences = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))).capitalize() + "."
            for _ in range(rng.randint(8, 16))
        ]
        half = len(sentences) // 2
        documents.append([" ".join(sentences[:half]), " ".join(sentences[half:])])
    return documents


def _write_text(path: Path, documents: list[list[str]]) -> Path:
    path.write_text("\n\n".join("\n".join(doc) for doc in documents) + "\n")
    return path


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    return _write_text(tmp_path_factory.mktemp("text") / "corpus.txt", _english_like(60))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def tokenizer(corpus_file, cache) -> WordPiece:
    return train_wordpiece(read_text(corpus_file), 300, True, cache)[0]


def _one_line(error: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


# --- corpora -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_corpus(embedded_cache):
    tmp_path, entry = embedded_cache
    meta = entry.meta
    assert meta["words"] >= 2_000_000, meta["words"]
    text = entry.path.read_text(encoding="utf-8")
    assert ">>>" not in text
    assert hashlib.sha256(text.encode()).hexdigest() == meta["sha256"]
    documents = parse_documents(text)
    assert len(documents) == meta["documents"] > 1000
    assert text.count("\n\n") == len(documents) - 1  # documents separated by one blank line
    assert sum(len(p.split()) for doc in documents for p in doc) == meta["words"]
    provenance = json.loads((entry.path.parent / "PROVENANCE.json").read_text())
    assert provenance == meta
    first = provenance["packages"][0]
    assert first["name"] == "transformers"
    assert first["version"] == importlib.metadata.version("transformers")
    # Cached: read back, not built again, and the corpus the harness loads is this one.
    assert not build_embedded(tmp_path).built
    assert load_corpus("embedded", tmp_path).sha256 == meta["sha256"]


def test_embedded_corpus_is_deterministic(tmp_path):
    """Two builds (in-process, and in 2 worker processes) of a few packages: the same text."""
    packages = ("pytest", "h5py", "jinja2")
    one = build_embedded(tmp_path / "a", packages=packages, min_words=10**9, workers=1)
    two = build_embedded(tmp_path / "b", packages=packages, min_words=10**9, workers=2)
    assert one.meta["sha256"] == two.meta["sha256"]
    assert one.path.read_bytes() == two.path.read_bytes()
    assert one.meta["words"] > 20_000
    assert [p["name"] for p in one.meta["packages"]] == list(packages)


def test_user_text_folder(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("Third doc.\n")
    (tmp_path / "a.txt").write_text("First doc, line one.\nLine   two.\n\n\n\nSecond doc.")
    (tmp_path / "skip.md").write_text("Not read.")
    corpus = read_text(tmp_path)
    assert corpus.documents == (
        ("First doc, line one.", "Line two."),
        ("Second doc.",),
        ("Third doc.",),
    )
    assert corpus.words == 10
    assert read_text(tmp_path).sha256 == corpus.sha256


def test_text_source_errors(tmp_path):
    with pytest.raises(DataError) as error:
        read_text(tmp_path / "nope")
    _one_line(error, "data.source: no such file or folder:", "nope")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(DataError) as error:
        read_text(tmp_path)
    _one_line(error, f"data.source: {tmp_path} holds no text")


# --- tokenizer ---------------------------------------------------------------------------------


def test_tokenizer_trained_and_cached(corpus_file, tmp_path):
    corpus = read_text(corpus_file)
    tok, built = train_wordpiece(corpus, 300, True, tmp_path)
    again, built_again = train_wordpiece(corpus, 300, True, tmp_path)
    assert built and not built_again
    assert again.path == tok.path and again.vocab_sha256 == tok.vocab_sha256
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert 100 < tok.vocab_size <= 300
    # Training is deterministic: a fresh cache gives the same vocabulary.
    fresh, _ = train_wordpiece(corpus, 300, True, tmp_path / "fresh")
    assert fresh.path.read_bytes() == tok.path.read_bytes()
    # Another size is another key.
    other, built_other = train_wordpiece(corpus, 256, True, tmp_path)
    assert built_other and other.path != tok.path
    ids = tok.encode_batch(["The model update.", "Warmup schedule"])
    assert tok.tokens(ids[0]) == ["the", "model", "update", "."]
    # A vocab_file is read as is.
    assert WordPiece(tok.path).vocab_sha256 == tok.vocab_sha256
    with pytest.raises(DataError) as error:
        WordPiece(tmp_path / "missing.txt")
    _one_line(error, "data.vocab_file: no such file:", "missing.txt")


# --- examples ----------------------------------------------------------------------------------


def test_sentence_splitter():
    text = 'It works. See e.g. this one. Dr. Who said "hi." Then 3 more! Is it? Yes (really).'
    assert split_sentences(text) == [
        "It works.",
        "See e.g. this one.",
        'Dr. Who said "hi."',
        "Then 3 more!",
        "Is it?",
        "Yes (really).",
    ]


def _examples(corpus_file, tokenizer, seed=1, dupe_factor=8, **kw):
    documents = tokenize_documents(read_text(corpus_file).documents, tokenizer)
    settings = dict(
        seq_len=SEQ_LEN,
        max_predictions=MAX_PRED,
        masked_lm_prob=0.15,
        short_seq_prob=0.1,
        dupe_factor=dupe_factor,
        vocab_size=tokenizer.vocab_size,
        cls_id=CLS,
        sep_id=SEP,
        mask_id=MASK,
        rng=random.Random(seed),
    )
    return create_examples(documents, **(settings | kw))


def _originals(arrays) -> tuple[np.ndarray, np.ndarray]:
    """Input ids with the masked tokens put back, and the number of predictions per example."""
    ids = arrays["input_ids"].astype(np.int64).copy()
    positions = arrays["masked_lm_positions"]
    k = np.where((positions == 0).any(1), (positions == 0).argmax(1), positions.shape[1])
    for i in range(len(ids)):
        ids[i, positions[i, : k[i]]] = arrays["masked_lm_ids"][i, : k[i]]
    return ids, k


def test_example_layout_and_masking(corpus_file, tokenizer):
    a = _examples(corpus_file, tokenizer)
    n = len(a["input_ids"])
    assert n > 500
    expected = {
        "input_ids": (np.int32, (n, SEQ_LEN)),
        "input_mask": (np.int8, (n, SEQ_LEN)),
        "segment_ids": (np.int8, (n, SEQ_LEN)),
        "masked_lm_positions": (np.int32, (n, MAX_PRED)),
        "masked_lm_ids": (np.int32, (n, MAX_PRED)),
        "next_sentence_labels": (np.int8, (n,)),
    }
    assert {k: (v.dtype, v.shape) for k, v in a.items()} == expected
    original, k = _originals(a)
    lengths = a["input_mask"].sum(1)
    outcome = {"mask": 0, "same": 0, "random": 0}
    for i in range(n):
        length, ids, pos = lengths[i], original[i], a["masked_lm_positions"][i, : k[i]]
        assert np.array_equal(a["input_mask"][i], np.arange(SEQ_LEN) < length)
        assert (a["input_ids"][i, length:] == PAD).all()
        seps = np.flatnonzero(ids == SEP)
        assert ids[0] == CLS and len(seps) == 2 and seps[1] == length - 1
        assert seps[0] >= 2 and seps[1] - seps[0] >= 2  # A and B are not empty
        segment = np.zeros(SEQ_LEN, np.int8)
        segment[seps[0] + 1 : length] = 1
        assert np.array_equal(a["segment_ids"][i], segment)
        # Masked positions: sorted, unique, inside the sequence, never [CLS]/[SEP]/padding.
        assert k[i] == min(MAX_PRED, max(1, round(length * 0.15)))
        assert (np.diff(pos) > 0).all() and pos.min() >= 1 and pos.max() < length
        assert not np.isin(pos, seps).any()
        assert (a["masked_lm_positions"][i, k[i] :] == 0).all()
        assert (a["masked_lm_ids"][i, k[i] :] == 0).all()
        for p in pos:
            got = a["input_ids"][i, p]
            outcome["mask" if got == MASK else "same" if got == ids[p] else "random"] += 1
    total = sum(outcome.values())
    assert total > 2000
    assert 0.76 < outcome["mask"] / total < 0.84
    assert 0.06 < outcome["same"] / total < 0.14  # (a random draw can hit the original too)
    assert 0.06 < outcome["random"] / total < 0.14
    # About half random next (more: a one-sentence chunk always takes a random B).
    assert 0.45 < a["next_sentence_labels"].mean() < 0.65
    # short_seq_prob draws shorter targets.
    short = _examples(corpus_file, tokenizer, dupe_factor=2, short_seq_prob=1.0)
    full = _examples(corpus_file, tokenizer, dupe_factor=2, short_seq_prob=0.0)
    assert short["input_mask"].sum(1).mean() < full["input_mask"].sum(1).mean() - 4


def test_examples_are_deterministic(corpus_file, tokenizer):
    one = _examples(corpus_file, tokenizer, seed=5, dupe_factor=1)
    two = _examples(corpus_file, tokenizer, seed=5, dupe_factor=1)
    other = _examples(corpus_file, tokenizer, seed=6, dupe_factor=1)
    assert all(np.array_equal(one[key], two[key]) for key in one)
    assert not np.array_equal(one["input_ids"][:50], other["input_ids"][:50])


def test_split_by_document():
    train, val = split_documents(50, 0.1, seed=3)
    assert len(val) == 5 and sorted(train + val) == list(range(50))
    assert split_documents(50, 0.1, seed=3) == (train, val)
    assert split_documents(50, 0.1, seed=4) != (train, val)
    assert split_documents(50, 0.0, seed=3) == (list(range(50)), [])
    with pytest.raises(DataError) as error:
        split_documents(1, 0.1, seed=3)
    _one_line(error, "data.val_fraction:", "at least 2 documents")


def _train_examples(corpus, tok, cache: Path, dupe_factor: int):
    """The train split's examples at the tests' shape (seed 9, 10% validation)."""
    return build_examples(
        corpus,
        tok,
        "train",
        seq_len=SEQ_LEN,
        max_predictions=MAX_PRED,
        masked_lm_prob=0.15,
        short_seq_prob=0.1,
        dupe_factor=dupe_factor,
        val_fraction=0.1,
        seed=9,
        cache_dir=cache,
    )


def _build_in_child(args) -> tuple[bool, str, str]:
    """One of two processes building the same cache key (spawned: a fresh interpreter)."""
    corpus_file, cache, barrier = args
    corpus = read_text(corpus_file)
    tok = train_wordpiece(corpus, 300, True, cache)[0]
    barrier.wait()
    entry = _train_examples(corpus, tok, cache, dupe_factor=100)
    return entry.built, str(entry.path), hashlib.sha256(entry.path.read_bytes()).hexdigest()


def test_example_cache_is_built_once_by_concurrent_processes(corpus_file, cache):
    ctx = multiprocessing.get_context("spawn")
    train_wordpiece(read_text(corpus_file), 300, True, cache)  # both children read it
    with ctx.Manager() as manager, ctx.Pool(2) as pool:
        barrier = manager.Barrier(2)
        results = pool.map(_build_in_child, [(corpus_file, cache, barrier)] * 2, chunksize=1)
    assert sorted(built for built, _, _ in results) == [False, True]
    assert len({(path, sha) for _, path, sha in results}) == 1
    assert not list(Path(results[0][1]).parent.glob(".*.tmp"))


# --- NVIDIA shards -----------------------------------------------------------------------------


def _nvidia_arrays(n: int, seq_len: int = SEQ_LEN, width: int = MAX_PRED, seed: int = 0):
    """Shard arrays like NVIDIA's writer's, with some positions lists ending early (a 0) and
    rubbish after the 0 that NVIDIA's reader must ignore."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, seq_len + 1, n)
    ids = np.zeros((n, seq_len), np.int32)
    mask = np.zeros((n, seq_len), np.int32)
    seg = np.zeros((n, seq_len), np.int32)
    pos = np.zeros((n, width), np.int32)
    lm = np.zeros((n, width), np.int32)
    for i, length in enumerate(lengths):
        ids[i, :length] = rng.integers(5, 1000, length)
        ids[i, 0], ids[i, length - 1] = CLS, SEP
        mask[i, :length] = 1
        seg[i, length // 2 : length] = 1
        k = rng.integers(1, width + 1)
        pos[i, :k] = np.sort(rng.choice(np.arange(1, length - 1), k, replace=False))
        lm[i, :k] = rng.integers(5, 1000, k)
        if k < width - 1 and i % 3 == 0:
            pos[i, k + 1] = 7  # after the first 0: not a prediction
            lm[i, k + 1] = 999
    nsp = rng.integers(0, 2, n).astype(np.int32)
    return {
        "input_ids": ids,
        "input_mask": mask,
        "segment_ids": seg,
        "masked_lm_positions": pos,
        "masked_lm_ids": lm,
        "next_sentence_labels": nsp,
    }


def _write_nvidia(path: Path, arrays, skip: tuple[str, ...] = ()) -> Path:
    """NVIDIA's writer (create_pretraining_data.py @7a4c4250), with h5py directly."""
    dtypes = {"input_mask": "i1", "segment_ids": "i1", "next_sentence_labels": "i1"}
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            if key not in skip:
                f.create_dataset(key, data=value, dtype=dtypes.get(key, "i4"), compression="gzip")
    return path


def _nvidia_reader(arrays, index: int, max_pred_length: int):
    """``pretraining_dataset.__getitem__`` of NVIDIA's run_pretraining.py, in numpy."""
    keys = ["input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids"]
    input_ids, input_mask, segment_ids, positions, lm_ids = (
        arrays[key][index].astype(np.int64) for key in keys
    )
    nsp = np.asarray(arrays["next_sentence_labels"][index].astype(np.int64))
    labels = np.ones(input_ids.shape, np.int64) * -1
    k = max_pred_length
    padded = np.flatnonzero(positions == 0)
    if len(padded) != 0:
        k = padded[0]
    labels[positions[:k]] = lm_ids[:k]
    return input_ids, segment_ids, input_mask, labels, nsp


def _datamodule(tmp_path, **data):
    from ablations.data.datamodule import BertDataModule

    data.setdefault("cache_dir", str(tmp_path / "cache"))
    return BertDataModule(DataConfig(**data), PHASE, seed=0)


def test_hdf5_round_trip_matches_nvidia_reader(tmp_path):
    import torch

    folder = tmp_path / "shards"
    (folder / "validation").mkdir(parents=True)
    train = [_nvidia_arrays(24, seed=s) for s in (1, 2)]
    for i, arrays in enumerate(train):
        _write_nvidia(folder / f"part_{i}.hdf5", arrays)
    val = _nvidia_arrays(21, seed=3)
    _write_nvidia(folder / "validation" / "part_0.hdf5", val)
    dm = _datamodule(tmp_path, source=str(folder), format="hdf5")
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) == 48 and len(dm.val_set) == 21
    largest = max(max(a["input_ids"].max(), a["masked_lm_ids"].max()) for a in train)
    assert dm.vocab_size == (largest + 1 + 7) // 8 * 8
    batches = list(dm.val_dataloader())
    assert [len(b["input_ids"]) for b in batches] == [8, 8, 5]
    batch = {key: torch.cat([b[key] for b in batches]) for key in BATCH_KEYS}
    for i in range(21):
        input_ids, segment_ids, input_mask, labels, nsp = _nvidia_reader(val, i, MAX_PRED)
        assert np.array_equal(batch["input_ids"][i].numpy(), input_ids)
        assert np.array_equal(batch["token_type_ids"][i].numpy(), segment_ids)
        assert np.array_equal(batch["attention_mask"][i].numpy(), input_mask)
        assert batch["next_sentence_labels"][i].item() == nsp
        ours = np.full(SEQ_LEN, -1)
        real = batch["masked_lm_weights"][i].numpy() > 0
        ours[batch["masked_lm_positions"][i].numpy()[real]] = batch["masked_lm_ids"][i][real]
        assert np.array_equal(ours, labels)
        assert (batch["masked_lm_positions"][i].numpy()[~real] == 0).all()
    # Training: one epoch is a permutation of the training shards, reshuffled each epoch.
    loader = dm.train_dataloader()
    epoch0 = torch.cat([b["input_ids"] for b in loader])
    loader.sampler.set_epoch(0)
    assert torch.equal(torch.cat([b["input_ids"] for b in loader]), epoch0)
    every = np.concatenate([a["input_ids"] for a in train])
    assert sorted(map(tuple, epoch0.tolist())) == sorted(map(tuple, every.tolist()))
    loader.sampler.set_epoch(1)
    assert not torch.equal(torch.cat([b["input_ids"] for b in loader]), epoch0)
    # epoch_order (for other samplers) is that order: shard by shard, over all ranks.
    order = dm.epoch_order(0)
    assert torch.equal(dm.train_set.__getitems__(order.tolist())["input_ids"], epoch0)
    assert len(set((order[:24] < 24).tolist())) == 1


def test_hdf5_validation_is_the_tail_without_a_validation_folder(tmp_path):
    arrays = _nvidia_arrays(40)
    _write_nvidia(tmp_path / "one.hdf5", arrays)
    dm = _datamodule(tmp_path, source=str(tmp_path / "one.hdf5"), format="hdf5", val_fraction=0.1)
    dm.setup()
    assert len(dm.train_set) == 36 and len(dm.val_set) == 4
    val = next(iter(dm.val_dataloader()))
    assert np.array_equal(val["input_ids"].numpy(), arrays["input_ids"][36:])
    none = _datamodule(tmp_path, source=str(tmp_path / "one.hdf5"), format="hdf5", val_fraction=0)
    assert none.val_dataloader() == []


def test_hdf5_errors(tmp_path):
    good = _nvidia_arrays(4)
    cases = [
        (_write_nvidia(tmp_path / "nokey.hdf5", good, skip=("segment_ids",)), ["'segment_ids'"]),
        (_write_nvidia(tmp_path / "short.hdf5", _nvidia_arrays(4, seq_len=16)), ["16", "32"]),
        (_write_nvidia(tmp_path / "width.hdf5", _nvidia_arrays(4, width=3)), ["3", "=5"]),
        (_write_nvidia(tmp_path / "empty.hdf5", {k: v[:0] for k, v in good.items()}), ["empty"]),
    ]
    for path, parts in cases:
        dm = _datamodule(tmp_path, source=str(path), format="hdf5")
        with pytest.raises(DataError) as error:
            dm.prepare_data()
        _one_line(error, str(path), *parts)
    (tmp_path / "sub").mkdir()
    for source, part in [("nope", "no such file or folder"), ("sub", "holds no .hdf5 files")]:
        dm = _datamodule(tmp_path, source=str(tmp_path / source), format="hdf5")
        with pytest.raises(DataError) as error:
            dm.setup()
        _one_line(error, "data.source:", source, part)


# --- the DataModule on text --------------------------------------------------------------------


def test_datamodule_text_batches(corpus_file, tmp_path):
    import torch

    dm = _datamodule(tmp_path, source=str(corpus_file), vocab_size=300, val_fraction=0.1)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch) == BATCH_KEYS
    shapes = dict.fromkeys(BATCH_KEYS, (8, SEQ_LEN)) | {"next_sentence_labels": (8,)}
    shapes |= dict.fromkeys(["masked_lm_positions", "masked_lm_ids", "masked_lm_weights"], (8, 5))
    for key, value in batch.items():
        assert value.dtype == (torch.float32 if key == "masked_lm_weights" else torch.int64), key
        assert tuple(value.shape) == shapes[key], key
    assert dm.vocab_size == dm.tokenizer.vocab_size
    # The masked tokens' entropy, from the training shard.
    shard = h5py.File(dm.train_set.slices[0][0])
    ids, k = _originals({key: shard[key][:] for key in shard})
    masked = np.concatenate([shard["masked_lm_ids"][i, : k[i]] for i in range(len(k))])
    p = np.bincount(masked)[np.bincount(masked) > 0] / len(masked)
    assert dm.unigram_entropy == pytest.approx(-(p * np.log(p)).sum())
    # Validation: a fixed order; a second DataModule reads the same cache.
    first = [b["input_ids"] for b in dm.val_dataloader()]
    again = _datamodule(tmp_path, source=str(corpus_file), vocab_size=300, val_fraction=0.1)
    second = [b["input_ids"] for b in again.val_dataloader()]
    assert len(first) == len(second) > 0
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))


def test_validation_documents_are_held_out(tmp_path):
    """Every document has its own words (in a given vocab_file): the tokens of each example
    tell which documents it came from; train and validation never share one."""
    documents = [
        [" ".join(f"d{d}w{(d + s + j) % 7}" for j in range(6)) + "." for s in range(5)]
        for d in range(30)
    ]
    corpus = _write_text(tmp_path / "docs.txt", documents)
    words = sorted({w.rstrip(".") for doc in documents for line in doc for w in line.split()})
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *words]) + "\n")
    dm = _datamodule(tmp_path, source=str(corpus), vocab_file=str(vocab), val_fraction=0.2)
    dm.setup()
    tokens = dm.tokenizer.tokens

    def documents_of(dataset) -> set[int]:
        batch = dataset.__getitems__(range(len(dataset)))
        original, _ = _originals({key: value.numpy() for key, value in batch.items()})
        return {int(t[1 : t.index("w")]) for t in tokens(original.ravel()) if t.startswith("d")}

    train, val = documents_of(dm.train_set), documents_of(dm.val_set)
    assert train.isdisjoint(val)
    assert val == set(split_documents(30, 0.2, DataConfig().seed)[1])
    assert len(train) == 24


def test_sampler_shards_by_rank(tmp_path):
    from torch.utils.data import DistributedSampler

    from ablations.data.datamodule import ShardDataset, ShardSampler

    shards = []
    for i, n in enumerate((10, 7)):
        shards.append((_write_nvidia(tmp_path / f"{i}.hdf5", _nvidia_arrays(n)), 0, n))
    dataset = ShardDataset(shards)
    samplers = [
        ShardSampler(dataset, num_replicas=2, rank=r, shuffle=True, seed=4, drop_last=True)
        for r in (0, 1)
    ]
    assert isinstance(samplers[0], DistributedSampler)  # Lightning keeps it as is
    order = [list(s) for s in samplers]
    assert [len(o) for o in order] == [8, 8]
    assert set(order[0]).isdisjoint(order[1]) and set(order[0] + order[1]) <= set(range(17))
    # Shard by shard: all of one shard's examples come before the other's.
    both = [i for pair in zip(*order, strict=True) for i in pair]
    assert sum(1 for x, y in zip(both, both[1:], strict=False) if (x < 10) != (y < 10)) <= 2


def test_the_sweep_s_reference_line_reads_a_sample_of_many_shards(tmp_path):
    """Preparing a sweep on NVIDIA's shards (a login node) computes the unigram entropy from a
    sample of evenly spread shards, not one pass over all: with 8 shards and a sample of 2, the
    first and the last; shards 1-6 hold other tokens, so the value tells which were read."""
    from ablations.data import hdf5
    from ablations.data.datamodule import BertDataModule

    folder = tmp_path / "shards"
    folder.mkdir()
    arrays = []
    for i in range(8):
        a = _nvidia_arrays(40, seed=i)
        if i not in (0, 7):
            a["masked_lm_ids"] = np.where(a["masked_lm_ids"] > 0, 4, 0).astype(np.int32)
        arrays.append(a)
        _write_nvidia(folder / f"part_{i}.hdf5", a)
    config = DataConfig(
        source=str(folder), format="hdf5", val_fraction=0.0, cache_dir=str(tmp_path / "cache")
    )
    dm = BertDataModule(config, PHASE, seed=0)
    entropy, source = dm.sampled_unigram_entropy(2)
    counts = sum(
        np.pad(c, (0, 1000 - len(c)))
        for c in (
            hdf5.token_counts(a["masked_lm_ids"], a["masked_lm_positions"])
            for a in (arrays[0], arrays[7])
        )
    )
    assert entropy == pytest.approx(hdf5.entropy_of(counts))
    assert source == "2 of 8 training shards"
    assert entropy != pytest.approx(dm.unigram_entropy)  # the full pass differs
    assert dm.sampled_unigram_entropy(8) == (dm.unigram_entropy, "all 8 training shards")


def test_each_data_building_stage_says_what_it_builds_and_cached_ones_stay_silent(
    tmp_path, corpus_file, capsys, monkeypatch
):
    """A cold cache (issue 21, item 5): the corpus, the vocabulary and the examples each print a
    start line, progress lines (here every step: ``every`` 0) and a "built in" line on stderr,
    nothing on stdout; the same calls on the warm cache print nothing at all."""
    from ablations.data import status

    monkeypatch.setattr(status.Stage, "__init__", _every_step(status.Stage.__init__))

    def build_all() -> None:
        build_embedded(tmp_path, packages=("jinja2",), min_words=10**9, workers=1)
        tok = train_wordpiece(read_text(corpus_file), 300, True, tmp_path)[0]
        _train_examples(read_text(corpus_file), tok, tmp_path, dupe_factor=2)

    build_all()
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    for what in ("corpus (prose", "vocabulary (WordPiece, 300", "train examples (sequence"):
        mine = [x for x in lines if x.startswith(f"data: {what}")]
        assert "building" in mine[0] and "built in" in mine[-1], lines
    vocab = [x for x in lines if x.startswith("data: vocabulary")]
    assert any("1/2 passes" in x for x in vocab) and any("2/2 passes" in x for x in vocab)
    examples = [x for x in lines if x.startswith("data: train examples")]
    progress = [x for x in examples if "documents × passes" in x]
    done, total = progress[-1].split(": ")[-1].split()[0].split("/")
    assert done == total and int(total) % 2 == 0  # every document of both passes
    build_all()
    assert capsys.readouterr() == ("", "")


def _every_step(init):
    def every_step(self, *args, **kwargs):
        init(self, *args, **{**kwargs, "every": 0.0})

    return every_step
