"""Config files and values read by the harness: a key given twice is one error line naming its
key path and lines (run configs, override values, any YAML through the loader), YAML merges
still work, and every config dataclass names a missing required key instead of a TypeError."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import yaml

from ablations.__main__ import load_config, main
from ablations.config import ConfigError, RunConfig, build, check_key
from ablations.core.yamlio import DuplicateKeyError, Loader

RUN = """\
model: {size: tiny}
phases:
  - steps: 3
    lr: 1.0e-3
seed: 1
"""

#: (text in RUN, its replacement giving a key twice, the key path, the two lines)
DUPLICATED_RUN = [
    ("seed: 1\n", "seed: 1\nseed: 2\n", "seed", (5, 6)),
    ("    lr: 1.0e-3\n", "    lr: 1.0e-3\n    lr: 2.0e-3\n", "phases.0.lr", (4, 5)),
    ("model: {size: tiny}", "model: {size: tiny, size: mini}", "model.size", (1, 1)),
    ("seed: 1\n", "seed: 1\nmodel: {size: mini}\n", "model", (1, 6)),
]


@pytest.mark.parametrize(
    ("old", "new", "key", "lines"), DUPLICATED_RUN, ids=[d[2] for d in DUPLICATED_RUN]
)
def test_run_config_with_a_duplicated_key_is_one_line_exit_2_and_no_run_dir(
    tmp_path, capsys, old, new, key, lines
):
    assert RUN.count(old) == 1
    cfg, run_dir = tmp_path / "run.yaml", tmp_path / "run"
    cfg.write_text(RUN.replace(old, new))
    assert main(["train", "--config", str(cfg), "--run-dir", str(run_dir)]) == 2
    first, again = lines
    assert capsys.readouterr().err == (
        f"error: {key}: duplicate key in {cfg}: expected each key once per mapping, "
        f"got it at lines {first} and {again}\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]


def test_override_value_with_a_duplicated_key_is_one_line_exit_2(tmp_path, capsys):
    run_dir = tmp_path / "run"
    value = "{prenorm: none, prenorm: clip}"
    assert main(["train", "--run-dir", str(run_dir), f"optimizer.overrides={value}"]) == 2
    assert capsys.readouterr().err == (
        f"error: optimizer.overrides.prenorm: duplicate key in {value!r}: expected each key once "
        "per mapping\n"
    )
    assert not run_dir.exists()


def test_run_config_merge_keys_work_and_a_key_next_to_a_merge_is_no_duplicate(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "phases:\n"
        "  - &p1 {steps: 3, seq_len: 32, max_predictions: 5, lr: 1.0e-3}\n"
        "  - {<<: *p1, lr: 5.0e-4}\n"
    )
    config = load_config(cfg, [])
    assert [(p.steps, p.seq_len, p.lr) for p in config.phases] == [(3, 32, 1e-3), (3, 32, 5e-4)]


@pytest.mark.parametrize(
    ("text", "path", "lines"),
    [
        pytest.param("a: 1\nb: 2\na: 3\n", "a", (1, 3), id="top"),
        pytest.param("e:\n  t:\n    - {lr: 1, lr: 2}\n", "e.t.0.lr", (3, 3), id="in-a-list"),
        # keys that the constructed dict would merge: PyYAML keeps the last one silently
        pytest.param("1: a\n0x1: b\n", "1", (1, 2), id="int-spellings"),
        pytest.param("x: {1: a, true: b}\n", "x.True", (1, 1), id="one-and-true"),
        # a duplicate inside an anchor is reported where it is written, not at an alias
        pytest.param("a: &a {x: 1, x: 2}\nb: *a\n", "a.x", (1, 1), id="in-an-anchor"),
        pytest.param("a: &a {x: 1}\nb:\n  <<: *a\n  <<: *a\n", "b.<<", (3, 4), id="two-merges"),
    ],
)
def test_loader_rejects_duplicated_keys_with_their_path_and_lines(text, path, lines):
    with pytest.raises(DuplicateKeyError) as info:
        yaml.load(text, Loader=Loader)
    assert (info.value.path, info.value.lines) == (path, lines)
    assert info.value.merge == path.endswith("<<")


@pytest.mark.parametrize(
    ("text", "data"),
    [
        pytest.param("a: &a {x: 1, y: 2}\nb: {<<: *a, x: 3}\n", {"x": 3, "y": 2}, id="override"),
        pytest.param(
            "a: &a {x: 1}\nc: &c {y: 1}\nb: {<<: [*a, *c], y: 2}\n", {"x": 1, "y": 2}, id="list"
        ),
        pytest.param(  # a merged mapping that merges itself, overridden at each level
            "a: &a {x: 1}\nm: &m {<<: *a, x: 2}\nb: {<<: *m, x: 3}\n", {"x": 3}, id="nested"
        ),
    ],
)
def test_loader_keeps_yaml_merge_semantics(text, data):
    assert yaml.load(text, Loader=Loader)["b"] == data


def test_loader_walks_recursive_aliases_once():
    data = yaml.load("a: &a [1, *a]\n", Loader=Loader)
    assert data["a"][1] is data["a"]


@dataclass(frozen=True)
class _Part:
    name: str
    size: int = 1


@dataclass(frozen=True)
class _Whole:
    part: _Part
    parts: tuple[_Part, ...] = ()


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ({}, "top.part: required key missing"),
        ({"part": {"size": 2}}, "top.part.name: required key missing"),
        (
            {"part": {"name": "a"}, "parts": [{"size": 2}]},
            "top.parts[0].name: required key missing",
        ),
        ({"prt": {}}, "top.prt: unknown key; expected one of ['part', 'parts']"),  # first
    ],
)
def test_build_names_a_missing_required_key(raw, error):
    with pytest.raises(ConfigError) as info:
        build(_Whole, raw, "top")
    assert str(info.value) == error


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("phases.0.lr", None),
        ("optimizer.overrides.betas.1", None),  # a free mapping takes any key
        ("data.vocab_file", None),  # Optional[str]
        (
            "phases.0.lrr",
            r"w\.phases\.0\.lrr: unknown key; expected one of \['data_source', 'decay_power'",
        ),
        ("phases.first", r"w\.phases\.first: expected a list index, got 'first'"),
        ("data.vocab_file.x", r"w\.data\.vocab_file\.x: unknown key; data\.vocab_file is not a"),
        ("log..val_every", r"w\.log\.: expected a dotted path of keys, got 'log\.\.val_every'"),
    ],
)
def test_check_key_follows_the_field_types(key, error):
    if error is None:
        check_key(RunConfig, key, "w")
        return
    with pytest.raises(ConfigError) as info:
        check_key(RunConfig, key, "w")
    assert re.match(error, str(info.value)), info.value
