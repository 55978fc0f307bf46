"""The sweep file: the default one is valid, its GPU block too, and every malformed file gets its
own one-line error with exit status 2, leaving nothing behind."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pytest
import yaml
from sweep_files import TINY

import lamb_variants
from ablations.__main__ import main
from ablations.config import ConfigError
from ablations.sweep import study as studies
from ablations.sweep.experiment import time_seconds
from ablations.sweep.slots import slots_ahead, total_slots
from ablations.sweep.spec import load_sweep, plan

REPO = Path(__file__).resolve().parents[1]

WORKLOAD = TINY
VALID = {
    "results": "out",
    "experiments": {
        "e": {
            "workload": WORKLOAD,
            "preset": "nvlamb",
            "variants": {"grid": {"optimizer.overrides.prenorm": ["clip", "none"]}},
            "tune": {"phases.0.lr": {"low": 1e-3, "high": 1e-1, "log": True}},
            "search": {"method": "qmc", "budget": 3},
            "seeds": 2,
        }
    },
}


def _mutate(path: str, value) -> dict:
    """VALID with ``value`` at a "/"-separated path (``None`` deletes the key)."""
    raw = copy.deepcopy(VALID)
    *parents, last = path.split("/")
    node = raw
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return raw


E = "experiments/e"
MALFORMED = [
    # (mutation path, value, expected error, anchored at the start of the message); the file is
    # written by yaml.safe_dump, which sorts keys: where order matters, it is alphabetical.
    ("experimnts", {}, r"experimnts: unknown key; expected one of \["),
    ("experiments", None, r"experiments: expected a mapping of experiment names"),
    (f"{E}/seed", 3, r"experiments\.e\.seed: unknown key; expected one of \["),
    (f"{E}/seeds", "three", r"experiments\.e\.seeds: expected int, got 'three'"),
    (f"{E}/seeds", 0, r"experiments\.e\.seeds: expected an integer >= 1, got 0"),
    (f"{E}/workload/model/sise", "tiny", r"experiments\.e\.workload\.model\.sise: unknown key"),
    (f"{E}/workload/phases/0/lr", -1.0, r"experiments\.e\.workload\.phases\[0\]\.lr: expected"),
    (
        f"{E}/variants/named",
        {"a": {"optimizer.overrides.prenorm": "none"}},
        r"experiments\.e\.variants\.named\.a\.optimizer\.overrides\.prenorm: also set by "
        r"experiments\.e\.variants\.grid\.optimizer\.overrides\.prenorm; set it in one place$",
    ),
    (f"{E}/variants", {}, r"experiments\.e\.variants: expected 'grid', 'named' or both$"),
    (
        f"{E}/variants/grid",
        {"optimizer.overides.prenorm": ["clip"]},
        r"experiments\.e\.variants\.grid\.optimizer\.overides: unknown key; expected one of",
    ),
    (
        f"{E}/variants/grid",
        {"optimizer.overrides.prenorm": ["clip", "sometimes"]},
        r"experiments\.e\.variants\.grid \(prenorm=sometimes\): optimizer\.overrides",
    ),
    (
        f"{E}/variants/grid",
        {"optimizer.overrides.prenorm": []},
        r"experiments\.e\.variants\.grid\.optimizer\.overrides\.prenorm: expected a non-empty",
    ),
    (
        f"{E}/variants",
        {"named": {"a": "clip"}},
        r"experiments\.e\.variants\.named\.a: expected a mapping, got .clip.",
    ),
    (
        f"{E}/tune/phases.0.lr/high",
        1e-4,
        r"experiments\.e\.tune\.phases\.0\.lr\.high: expected a "
        r"number > low=0\.001",
    ),
    (
        f"{E}/tune/phases.0.lr/low",
        0.0,
        r"experiments\.e\.tune\.phases\.0\.lr\.low: expected a "
        r"number > 0 with log: true",
    ),
    (
        f"{E}/tune",
        {"phases.0.lrr": {"low": 1e-3, "high": 1e-2}},
        r"experiments\.e\.tune\.phases\.0\.lrr: unknown key; expected one of "
        r"\['data_source', 'decay_power'",
    ),
    (
        f"{E}/search/method",
        "bayes",
        r"experiments\.e\.search\.method: expected one of \['qmc', 'random', 'grid', 'tpe'\]",
    ),
    (f"{E}/search/budget", 0, r"experiments\.e\.search\.budget: expected an integer >= 1"),
    (
        f"{E}/search/method",
        "grid",
        r"experiments\.e\.tune\.phases\.0\.lr: expected 'values: \[\.\.\.\]' for search\.method=",
    ),
    (f"{E}/tune", None, r"experiments\.e\.search\.budget: expected 1 when nothing is tuned"),
    (f"{E}/objective", "val/acc", r"experiments\.e\.objective: expected one of \['val/mlm_loss'"),
    (f"{E}/pruner", {"type": "asha"}, r"experiments\.e\.pruner\.type: expected one of"),
    ("slurm", {"time": "4 hours"}, r"slurm\.time: expected a SLURM time like 04:00:00"),
    (
        "slurm",
        {"array_size": 2, "parallelism": 3},
        r"slurm\.parallelism: expected an integer in \[1, array_size=2\], got 3",
    ),
    ("slurm", {"extra_sbatch": ["qos=high"]}, r"slurm\.extra_sbatch\[0\]: expected an option"),
    (
        f"{E}/slurm",
        {"tasks_per_node": 2},
        r"experiments\.e\.slurm\.tasks_per_node: expected the workload's devices=1",
    ),
    (
        f"{E}/slurm",
        {"time": "00:01:00", "signal_seconds": 120},
        r"experiments\.e\.slurm\.signal_seconds: expected seconds in \(0, time=60\)",
    ),
    (
        "storage",
        "sqlite:///study.db",
        r"storage: expected 'journal' or a postgresql:// or mysql://",
    ),
    (
        "retry",
        {"heartbeat_seconds": 30, "grace_seconds": 40},
        r"retry\.grace_seconds: expected at least 2 x heartbeat_seconds = 60",
    ),
    ("experiments", {"my exp": VALID["experiments"]["e"]}, r"experiments\.my exp: expected a name"),
    ("local", {"workers": 0}, r"local\.workers: expected an integer >= 1, got 0"),
    # --- required keys ----------------------------------------------------------------------
    (f"{E}/variants", None, r"experiments\.e\.variants: required key missing$"),
    (f"{E}/workload", None, r"experiments\.e\.workload: required key missing$"),
    # --- the same value set in two places ---------------------------------------------------
    (
        f"{E}/variants/grid",
        {"phases.0.lr": [0.01, 0.02]},
        r"experiments\.e\.variants\.grid\.phases\.0\.lr: also tuned by "
        r"experiments\.e\.tune\.phases\.0\.lr; set it in one place$",
    ),
    (
        f"{E}/variants",
        {"named": {"slow": {}, "fast": {"phases.0.lr": 0.05}}},
        r"experiments\.e\.variants\.named\.fast\.phases\.0\.lr: also tuned by "
        r"experiments\.e\.tune\.phases\.0\.lr; set it in one place$",
    ),
    (
        f"{E}/variants",
        {"named": {"a": {}, "b": {"phases": [{**WORKLOAD["phases"][0], "lr": 0.05}]}}},
        r"experiments\.e\.variants\.named\.b\.phases: also tuned by "
        r"experiments\.e\.tune\.phases\.0\.lr; set it in one place$",
    ),
    (
        f"{E}/variants",
        {"named": {"a": {"optimizer.overrides": {"prenorm": "none"}, "phases.00.lr": 0.1}}},
        r"experiments\.e\.variants\.named\.a\.phases\.00\.lr: also tuned by "
        r"experiments\.e\.tune\.phases\.0\.lr",
    ),
    (
        f"{E}/variants",
        {
            "named": {
                "a": {
                    "optimizer.overrides": {"prenorm": "none"},
                    "optimizer.overrides.prenorm": "clip",
                }
            }
        },
        r"experiments\.e\.variants\.named\.a\.optimizer\.overrides\.prenorm: also set by "
        r"experiments\.e\.variants\.named\.a\.optimizer\.overrides; set it in one place$",
    ),
    (
        f"{E}/variants/grid",
        {"optimizer.overrides.prenorm": ["clip"], "optimizer.overrides": [{"eps": 1e-3}]},
        r"experiments\.e\.variants\.grid\.optimizer\.overrides\.prenorm: also set by "
        r"experiments\.e\.variants\.grid\.optimizer\.overrides; set it in one place$",
    ),
    (
        f"{E}/tune/phases.0",
        {"low": 0.1, "high": 0.2},
        r"experiments\.e\.tune\.phases\.0\.lr: also set by experiments\.e\.tune\.phases\.0;",
    ),
    (
        f"{E}/variants/grid",
        {"seed": [1, 2]},
        r"experiments\.e\.variants\.grid\.seed: expected a path the sweep does not set, "
        r"got 'seed'",
    ),
    (
        f"{E}/tune/seed",
        {"low": 0, "high": 9},
        r"experiments\.e\.tune\.seed: expected a path the sweep does not set",
    ),
    # --- variants that are the same run -----------------------------------------------------
    (
        f"{E}/variants",
        {"named": {"a": {"optimizer.overrides.eps": 1e-3}, "b": {"optimizer.overrides.eps": 1e-3}}},
        r"experiments\.e\.variants\.named\.b: expected settings that differ from variant 'a', "
        r"got the same run config once defaults and the preset's knobs are applied$",
    ),
    (
        f"{E}/variants",
        {"named": {"clip": {"optimizer.overrides.prenorm": "clip"}, "nvlamb": {}}},
        r"experiments\.e\.variants\.named\.nvlamb: expected settings that differ from "
        r"variant 'clip'",
    ),
    (
        f"{E}/variants",
        {"named": {"apex": {"optimizer.preset": "apex"}, "timm": {"optimizer.preset": "timm"}}},
        r"experiments\.e\.variants\.named\.timm: expected settings that differ from "
        r"variant 'apex'",
    ),
    (
        f"{E}/variants",
        {"named": {"a": {"phases.0.warmup": 0.2843}, "b": {"data.seed": 12345}}},
        r"experiments\.e\.variants\.named\.b: expected settings that differ from variant 'a'",
    ),
    (
        f"{E}/variants/grid",
        {"optimizer.overrides.prenorm": ["clip", "none"], "optimizer.overrides.eps": [1, 1.0]},
        r"experiments\.e\.variants\.grid \(eps=1\.0,prenorm=clip\): expected settings that "
        r"differ from variant 'eps=1,prenorm=clip'",
    ),
    # --- paths that are not in the run config -----------------------------------------------
    (
        f"{E}/variants",
        {"named": {"a": {"optimizer.overides.prenorm": "none"}}},
        r"experiments\.e\.variants\.named\.a\.optimizer\.overides: unknown key; expected "
        r"one of \['factory', 'groups', 'overrides', 'phase2', 'preset', 'weight_decay'\]",
    ),
    (
        f"{E}/variants",
        {"named": {"a": {"phases.0.lrr": 0.1}}},
        r"experiments\.e\.variants\.named\.a\.phases\.0\.lrr: unknown key; expected one of",
    ),
    (
        f"{E}/variants",
        {"named": {"a": {"phases.3.lr": 0.1}}},
        r"experiments\.e\.variants\.named\.a\.phases\.3: expected an index below 1$",
    ),
    (
        f"{E}/variants/grid",
        {"phases.first.lr": [0.1]},
        r"experiments\.e\.variants\.grid\.phases\.first: expected a list index, got 'first'",
    ),
    (
        f"{E}/variants/grid",
        {"precision.bits": [16]},
        r"experiments\.e\.variants\.grid\.precision\.bits: unknown key; precision is not a "
        r"mapping or list",
    ),
    (
        f"{E}/variants",
        {"named": {"a": {"phases..lr": 0.1}}},
        r"experiments\.e\.variants\.named\.a\.phases\.: expected a dotted path of keys",
    ),
    (
        f"{E}/tune",
        {"phases.3.lr": {"low": 1e-3, "high": 1e-2}},
        r"experiments\.e\.tune\.phases\.3: expected an index below 1$",
    ),
    (
        f"{E}/tune",
        {"optimizer.overides.eps": {"low": 1e-8, "high": 1e-3}},
        r"experiments\.e\.tune\.optimizer\.overides: unknown key; expected one of",
    ),
    (
        f"{E}/tune",
        {"phases.0.lr.low": {"low": 1e-3, "high": 1e-2}},
        r"experiments\.e\.tune\.phases\.0\.lr\.low: unknown key; phases\.0\.lr is not a "
        r"mapping or list",
    ),
    # --- more shapes and values -------------------------------------------------------------
    (f"{E}/variants", "grid", r"experiments\.e\.variants: expected a mapping, got str"),
    (
        f"{E}/variants",
        {"named": {}},
        r"experiments\.e\.variants\.named: expected at least one variant",
    ),
    (
        f"{E}/variants/grid",
        {"optimizer.overrides.prenorm": ["clip", "clip"]},
        r"experiments\.e\.variants\.grid\.optimizer\.overrides\.prenorm: expected a non-empty "
        r"list of distinct values",
    ),
    (
        f"{E}/tune/phases.0.lr",
        {"lo": 1e-3, "high": 1e-2},
        r"experiments\.e\.tune\.phases\.0\.lr\.lo: unknown key; expected one of \['high'",
    ),
    (f"{E}/tune/phases.0.lr", 0.01, r"experiments\.e\.tune\.phases\.0\.lr: expected a mapping"),
    (f"{E}/preset", "lambda", r"experiments\.e\.workload\.optimizer\.preset: expected one of"),
    (f"{E}/default", "yes", r"experiments\.e\.default: expected bool, got 'yes'"),
    (f"{E}/search/seed", 1.5, r"experiments\.e\.search\.seed: expected int, got 1\.5"),
    ("results", 3, r"results: expected str, got 3"),
    (
        f"{E}/workload/devices",
        2,
        r"experiments\.e\.slurm\.tasks_per_node: expected the workload's devices=2",
    ),
]


@pytest.mark.parametrize(
    ("path", "value", "error"), MALFORMED, ids=[m[0] + ":" + m[2][:30] for m in MALFORMED]
)
def test_malformed_sweep_file_is_one_line_error_exit_2_and_nothing_created(
    tmp_path, capsys, path, value, error
):
    file = tmp_path / "sweep.yaml"
    file.write_text(yaml.safe_dump(_mutate(path, value)))
    assert main(["sweep", "--file", str(file), "--local"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert re.match("error: " + error, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


#: A valid sweep file as written by hand: a template merged into the workload, with a merged
#: key overridden (``data``), which YAML's merge rule allows and is not a duplicate key.
TEXT = """\
results: out
templates:
  tiny: &tiny
    model: {size: tiny}
    data: {vocab_size: 512}
    phases:
      - {steps: 8, global_batch: 16, micro_batch: 8, seq_len: 32, max_predictions: 5, lr: 0.01}
