"""Per-group overrides (``optimizer.groups.<group>``: knobs and ``lr_scale``), issue 20 item 4b.

The experiment they serve asks whether the bias-correction toggle in ``apex`` mode is a
learning-rate effect on the no-decay tensors (which get no trust ratio there). Tested: strict
config errors; the resolution is what the optimizer is built with, per group; a run directory
written before the overrides existed keeps its identity; the scheduled lr of a ``c_t`` group
against the closed form; and, in float64, bias correction off on the no-decay group equals bias
correction on with that group's lr times c_t, exactly at ε = 0 and not at ε > 0.
"""

from __future__ import annotations

import json
import math

import pytest
import synthetic
import torch

import lamb_variants
from ablations.config import ConfigError, RunConfig
from ablations.run import group_lr, resolved
from ablations.run.train import train

BAD = [
    ({"nodecay": {}}, "optimizer.groups.nodecay: unknown key"),
    ({"no_decay": {"bias_corection": False}}, "optimizer.groups.no_decay.bias_corection: expected"),
    ({"no_decay": {"lr_scale": 0}}, "optimizer.groups.no_decay.lr_scale: expected a number > 0"),
    ({"no_decay": {"lr_scale": "ct"}}, "optimizer.groups.no_decay.lr_scale: expected"),
    ({"decay": {"weight_decay": 0.1}}, "optimizer.groups.decay.weight_decay: not a group"),
    ({"decay": {"eps": -1.0}}, "optimizer.groups.decay: eps=-1.0 is not allowed"),
    ({"decay": []}, "optimizer.groups.decay: expected a mapping"),
]


def tiny(groups: dict, preset: str = "apex", **optimizer) -> RunConfig:
    phase = {"steps": 4, "global_batch": 8, "micro_batch": 8, "seq_len": 32, "max_predictions": 5}
    return RunConfig.from_dict(
        {
            "model": {"size": "tiny"},
            "data": {"vocab_size": 512},
            "optimizer": {"preset": preset, "groups": groups, **optimizer},
            "phases": [{**phase, "lr": 1e-2, "warmup": 0.0}],
            "log": {"layer_every": 2, "val_every": 2, "val_batches": 1},
        }
    )


