"""RunConfig: strict construction from plain data, one-line errors naming the key path."""

from __future__ import annotations

import pytest

from ablations.config import ConfigError, RunConfig

GOOD = {
    "model": {"size": "tiny"},
    "data": {"source": "embedded", "vocab_size": 512},
    "optimizer": {"preset": "apex", "overrides": {"prenorm": "none"}, "phase2": "fresh"},
    "phases": [
        {"steps": 10, "global_batch": 64, "micro_batch": 16, "seq_len": 32, "max_predictions": 5},
        {"steps": 4, "global_batch": 32, "micro_batch": 8, "seq_len": 64, "max_predictions": 10},
    ],
    "seed": 3,
}


def test_round_trip_through_plain_data():
    config = RunConfig.from_dict(GOOD)
    assert RunConfig.from_dict(config.to_dict()) == config
    assert config.phases[0].accumulation(1) == 4
    assert config.phases[1].accumulation(2) == 2
    assert dict(config.optimizer.overrides) == {"prenorm": "none"}


def _with(path: str, value):
    """GOOD with one key (dotted path, list indices as numbers) replaced."""
    import copy

    raw = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = raw
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return raw


BAD = [
    ("seeds", 1, "seeds: unknown key"),
    ("model.size", "huge", "model.size: expected one of"),
    ("model.layers", 3, "model.layers: unknown key"),
    ("phases.0.steps", "ten", "phases[0].steps: expected int"),
    ("phases.0.steps", 0, "phases[0].steps: expected an integer >= 1"),
    ("phases.1.global_batch", 30, "phases[1].global_batch: expected a multiple of micro_batch=8"),
    ("phases.0.max_predictions", 40, "phases[0].max_predictions: expected an integer in"),
    ("phases.0.lr", True, "phases[0].lr: expected a number"),
    ("phases.0.warmup", 1.5, "phases[0].warmup: expected a fraction"),
    ("phases.0.schedule", "cosine", "phases[0].schedule: expected one of"),
    ("optimizer.preset", "lamb", "optimizer.preset: expected one of"),
    ("optimizer.overrides", {"clip": 1.0}, "optimizer.overrides.clip: expected a knob"),
    ("optimizer.overrides", {"prenorm": "clipp"}, "optimizer.overrides: prenorm='clipp'"),
    ("optimizer.phase2", "keep", "optimizer.phase2: expected one of"),
    ("precision", 16, "precision: expected one of"),
    ("data.vocab_size", 10, "data.vocab_size: expected an integer >= 128"),
    ("phases", [], "phases: expected a list of 1 or 2 phases"),
    ("model", 3, "model: expected a mapping"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_values_name_the_key(path, value, message):
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(_with(path, value))
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_global_batch_must_split_over_devices():
    raw = {**GOOD, "devices": 3}
    with pytest.raises(ConfigError, match=r"phases\[0\]\.global_batch=64 is not a multiple"):
        RunConfig.from_dict(raw)