experiments:
  e:
    workload:
      <<: *tiny
      data: {vocab_size: 1024}
    preset: nvlamb
    variants:
      named:
        clip: {optimizer.overrides.prenorm: clip}
        none: {optimizer.overrides.prenorm: none}
    tune:
      phases.0.lr: {low: 1.0e-3, high: 1.0e-1, log: true}
    search: {method: qmc, budget: 3}
    seeds: 2
"""

#: (text in TEXT, its replacement giving a key twice, the key path in the error)
DUPLICATED = [
    ("results: out\n", "results: out\nresults: elsewhere\n", r"results"),
    ("results: out\n", "results: out\nslurm: {mem: 4G, mem: 8G}\n", r"slurm\.mem"),
    ("experiments:\n  e:\n", "experiments:\n  e: {}\n  e:\n", r"experiments\.e"),
    ("    seeds: 2\n", "    seeds: 2\n    seeds: 3\n", r"experiments\.e\.seeds"),
    ("budget: 3}", "budget: 3, budget: 3}", r"experiments\.e\.search\.budget"),
    (
        "    data: {vocab_size: 512}\n",
        "    data: {vocab_size: 512, vocab_size: 1024}\n",
        r"templates\.tiny\.data\.vocab_size",
    ),
    ("lr: 0.01}", "lr: 0.01, lr: 0.02}", r"templates\.tiny\.phases\.0\.lr"),
    (
        "      data: {vocab_size: 1024}\n",
        "      data: {vocab_size: 1024}\n      data: {vocab_size: 2048}\n",
        r"experiments\.e\.workload\.data",
    ),
    (
        "      <<: *tiny\n",
        "      <<: *tiny\n      <<: *tiny\n",
        r"experiments\.e\.workload\.<<",
    ),
    (
        "log: true}",
        "log: true, high: 1.0}",
        r"experiments\.e\.tune\.phases\.0\.lr\.high",
    ),
    (
        "    tune:\n",
        "    tune:\n      phases.0.lr: {low: 1.0e-2, high: 2.0e-1}\n",
        r"experiments\.e\.tune\.phases\.0\.lr",
    ),
    (
        "clip: {optimizer.overrides.prenorm: clip}",
        "clip: {optimizer.overrides.prenorm: clip, optimizer.overrides.prenorm: none}",
        r"experiments\.e\.variants\.named\.clip\.optimizer\.overrides\.prenorm",
    ),
    (
        "        none: {optimizer.overrides.prenorm: none}\n",
        "        none: {optimizer.overrides.prenorm: none}\n        clip: {}\n",
        r"experiments\.e\.variants\.named\.clip",
    ),
]


def test_hand_written_file_merges_a_template_and_overrides_a_merged_key(tmp_path):
    file = tmp_path / "sweep.yaml"
    file.write_text(TEXT)
    p = plan(load_sweep(file), "e")
    config = p.config("none", p.points[0], 0)
    assert config.data.vocab_size == 1024  # the key next to the merge wins
    assert (config.model.size, config.phases[0].steps) == ("tiny", 8)  # merged
    assert config.optimizer.overrides == {"prenorm": "none"}


@pytest.mark.parametrize(
    ("old", "new", "key"), DUPLICATED, ids=[d[2].replace("\\", "") for d in DUPLICATED]
)
def test_duplicated_key_is_one_line_error_exit_2_and_nothing_created(
    tmp_path, capsys, old, new, key
):
    assert TEXT.count(old) == 1
    file = tmp_path / "sweep.yaml"
    file.write_text(TEXT.replace(old, new))
    assert main(["sweep", "--file", str(file), "--local"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    hint = " (merge several anchors with <<: [*a, *b])" if key.endswith("<<") else ""
    pattern = (
        f"error: ({key}): duplicate key in {re.escape(str(file))}: expected each key once per "
        rf"mapping, got it at lines (\d+) and (\d+){re.escape(hint)}\n$"
    )
    m = re.match(pattern, err)
    assert m, err
    # both lines hold the key, the second one after the first
    name = m.group(1).rsplit(".", 1)[-1]
    first, again = int(m.group(2)), int(m.group(3))
    lines = file.read_text().splitlines()
    assert f"{name}:" in lines[first - 1] and f"{name}:" in lines[again - 1]
    assert first < again or lines[first - 1].count(f"{name}:") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


def test_the_malformed_tables_hold_at_least_40_files():
    assert len(MALFORMED) >= 30 and len(MALFORMED) + len(DUPLICATED) >= 40


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("experiments: {e: [1, 2", r"error: .*sweep\.yaml is not valid YAML: "),
        ("- 1\n- 2\n", r"error: .*sweep\.yaml: expected a mapping with 'experiments'"),
    ],
)
def test_unparsable_sweep_file(tmp_path, capsys, text, error):
    file = tmp_path / "sweep.yaml"
    file.write_text(text)
    assert main(["sweep", "--file", str(file)]) == 2
    err = capsys.readouterr().err
    assert re.match(error, err) and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


def test_missing_file_and_unknown_experiment(tmp_path, capsys):
    assert main(["sweep", "--file", str(tmp_path / "nope.yaml")]) == 2
    assert re.match(
        r"error: .*nope\.yaml: cannot read .*nope\.yaml: No such file", capsys.readouterr().err
    )
    file = tmp_path / "sweep.yaml"
    file.write_text(yaml.safe_dump(VALID))
    assert main(["sweep", "--file", str(file), "--experiment", "f"]) == 2
    assert capsys.readouterr().err == (
        "error: experiment 'f': not in the sweep file; expected one of ['e']\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


def test_a_changed_definition_is_refused_before_anything_is_touched(tmp_path, capsys):
    file = tmp_path / "sweep.yaml"
    file.write_text(yaml.safe_dump(VALID))
    sweep = load_sweep(file)
    exp_dir = tmp_path / "out" / "e"
    exp_dir.mkdir(parents=True)
    (exp_dir / "sweep.json").write_text('{"name": "e", "variants": {}}')
    assert main(["sweep", "--file", str(file), "--local"]) == 2
    err = capsys.readouterr().err
    assert re.match(r"error: .*out/e: holds experiment 'e' with a different definition", err)
    assert sorted(p.name for p in exp_dir.iterdir()) == ["sweep.json"]
    with pytest.raises(studies.SpecChangedError):
        studies.check_snapshot(plan(sweep, "e"), exp_dir)


def test_a_snapshot_from_an_older_harness_resumes_unless_a_value_differs(tmp_path):
    """A sweep.json written before an experiment option existed (here ``targets``) lacks its key:
    the option at its default resumes the experiment; set to anything else it is refused."""
    file = tmp_path / "sweep.yaml"
    file.write_text(yaml.safe_dump(VALID))
    current = plan(load_sweep(file), "e")
    old = json.loads(json.dumps(current.to_dict()))
    del old["experiment"]["targets"]
    exp_dir = tmp_path / "out" / "e"
    exp_dir.mkdir(parents=True)
    (exp_dir / "sweep.json").write_text(json.dumps(old))
    assert studies.check_snapshot(current, exp_dir) == old  # kept as it was written

    with_targets = copy.deepcopy(VALID)
    with_targets["experiments"]["e"]["targets"] = [6.0]
    file.write_text(yaml.safe_dump(with_targets))
    with pytest.raises(studies.SpecChangedError):
        studies.check_snapshot(plan(load_sweep(file), "e"), exp_dir)
    old["experiment"]["seeds"] += 1  # an existing key that differs is refused as before
    (exp_dir / "sweep.json").write_text(json.dumps(old))
    with pytest.raises(studies.SpecChangedError):
        studies.check_snapshot(current, exp_dir)


# --- the default file ---------------------------------------------------------------------------


def test_the_nvlamb_sweep_file_holds_the_four_cpu_reproductions():
    sweep = load_sweep(REPO / "sweeps" / "nvlamb_cpu.yaml")
    defaults = [n for n, e in sweep.experiments.items() if e.default]
    assert defaults == ["figure2_prenorm", "figure3_decay", "bias_correction", "eps_regime"]
    fig2 = plan(sweep, "figure2_prenorm")
    assert {v["optimizer.overrides.prenorm"] for v in fig2.variants.values()} == {"clip", "none"}
    fig3 = plan(sweep, "figure3_decay")
    config = fig3.config("degree_1.0", {}, 0)
    assert len(config.phases) == 2
    assert [p.decay_power for p in config.phases] == [1.0, 1.0]
    eps = plan(sweep, "eps_regime")
    assert len(eps.variants) == 12
    assert {v["optimizer.overrides.eps"] for v in eps.variants.values()} == {1e-6, 1e-3}
    # thousands of small steps rather than a hundred big ones (the pilot's lesson)
    for name in defaults:
        p = plan(sweep, name)
        phase = p.config(next(iter(p.variants)), {}, 0).phases[0]
        assert phase.steps >= 500 and phase.global_batch <= 64


def _gpu_file(tmp_path, phase1: str = "phase1", phase2: str = "phase2") -> Path:
    """sweeps/gpu_nvidia.yaml with its data paths pointing at generated shards: sequence 128 /
    20 predictions in ``phase1``, 512 / 80 in ``phase2`` (NVIDIA's two shapes), a vocabulary."""
    import numpy as np
    from test_data import _write_nvidia

    rng = np.random.default_rng(0)
    for name, (seq, pred) in (("phase1", (128, 20)), ("phase2", (512, 80))):
        folder = tmp_path / name
        folder.mkdir(parents=True, exist_ok=True)
        n = 100  # above the micro-batch of 64 after the validation tail
        positions = np.sort(rng.choice(np.arange(1, seq - 1), (n, pred)), axis=1)
        positions[:, pred // 2 :] = 0  # half the slots used, as NVIDIA pads them
        arrays = {
            "input_ids": rng.integers(5, 1000, (n, seq)).astype(np.int32),
            "input_mask": np.ones((n, seq), np.int32),
            "segment_ids": np.zeros((n, seq), np.int32),
            "masked_lm_positions": positions.astype(np.int32),
            "masked_lm_ids": rng.integers(5, 1000, (n, pred)).astype(np.int32),
            "next_sentence_labels": rng.integers(0, 2, n).astype(np.int32),
        }
        _write_nvidia(folder / "part_0.hdf5", arrays)
    vocab = tmp_path / "vocab.txt"
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab.write_text("\n".join([*specials, *(f"tok{i}" for i in range(1019))]) + "\n")
    text = (REPO / "sweeps" / "gpu_nvidia.yaml").read_text()
    text = text.replace("/data/bert/vocab.txt", str(vocab))
    text = text.replace("/data/bert/phase1", str(tmp_path / phase1))
    text = text.replace("/data/bert/phase2", str(tmp_path / phase2))
    text = text.replace("results: ../results", f"results: {tmp_path / 'results'}")
    file = tmp_path / "gpu.yaml"
    file.write_text(text)
    return file


def test_the_gpu_sweep_file_runs_nvidia_s_recipe_with_each_phase_s_shards(tmp_path, capsys):
    """Every experiment of sweeps/gpu_nvidia.yaml passes the training preflight on generated
    shards of both of NVIDIA's shapes (phase 1 reads the 128/20 folder, phase 2 the 512/80 one;
    swapped, it is refused in one line), the equal-mass peaks are what they say, and --dry-run
    prints the job scripts and the GPU-hours."""
    from ablations.data import DataError
    from ablations.run.train import _preflight

    sweep = load_sweep(_gpu_file(tmp_path))
    assert set(sweep.experiments) == {
        "gpu_figure2_prenorm",
        "gpu_bias_correction",
        "gpu_figure3_decay",
        "gpu_eps",
        "gpu_batch_scaling",
    }
    for name in sweep.experiments:
        p = plan(sweep, name)
        config = p.config(next(iter(p.variants)), p.points[0] if p.points else {}, 0)
        _preflight(config, None)  # builds and checks each phase's data: no error
    large = plan(sweep, "gpu_bias_correction").config("bias_correction,preset=apex", {}, 0)
    assert (large.model.size, large.devices, large.num_nodes) == ("large", 8, 8)
    assert [p.global_batch for p in large.phases] == [65536, 32768]
    assert [large.phase_data(p).source for p in large.phases] == [
        str(tmp_path / "phase1"),
        str(tmp_path / "phase2"),
    ]
    decay = plan(sweep, "gpu_figure3_decay")
    for i in (0, 1):
        mass = {}
        for variant in ("degree_0.5", "degree_1.0_equal_mass"):
            phase = decay.config(variant, {}, 0).phases[i]
            schedule = lamb_variants.PolyWarmup.from_proportion(
                phase.steps, phase.warmup, decay_power=phase.decay_power
            )
            mass[variant] = phase.lr * sum(schedule(t) for t in range(1, phase.steps + 1))
        assert mass["degree_1.0_equal_mass"] == pytest.approx(mass["degree_0.5"], rel=1e-4)

    swapped = load_sweep(_gpu_file(tmp_path / "swapped", "phase2", "phase1"))
    p = plan(swapped, "gpu_bias_correction")
    with pytest.raises(DataError, match="seq") as e:
        _preflight(p.config(next(iter(p.variants)), {}, 0), None)
    assert "\n" not in str(e.value)

    from ablations.__main__ import main

    file = _gpu_file(tmp_path / "dry")
    args = ["sweep", "--file", str(file), "--experiment", "gpu_figure2_prenorm"]
    assert main([*args, "--dry-run", "--slurm"]) == 0
    out = capsys.readouterr().out
    trials = 4 * 2  # (2 interventions x 2 modes) x 2 seeds
    assert f"at most {trials * 48 * 64:,} GPU-hours ({trials} trials x 48:00:00 x 64 GPUs)" in out
    assert out.count("(would be submitted) ---") == 2
    assert "#SBATCH --gpus-per-node=8" in out and "#SBATCH --nodes=8" in out
    assert "#SBATCH --array=0-1%2" in out and "sweep-worker" in out and "sweep-collect" in out
    assert not (tmp_path / "dry" / "results").exists()  # a dry run creates nothing


# --- plans ----------------------------------------------------------------------------------


def test_grid_variants_are_the_cartesian_product_named_by_toggle():
    raw = _mutate(
        f"{E}/variants/grid",
        {
            "optimizer.overrides.prenorm": ["none", "clip"],
            "optimizer.overrides.bias_correction": [True, False],
        },
    )
    p = plan(_load(raw), "e")
    assert list(p.variants) == [
        "prenorm=none,bias_correction=true",
        "prenorm=none,bias_correction=false",
        "prenorm=clip,bias_correction=true",
        "prenorm=clip,bias_correction=false",
    ]
    config = p.config("prenorm=clip,bias_correction=false", {"phases.0.lr": 0.02}, 5)
    assert config.optimizer.overrides == {"prenorm": "clip", "bias_correction": False}
    assert (config.phases[0].lr, config.seed, config.optimizer.preset) == (0.02, 5, "nvlamb")


def test_named_variants_crossed_with_a_grid():
    """Both: every named variant at every grid point, named ``<named>,<grid point>``."""
    raw = _mutate(
        f"{E}/variants",
        {
            "named": {"baseline": {}, "no_bc": {"optimizer.overrides.bias_correction": False}},
            "grid": {"optimizer.preset": ["apex", "nvlamb"]},
        },
    )
    p = plan(_load(raw), "e")
    assert list(p.variants) == [
        "baseline,preset=apex",
        "baseline,preset=nvlamb",
        "no_bc,preset=apex",
        "no_bc,preset=nvlamb",
    ]
    config = p.config("no_bc,preset=apex", {"phases.0.lr": 0.02}, 1)
    assert (config.optimizer.preset, config.optimizer.overrides) == (
        "apex",
        {"bias_correction": False},
    )
    assert p.config("baseline,preset=nvlamb", {}, 0).optimizer.overrides == {}


def test_same_path_suffix_is_disambiguated_by_full_path():
    raw = _mutate(
        f"{E}/variants/grid", {"phases.0.decay_power": [0.5], "phases.1.decay_power": [1.0]}
    )
    raw["experiments"]["e"]["workload"]["phases"].append(dict(WORKLOAD["phases"][0]))
    assert list(plan(_load(raw), "e").variants) == [
        "phases.0.decay_power=0.5,phases.1.decay_power=1.0"
    ]


@pytest.mark.parametrize("method", ["qmc", "random"])
def test_every_variant_gets_the_same_points_inside_the_range(method):
    raw = _mutate(f"{E}/search", {"method": method, "budget": 8, "seed": 3})
    raw["experiments"]["e"]["tune"]["optimizer.weight_decay"] = {"low": 0.0, "high": 0.1}
    p = plan(_load(raw), "e")
    slots = slots_ahead(p)
    assert len(slots) == 2 * 8
    by_variant: dict[str, list] = {}
    for s in slots:
        by_variant.setdefault(s.variant, []).append(s.params)
        assert 1e-3 <= s.params["phases.0.lr"] <= 1e-1
        assert 0.0 <= s.params["optimizer.weight_decay"] <= 0.1
        assert s.stage == "tune" and s.seed == 0
    first, second = by_variant.values()
    assert first == second  # variants compared point by point
    assert len({tuple(sorted(p.items())) for p in first}) == 8
    # log scale: the points spread over decades, not crowd the top one
    logs = sorted(math.log10(p["phases.0.lr"]) for p in first)
    assert logs[0] < -2.2 and logs[-1] > -1.5
    again = plan(_load(raw), "e").points
    assert again == p.points  # seeded: every process computes the same points
    other = _mutate(f"{E}/search", {"method": method, "budget": 8, "seed": 4})
    other["experiments"]["e"]["tune"] = raw["experiments"]["e"]["tune"]
    assert plan(_load(other), "e").points != p.points
    assert total_slots(p) == 2 * (8 + 2)


def test_grid_search_and_no_tuning():
    raw = _mutate(f"{E}/search", {"method": "grid"})
    raw["experiments"]["e"]["tune"] = {"phases.0.lr": {"values": [0.01, 0.02, 0.04]}}
    p = plan(_load(raw), "e")
    assert p.points == [{"phases.0.lr": v} for v in (0.01, 0.02, 0.04)]
    untuned = _mutate(f"{E}/tune", None)
    untuned["experiments"]["e"]["search"] = {"budget": 1}
    q = plan(_load(untuned), "e")
    assert [(s.stage, s.seed, s.params) for s in slots_ahead(q)][:2] == [
        ("seed", 0, {}),
        ("seed", 1, {}),
    ]
    assert total_slots(q) == 2 * 2


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 5400),
        ("30:00", 1800),
        ("04:00:00", 14400),
        ("1-00:00:00", 86400),
        ("2-12", 216000),
        ("1-12:30", 131400),
    ],
)
def test_slurm_time_formats(text, seconds):
    assert time_seconds(text) == seconds


def _load(raw: dict):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        file = Path(d) / "sweep.yaml"
        file.write_text(yaml.safe_dump(raw, sort_keys=False))
        try:
            return load_sweep(file)
        except ConfigError as e:
            raise AssertionError(str(e)) from None
