"""One resolution of a run (``ablations.run.resolved``): what a config trains with, used by the
sweep's duplicate check, reuse, train's resume check and collect alike.

The resolution is compared with the optimizer ``lamb_variants.create`` really builds for every
preset and a table of overrides; "the same run" is tested end to end: ``preset: nvlamb`` with
and without its own defaults spelled out is one run to the sweep file, to a real local sweep
(adopted, not retrained), to ``train`` resuming a run directory, and to collect.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import synthetic
import torch
from sweep_files import python, study, workload, write_sweep

import lamb_variants
from ablations.config import ConfigError, RunConfig
from ablations.results import collect
from ablations.run import resolved
from ablations.run.resolved import resolve
from ablations.run.train import RunDirError, train
from ablations.sweep.spec import load_sweep

#: Overrides every preset is resolved with (one knob of each stage, and none).
OVERRIDES = [
    {},
    {"prenorm": "none"},
    {"bias_correction": False},
    {"eps_mode": "atan2"},
    {"decay": "decoupled"},
    {"adapt": "decayed", "trust_clip": [0.0, 1.0]},
]
#: nvlamb's own knob values, spelled out: the same run as nvlamb with no overrides.
NVLAMB_SPELLED = {"prenorm": "clip", "bias_correction": True, "eps": 1e-6, "adapt": "all"}


LOG = {"layer_every": 2, "val_every": 2, "val_batches": 1}


def tiny(optimizer: dict, **extra) -> RunConfig:
    phase = {"steps": 4, "global_batch": 8, "micro_batch": 8, "seq_len": 32, "max_predictions": 5}
    return RunConfig.from_dict(
        {
            "model": {"size": "tiny"},
            "data": {"vocab_size": 512},
            "optimizer": optimizer,
            "phases": [{**phase, "lr": 1e-2, "warmup": 0.0}],
            "log": LOG,
            **extra,
        }
    )


@pytest.mark.parametrize("overrides", OVERRIDES, ids=lambda o: ",".join(o) or "none")
@pytest.mark.parametrize("preset", sorted(lamb_variants.PRESETS))
def test_the_resolution_is_what_the_optimizer_is_built_with(preset, overrides):
    config = tiny({"preset": preset, "overrides": overrides})
    plan = resolve(config)
    w, b = torch.nn.Parameter(torch.ones(3, 2)), torch.nn.Parameter(torch.zeros(2))
    groups = lamb_variants.nvidia_param_groups(
        [("dense.weight", w), ("dense.bias", b)], plan.groups[0].weight_decay
    )
    opt = lamb_variants.create(preset, groups, lr=1e-3, **overrides)
    assert [g.name for g in plan.groups] == ["decay", "no_decay"]
    for group, built in zip(plan.groups, opt.param_groups, strict=True):
        assert built["weight_decay"] == group.weight_decay
        for knob, value in group.knobs.items():
            got = list(built[knob]) if isinstance(built[knob], tuple) else built[knob]
            assert got == value, (group.name, knob)
        assert set(group.knobs) == set(lamb_variants.KNOB_NAMES) - {"lr", "weight_decay"}
    assert plan.groups[1].weight_decay == 0.0


def test_a_presets_own_values_spelled_out_are_the_same_run():
    plain = resolve(tiny({"preset": "nvlamb"}))
    spelled = resolve(tiny({"preset": "nvlamb", "overrides": NVLAMB_SPELLED, "weight_decay": 0.01}))
    assert plain.identity() == spelled.identity() and plain.key() == spelled.key()
    other = resolve(tiny({"preset": "nvlamb", "overrides": {"prenorm": "none"}}))
    assert other.key() != plain.key()
    # another preset set to nvlamb's knobs trains the same run: apex with adapt="all"
    apex = resolve(tiny({"preset": "apex", "overrides": {"adapt": "all"}}))
    assert apex.identity() == plain.identity()
    # display keys never make another run
    shown = resolve(tiny({"preset": "nvlamb"}, log={**LOG, "progress": "none", "loggers": ["csv"]}))
    assert shown.key() == plain.key()


def test_value_is_what_a_path_resolves_to():
    run = resolve(tiny({"preset": "lars"}))
    assert run.value("optimizer.overrides.moments") == "momentum"  # the preset's, not set
    assert run.value("optimizer.weight_decay") == 0.0  # lars' upstream λ
    assert run.value("phases.0.lr") == 1e-2
    assert run.value("optimizer.overrides.no_such_knob") is None
    assert run.value("phases.3.lr") is None
    factory = resolve(tiny({"factory": "tests.user_optimizers:adamw"}))
    assert factory.value("optimizer.overrides.prenorm") is None
    assert factory.groups[0].weight_decay == 0.01 and factory.weight_decay_from == "factory default"


def test_the_sweep_file_refuses_two_variants_that_are_one_run(tmp_path):
    raw = {
        "experiments": {
            "e": {
                "workload": tiny({"preset": "nvlamb"}).to_dict(),
                "variants": {
                    "named": {"plain": {}, "spelled": {"optimizer.overrides": NVLAMB_SPELLED}}
                },
                "seeds": 1,
            }
        }
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(json.dumps(raw))  # JSON is YAML
    with pytest.raises(ConfigError, match=r"variants\.named\.spelled: .* same run config"):
        load_sweep(path)


def test_train_resumes_a_run_whatever_way_its_preset_is_spelled(tmp_path):
    done = train(tiny({"preset": "nvlamb"}), tmp_path, synthetic.make)
    assert done["status"] == "complete"
    spelled = tiny({"preset": "nvlamb", "overrides": NVLAMB_SPELLED})
    assert train(spelled, tmp_path, synthetic.make) == done  # the same run: its result
    with pytest.raises(RunDirError):
        train(
            tiny({"preset": "nvlamb", "overrides": {"prenorm": "none"}}), tmp_path, synthetic.make
        )
    written = json.loads((tmp_path / "resolved.json").read_text())
    assert written["optimizer"]["groups"][0]["knobs"]["prenorm"] == "clip"
    assert written["data"]["phase1"]["vocab_size"] == 512
    sizes = resolved.read(tmp_path).tensor_sizes()
    model = resolved.with_model(tiny({"preset": "nvlamb"}), 512).tensor_sizes()
    assert sizes == model  # the meta-device model of results without run directories


@pytest.mark.slow
def test_a_preset_spelled_out_is_adopted_not_retrained_and_collected_from_resolved_json(
    tmp_path, embedded_cache
):
    """``b`` runs nvlamb with its defaults written out: the same run as ``a``'s plain nvlamb,
    so the sweep adopts ``a``'s run (``reused_from``) instead of training it again."""
    cache, _ = embedded_cache
    spelled = {"preset": "nvlamb", "overrides": NVLAMB_SPELLED, "weight_decay": 0.01}
    file = write_sweep(
        tmp_path,
        {
            "a": {
                "workload": workload(cache, optimizer={"preset": "nvlamb"}),
                "variants": {"named": {"plain": {}}},
                "seeds": 1,
            },
            "b": {
                "workload": workload(cache, optimizer=spelled),
                "variants": {"grid": {"optimizer.overrides.prenorm": ["clip", "none"]}},
                "seeds": 1,
            },
        },
        local={"workers": 1, "threads_per_worker": 1},
    )
    out = python("sweep", "--file", str(file), "--local", cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    results = tmp_path / "results"
    a = {t.user_attrs["variant"]: t for t in study(results / "a").get_trials()}
    b = {t.user_attrs["variant"]: t for t in study(results / "b").get_trials()}
    source = results / "a" / str(a["plain"].number)
    same = results / "b" / str(b["prenorm=clip"].number)
    assert json.loads((same / "trial.json").read_text())["reused_from"] == f"a/{a['plain'].number}"
    assert (same / "metrics.jsonl").stat().st_ino == (source / "metrics.jsonl").stat().st_ino
    other = results / "b" / str(b["prenorm=none"].number)
    assert "reused_from" not in json.loads((other / "trial.json").read_text())

    # collect reads each run's resolved.json: a knob no variant sets is the run's own value
    runs = pd.read_parquet(results / "b" / "runs.parquet").set_index("variant")
    assert list(runs["optimizer.overrides.prenorm"]) == ["clip", "none"]
    # a run directory older than resolved.json is resolved from its config.yaml, and said so
    (other / "resolved.json").unlink()
    report = collect(results / "b", force=True)
    assert any("no resolved.json" in note for note in report.notes), report.notes
    again = pd.read_parquet(results / "b" / "runs.parquet").set_index("variant")
    assert again.loc["prenorm=none", "optimizer.overrides.prenorm"] == "none"
