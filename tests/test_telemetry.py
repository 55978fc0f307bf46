"""Mechanism telemetry against float64 computations made here, independently of the optimizer.

- ``Lamb.direction_stats()``: the ε-dominated fraction and the median √v̂/ε per tensor, from
  Adam's second moment recomputed in float64 from the gradients fed to the optimizer.
- ``LambStats.moments_grad_norm``: ‖c·g‖ with c the pre-normalization factor, in float64.
- The harness's ``relative_update`` (measured ‖Δw‖/‖w‖) against what the optimizer says it
  applied: η_t·r·‖u‖/‖w‖ per tensor.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import synthetic
import torch
from helpers import make_model, named_groups
from test_train import PHASE, config, lines

import lamb_variants
from ablations.run.train import train

BETA2 = 0.999
STEPS = 3

#: (id, knobs): a table over the knobs that change what ε means or whether it exists.
CASES = [
    ("apex_eps_small", "apex", {"eps": 1e-6}),
    ("apex_eps_mid", "apex", {"eps": 3e-2}),  # a sizable share of elements ε-dominated
    ("apex_eps_large", "apex", {"eps": 1.0}),
    ("no_bias_correction", "apex", {"eps": 3e-2, "bias_correction": False}),
    ("step_size_correction", "apex", {"eps": 3e-2, "bias_correction": "step_size"}),
    ("eps_inside_sqrt", "apex", {"eps": 1e-3, "eps_inside_sqrt": True}),
    ("prenorm_none", "nvlamb", {"eps": 3e-2, "prenorm": "none"}),
    ("prenorm_normalize", "nvlamb", {"eps": 3e-2, "prenorm": "normalize"}),
    ("atan2", "nvlamb", {"eps_mode": "atan2"}),
    ("lars", "lars", {}),
]


def _gradients(model: torch.nn.Module, seed: int) -> list[list[np.ndarray]]:
    """STEPS sets of gradients, scaled so that the global norm is above 1 (clip acts)."""
    rng = np.random.default_rng(seed)
    params = [p for _, p in model.named_parameters()]
    return [[3.0 * rng.standard_normal(tuple(p.shape)) for p in params] for _ in range(STEPS)]


def _factor(prenorm: str, grad_norm: float, max_grad_norm: float = 1.0) -> float:
    if prenorm == "none":
        return 1.0
    if prenorm == "clip":
        return 1.0 / max(1.0, grad_norm / max_grad_norm)
    return 1.0 / grad_norm


@pytest.mark.parametrize(("preset", "knobs"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_direction_stats_match_a_float64_computation(preset, knobs):
    model = make_model("mlp", dtype=torch.float32)
    names = [n for n, _ in model.named_parameters()]
    opt = lamb_variants.create(preset, named_groups(model), lr=1e-3, **knobs)
    group = opt.param_groups[0]
    v = [np.zeros(tuple(p.shape)) for p in model.parameters()]
    for grads in _gradients(model, seed=1):
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
        # float64: G, the stage-1 factor, Adam's v
        grads32 = [
            np.asarray(torch.tensor(g, dtype=torch.float32), dtype=np.float64) for g in grads
        ]
        big_g = math.sqrt(sum(float((g**2).sum()) for g in grads32))
        c = _factor(group["prenorm"], big_g, group["max_grad_norm"])
        v = [BETA2 * vi + (1 - BETA2) * (c * g) ** 2 for vi, g in zip(v, grads32, strict=True)]
        assert float(opt.stats.grad_norm) == pytest.approx(big_g, rel=1e-5)
        assert float(opt.stats.moments_grad_norm) == pytest.approx(c * big_g, rel=1e-5)

    stats = opt.direction_stats()
    order = [names.index(n) for n in opt.stats.names]  # the step's order: group by group
    assert sorted(order) == list(range(len(names)))
    v = [v[i] for i in order]
    frac, ratio = stats.eps_dominated.tolist(), stats.sqrt_v_over_eps.tolist()
    if group["moments"] == "momentum":
        assert all(math.isnan(x) for x in frac + ratio)
        return
    if group["eps_mode"] == "atan2":
        assert frac == [0.0] * len(names) and all(math.isnan(x) for x in ratio)
        return
    bc2 = 1 - BETA2**STEPS if group["bias_correction"] is True else 1.0
    eps = math.sqrt(group["eps"]) if group["eps_inside_sqrt"] else group["eps"]
    expected_frac, expected_ratio = [], []
    for vi in v:
        sqrt_v = np.sqrt(vi / bc2).ravel()
        sqrt_v = sqrt_v[sqrt_v > 0]  # elements that have had a gradient
        expected_frac.append(float(np.mean(sqrt_v <= eps)))
        expected_ratio.append(float(np.sort(sqrt_v)[(sqrt_v.size - 1) // 2] / eps))  # lower median
    # one element may sit on the threshold in float32: allow one element per tensor
    sizes = [int((vi > 0).sum()) for vi in v]
    for f, e, n in zip(frac, expected_frac, sizes, strict=True):
        assert abs(f - e) <= 1.0 / n + 1e-12
    assert ratio == pytest.approx(expected_ratio, rel=1e-5)
    if knobs.get("eps") == 1e-6:
        assert max(frac) == 0.0  # the test's gradients are far above ε there
    if knobs.get("eps") == 1.0:
        assert min(frac) == 1.0


def test_elements_without_a_gradient_are_left_out():
    """Rows that never had a gradient (unused embedding rows) have m = 0 and do not move: they
    are not counted as ε-dominated; a tensor with no such element at all gets NaN."""
    emb = torch.nn.Embedding(10, 4)
    other = torch.nn.Linear(4, 4)
    opt = lamb_variants.create(
        "apex", [*emb.named_parameters(), *other.named_parameters()], lr=1e-3
    )
    for _ in range(2):
        emb(torch.tensor([0, 1, 2])).sum().backward()  # rows 3..9 unused, the Linear never used
        opt.step()
    stats = opt.direction_stats()
    eps = opt.param_groups[0]["eps"]
    expected = torch.sqrt(opt.state[emb.weight]["exp_avg_sq"][:3] / (1 - 0.999**2))
    assert float(stats.eps_dominated[0]) == float((expected <= eps).double().mean())
    assert float(stats.sqrt_v_over_eps[0]) == pytest.approx(
        float(expected.flatten().sort().values[(12 - 1) // 2]) / eps
    )
    assert len(stats.eps_dominated) == 1  # the Linear had no gradient: not in the step


def test_moments_grad_norm_with_groups_that_prenormalize_differently():
    model = make_model("mlp", dtype=torch.float32)
    groups = named_groups(model)
    groups[1]["prenorm"] = "none"  # the no-decay group is not clipped
    opt = lamb_variants.create("apex", groups, lr=1e-3)
    grads = _gradients(model, seed=2)[0]
    for p, g in zip(model.parameters(), grads, strict=True):
        p.grad = torch.tensor(g, dtype=torch.float32)
    opt.step()
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    sq = [
        (id(p), float((torch.tensor(g, dtype=torch.float32).double() ** 2).sum()))
        for p, g in zip(model.parameters(), grads, strict=True)
    ]
    big_g = math.sqrt(sum(s for _, s in sq))
    c = 1.0 / max(1.0, big_g)
    expected = math.sqrt(sum((c * c if i in decayed else 1.0) * s for i, s in sq))
    assert float(opt.stats.grad_norm) == pytest.approx(big_g, rel=1e-5)
    assert float(opt.stats.moments_grad_norm) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("preset", ["apex", "nvlamb"])
def test_relative_update_is_the_step_the_optimizer_applied(tmp_path, preset):
    """Per tensor, the measured ‖Δw‖/‖w‖ equals η·r·‖u‖/‖w‖ from the optimizer's own stats
    (tensor-wise layers, decay inside u, no step-size correction: w ← w - η·r·u)."""
    cfg = config(
        phases=[{**PHASE, "steps": 12, "lr": 2e-2, "warmup": 0.25}],
        optimizer={"preset": preset},
    )
    assert train(cfg, tmp_path, synthetic.make)["status"] == "complete"
    lr = {r["step"]: r["optim/lr"] for r in lines(tmp_path)}
    records = lines(tmp_path, "layers")
    assert [r["step"] for r in records] == [3, 6, 9, 12]
    adapted_biases = 0
    for r in records:
        for i, name in enumerate(r["tensors"]):
            w, u, ratio = r["weight_norm"][i], r["update_norm"][i], r["trust_ratio"][i]
            measured = r["relative_update"][i]
            assert measured == pytest.approx(lr[r["step"]] * ratio * u / w, rel=2e-3), name
            if preset == "nvlamb":  # every tensor adapted: each moves by exactly η·‖w‖
                assert measured == pytest.approx(lr[r["step"]], rel=2e-3), name
                adapted_biases += "bias" in name
            assert 0.0 <= r["eps_dominated"][i] <= 1.0
            assert r["sqrt_v_over_eps"][i] >= 0  # 0 where most rows never had a gradient
    assert preset == "apex" or adapted_biases > 0
    metrics = lines(tmp_path)
    # NVIDIA's presets clip at 1: the moments see min(G, 1)
    for m in metrics:
        assert m["optim/moments_grad_norm"] == pytest.approx(min(m["optim/grad_norm"], 1.0))
