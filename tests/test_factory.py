"""``optimizer.factory``: your own optimizer in a run and in a sweep, beside the presets."""

from __future__ import annotations

import json
import math

import pytest
import synthetic
import yaml
from sweep_files import python, study, workload, write_sweep
from test_train import PHASE, config, lines

from ablations.config import ConfigError, RunConfig
from ablations.run.train import train

FACTORY = "tests.user_optimizers:adamw"


def _run(tmp_path, optimizer: dict, name: str) -> list[dict]:
    phases = [{**PHASE, "steps": 8, "lr": 1e-2, "warmup": 0.25}]
    cfg = RunConfig.from_dict({**config(phases=phases).to_dict(), "optimizer": {**optimizer}})
    assert train(cfg, tmp_path / name, synthetic.make)["status"] == "complete"
    return lines(tmp_path / name)


def test_a_factory_adamw_trains_as_the_adamw_preset(tmp_path):
    """torch.optim.AdamW from a user's factory and lamb_variants' ``adamw`` preset (the same
    algorithm, λ = 0.01 on NVIDIA's decayed group) give the same curve; the telemetry an
    optimizer without ``stats`` allows is there (gradient norm, applied ‖Δw‖/‖w‖), the rest is
    null."""
    mine = _run(tmp_path, {"factory": FACTORY}, "factory")
    preset = _run(tmp_path, {"preset": "adamw"}, "preset")
    for a, b in zip(mine, preset, strict=True):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5)
        assert a["optim/grad_norm"] == pytest.approx(b["optim/grad_norm"], rel=1e-4)
        assert a["optim/trust_ratio_p50"] is None and a["optim/update_norm"] is None
    layers = lines(tmp_path / "factory", "layers")
    reference = lines(tmp_path / "preset", "layers")
    assert [r["step"] for r in layers] == [r["step"] for r in reference] == [3, 6]
    for a, b in zip(layers, reference, strict=True):
        assert a["tensors"] == sorted(a["tensors"], key=a["tensors"].index)  # model order
        by_name = dict(zip(b["tensors"], b["relative_update"], strict=True))
        for name, value in zip(a["tensors"], a["relative_update"], strict=True):
            if name.endswith("attention.self.key.bias"):
                continue  # its gradient is 0 in exact arithmetic (softmax's shift invariance):
                # Adam's direction there is rounding noise over rounding noise
            assert value == pytest.approx(by_name[name], rel=1e-3), name
        assert all(r is None for r in a["trust_ratio"] + a["eps_dominated"])
    run = json.loads((tmp_path / "factory" / "resolved.json").read_text())["optimizer"]
    assert (run["factory"], run["preset"]) == (FACTORY, None)
    assert [g["weight_decay"] for g in run["groups"]] == [0.01, 0.0]
    assert [g["knobs"] for g in run["groups"]] == [None, None]  # a factory's own
    # the run's config names what it trained: the factory, no preset (issue 21, item 6)
    written = yaml.safe_load((tmp_path / "factory" / "config.yaml").read_text())["optimizer"]
    assert (written["factory"], written["preset"]) == (FACTORY, None)
    assert RunConfig.from_dict(yaml.safe_load((tmp_path / "factory" / "config.yaml").read_text()))


def test_a_bad_factory_is_one_line_before_the_run_exists(tmp_path):
    for factory, message in (
        ("tests.no_such_module:f", "cannot import 'tests.no_such_module'"),
        ("tests.user_optimizers:nope", "has no callable 'nope'"),
    ):
        cfg = RunConfig.from_dict({**config().to_dict(), "optimizer": {"factory": factory}})
        with pytest.raises(ConfigError, match=rf"^optimizer\.factory: .*{message}"):
            train(cfg, tmp_path / "run", synthetic.make)
        assert not (tmp_path / "run").exists()
    cfg = RunConfig.from_dict(
        {**config().to_dict(), "optimizer": {"factory": "tests.user_optimizers:not_an_optimizer"}}
    )
    with pytest.raises(ConfigError, match="returned object, expected a torch.optim.Optimizer"):
        train(cfg, tmp_path / "run2", synthetic.make)


@pytest.mark.slow
def test_a_sweep_compares_a_preset_with_a_user_factory(tmp_path, embedded_cache):
    cache, _ = embedded_cache
    file = write_sweep(
        tmp_path,
        {
            "mine": {
                "workload": workload(cache),
                "variants": {
                    "named": {
                        "nvlamb": {"optimizer.preset": "nvlamb"},
                        "my_adamw": {"optimizer.factory": FACTORY},
                    }
                },
                "seeds": 1,
            }
        },
        local={"workers": 2, "threads_per_worker": 1},
    )
    out = python("sweep", "--file", str(file), "--local", cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    trials = {t.user_attrs["variant"]: t for t in study(tmp_path / "results" / "mine").get_trials()}
    assert sorted(trials) == ["my_adamw", "nvlamb"]
    assert all(
        t.user_attrs["status"] == "complete" and math.isfinite(t.value) for t in trials.values()
    )
    assert trials["my_adamw"].params["optimizer.factory"] == FACTORY
    assert trials["nvlamb"].params["optimizer.factory"] is None
    import pandas as pd

    runs = pd.read_parquet(tmp_path / "results" / "mine" / "runs.parquet").set_index("variant")
    assert runs.loc["my_adamw", "optimizer.factory"] == FACTORY
    assert runs.loc["my_adamw", "status"] == "complete"
