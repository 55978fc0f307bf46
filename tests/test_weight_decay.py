"""Weight decay in the harness: a preset's λ is its upstream default unless the workload sets one.

``optimizer.weight_decay`` null (the default) means the preset's own λ (``Preset.resolved()``),
so ``lars``, ``optax`` and ``deepspeed`` (λ = 0 upstream) no longer train with NVLAMB's 0.01.
NVIDIA's no-decay group (biases, LayerNorm) keeps λ = 0, and ``resolved.json`` records the λ a
run used. Real training of the tiny BERT on ``tests/synthetic.py`` data, two steps per run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import synthetic
import yaml
from lightning.pytorch.callbacks import Callback

import lamb_variants
from ablations.config import ConfigError, RunConfig, with_overrides
from ablations.run.resolved import resolve
from ablations.run.train import RunDirError, train

REPO = Path(__file__).resolve().parents[1]
ZERO_UPSTREAM = ("lars", "optax", "deepspeed")
PHASE = {"steps": 2, "global_batch": 8, "micro_batch": 8, "seq_len": 32, "max_predictions": 5}
PHASE |= {"lr": 1e-2, "warmup": 0.0}


def upstream(preset: str) -> float:
    """The preset's upstream λ, as the presets define it (the numbers live there only)."""
    return lamb_variants.PRESETS[preset].resolved()["weight_decay"]


def run_config(preset: str, weight_decay: float | None = None) -> RunConfig:
    optimizer: dict[str, Any] = {"preset": preset}
    if weight_decay is not None:
        optimizer["weight_decay"] = weight_decay
    return RunConfig.from_dict(
        {
            "model": {"size": "tiny"},
            "data": {"vocab_size": 512},
            "optimizer": optimizer,
            "phases": [PHASE],
            "log": {"layer_every": 2, "val_every": 2, "val_batches": 1},
        }
    )


class GroupsAtEnd(Callback):
    """The trained optimizer's param groups at the end of fit: (parameter names, λ) each."""

    def __init__(self) -> None:
        self.groups: list[tuple[list[str], float]] = []

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        opt = trainer.optimizers[0]
        self.groups = [(list(g["param_names"]), g["weight_decay"]) for g in opt.param_groups]


def test_upstream_lambda_of_the_presets():
    """A check of the data the other tests compare against: λ = 0 upstream for lars (timm),
    optax and DeepSpeed; 0.01 for apex's NVLAMB (the committed reproduction's preset)."""
    assert [upstream(p) for p in ZERO_UPSTREAM] == [0.0, 0.0, 0.0]
    assert upstream("nvlamb") == 0.01


@pytest.mark.parametrize("preset", [*ZERO_UPSTREAM, "nvlamb"])
@pytest.mark.parametrize("given", [None, 0.05], ids=["preset_lambda", "workload_lambda"])
def test_training_uses_the_presets_lambda_unless_the_workload_sets_one(tmp_path, preset, given):
    expected = upstream(preset) if given is None else given
    groups = GroupsAtEnd()
    result = train(run_config(preset, given), tmp_path, synthetic.make, callbacks=[groups])
    assert result["status"] == "complete"

    decayed, no_decay = groups.groups  # NVIDIA's two groups, in that order
    assert decayed[1] == expected
    assert no_decay[1] == 0.0
    nvidia = lamb_variants.NVIDIA_NO_DECAY
    assert not any(s in name for name in decayed[0] for s in nvidia)
    assert all(any(s in name for s in nvidia) for name in no_decay[0])

    run = json.loads((tmp_path / "resolved.json").read_text())["optimizer"]
    assert (run["preset"], run["factory"]) == (preset, None)
    assert run["weight_decay_from"] == ("preset" if given is None else "workload")
    assert [g["name"] for g in run["groups"]] == ["decay", "no_decay"]
    assert [g["weight_decay"] for g in run["groups"]] == [expected, 0.0]
    assert list(run["groups"][0]["tensors"]) == decayed[0]
    assert list(run["groups"][1]["tensors"]) == no_decay[0]


def test_a_variant_that_switches_preset_gets_that_presets_lambda():
    """The sweep and the CLI set keys on the workload's config with defaults filled in: a λ
    filled in from the first preset would follow the switch (the defect this replaces)."""
    config = with_overrides(run_config("nvlamb"), {"optimizer.preset": "lars"})
    assert resolve(config).groups[0].weight_decay == upstream("lars")


def test_null_and_the_presets_own_lambda_are_the_same_run():
    null, own, other = (run_config("lars", wd) for wd in (None, upstream("lars"), 0.01))
    assert resolve(null).identity() == resolve(own).identity()
    assert resolve(null).identity() != resolve(other).identity()


@pytest.mark.parametrize(
    ("optimizer", "message"),
    [
        (
            {"overrides": {"weight_decay": 0.1}},
            r"^optimizer\.overrides\.weight_decay: not an override; set optimizer\.weight_decay",
        ),
        ({"weight_decay": -0.1}, r"^optimizer\.weight_decay: expected a number >= 0"),
    ],
    ids=["in_overrides", "negative"],
)
def test_lambda_has_one_place_and_bad_values_name_the_key(optimizer, message):
    raw = run_config("nvlamb").to_dict()
    raw["optimizer"].update(optimizer)
    with pytest.raises(ConfigError, match=message) as e:
        RunConfig.from_dict(raw)
    assert "\n" not in str(e.value)


def test_the_committed_reproduction_trains_with_the_same_lambda_as_before():
    """Every run of reproduction/ was NVLAMB at the old fixed default 0.01; the preset's λ is
    that same 0.01, so rerunning it (``make reproduce``) trains every variant as before."""
    snapshots = sorted((REPO / "reproduction").glob("*/sweep.json"))
    assert snapshots
    for path in snapshots:
        plan = json.loads(path.read_text())
        workload = plan["experiment"]["workload"]
        if plan["experiment"]["preset"] is not None:
            workload["optimizer"]["preset"] = plan["experiment"]["preset"]
        base = RunConfig.from_dict(workload)
        for variant, toggles in plan["variants"].items():
            config = with_overrides(base, toggles)
            assert config.optimizer.weight_decay is None, (path.parent.name, variant)
            assert resolve(config).groups[0].weight_decay == 0.01, (path.parent.name, variant)


def test_a_run_directory_that_recorded_the_lambda_itself_is_the_same_run(tmp_path):
    """A config.yaml written before λ could be left to the preset holds the number (0.01 for
    nvlamb): the same run as ``weight_decay: null`` under nvlamb; another λ is another run.
    Such a directory is older than resolved.json too: its config.yaml is resolved on read."""
    done = train(run_config("nvlamb"), tmp_path, synthetic.make)
    (tmp_path / "resolved.json").unlink()
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["optimizer"]["weight_decay"] is None
    saved["optimizer"]["weight_decay"] = upstream("nvlamb")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    assert train(run_config("nvlamb"), tmp_path, synthetic.make) == done  # finished: its status
    with pytest.raises(RunDirError):
        train(run_config("nvlamb", 0.02), tmp_path, synthetic.make)