@pytest.mark.parametrize(("groups", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_a_bad_group_override_is_one_line_naming_its_key(groups, message):
    with pytest.raises(ConfigError) as e:
        tiny(groups)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_a_factory_takes_no_group_overrides():
    with pytest.raises(ConfigError, match="^optimizer.groups: expected none with"):
        tiny({"no_decay": {"lr_scale": 2.0}}, preset="nvlamb", factory="torch.optim:AdamW")


@pytest.mark.parametrize("preset", sorted(lamb_variants.PRESETS))
@pytest.mark.parametrize(
    "groups",
    [{"no_decay": {"bias_correction": False}}, {"decay": {"prenorm": "none", "eps": 1e-4}}],
    ids=["no_decay-bc", "decay-prenorm-eps"],
)
def test_each_group_resolves_to_its_own_knobs(preset, groups):
    plan = resolved.resolve(tiny(groups, preset=preset, overrides={"eps_mode": "add"}))
    base = resolved.resolve(tiny({}, preset=preset, overrides={"eps_mode": "add"}))
    for group, plain in zip(plan.groups, base.groups, strict=True):
        want = {**plain.knobs, **groups.get(group.name, {})}
        assert group.knobs == want, group.name
    changed = any(g.knobs != p.knobs for g, p in zip(plan.groups, base.groups, strict=True))
    assert (plan.identity() != base.identity()) == changed  # a preset's own value: one run
    name, (knob, value) = next((n, next(iter(g.items()))) for n, g in groups.items())
    assert plan.value(f"optimizer.groups.{name}.{knob}") == value


def test_a_run_resolved_before_group_overrides_keeps_its_identity():
    config = tiny({}, preset="nvlamb")
    raw = resolved.resolve(config).to_dict()
    del raw["config"]["optimizer"]["groups"]  # resolved.json as written before they existed
    for group in raw["optimizer"]["groups"]:
        del group["lr_scale"]
    old = resolved.Resolved.from_dict(json.loads(json.dumps(raw)))
    assert old.key() == resolved.resolve(config).key()
    scaled = tiny({"no_decay": {"lr_scale": 1.0}}, preset="nvlamb")
    assert resolved.resolve(scaled).key() == old.key()  # lr_scale 1 is no override
    assert resolved.resolve(tiny({"no_decay": {"lr_scale": 2}}, preset="nvlamb")).key() != old.key()


def test_a_c_t_groups_scheduled_lr_is_the_closed_form():
    w, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.zeros(3))
    groups = lamb_variants.nvidia_param_groups([("d.weight", w), ("d.bias", b)], 0.01)
    opt = lamb_variants.create("apex", groups, lr=4e-3, betas=(0.8, 0.99))
    schedule = lamb_variants.PolyWarmup.from_proportion(50, 0.2)
    sched = group_lr.start_phase(opt, schedule, lr=4e-3, scales=[3.0, "c_t"])
    for t in range(1, 51):
        w.grad, b.grad = torch.ones(3), torch.ones(3)
        c_t = (1 - 0.8**t) / math.sqrt(1 - 0.99**t)
        assert opt.param_groups[0]["lr"] == pytest.approx(4e-3 * schedule(t) * 3.0, rel=1e-12)
        assert opt.param_groups[1]["lr"] == pytest.approx(4e-3 * schedule(t) * c_t, rel=1e-12)
        opt.step()
        sched.step()
    assert opt.param_groups[1]["step"] == 50


def _trajectory(eps: float, arm: str, steps: int = 40) -> list[torch.Tensor]:
    """apex mode in float64, random gradients of a fixed seed: the no-decay group with bias
    correction off (``arm="off"``) or on with lr × c_t (``arm="c_t"``)."""
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3, generator=gen, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(3, generator=gen, dtype=torch.float64))
    groups = lamb_variants.nvidia_param_groups([("d.weight", w), ("d.bias", b)], 0.01)
    groups[1]["bias_correction"] = arm != "off"
    opt = lamb_variants.create("apex", groups, lr=6e-3, eps=eps)
    schedule = lamb_variants.PolyWarmup.from_proportion(steps, 0.25)
    scales = [1.0, "c_t" if arm == "c_t" else 1.0]
    sched = group_lr.start_phase(opt, schedule, lr=6e-3, scales=scales)
    for _ in range(steps):
        for p in (w, b):  # gradients of varied scale, so that ε acts when it is not 0
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64) * 1e-5
        opt.step()
        sched.step()
    return [w.detach().clone(), b.detach().clone()]


def test_bias_correction_off_on_no_decay_is_lr_times_c_t_exactly_at_zero_eps():
    off, scaled = _trajectory(0.0, "off"), _trajectory(0.0, "c_t")
    for a, b in zip(off, scaled, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    on = _trajectory(0.0, "on")
    assert not torch.allclose(on[1], off[1], rtol=1e-6)  # the toggle acts on that group
    torch.testing.assert_close(on[0], off[0], rtol=1e-12, atol=0)  # and on it alone
    off, scaled = _trajectory(1e-6, "off"), _trajectory(1e-6, "c_t")
    assert not torch.allclose(off[1], scaled[1], rtol=1e-6)  # ε breaks the identity


def test_a_run_trains_with_its_group_overrides(tmp_path):
    groups = {"no_decay": {"bias_correction": False, "lr_scale": "c_t"}}
    done = train(tiny(groups), tmp_path, synthetic.make)
    assert done["status"] == "complete"
    written = json.loads((tmp_path / "resolved.json").read_text())
    by_name = {g["name"]: g for g in written["optimizer"]["groups"]}
    assert by_name["no_decay"]["knobs"]["bias_correction"] is False
    assert by_name["no_decay"]["lr_scale"] == "c_t"
    assert by_name["decay"]["knobs"]["bias_correction"] is True
    assert by_name["decay"]["lr_scale"] == 1.0
    assert by_name["no_decay"]["tensors"]  # the built groups were checked against these
