"""Properties of the knobs and of the optimizer machinery, as tables over presets and knob values.

- the fast path equals the per-tensor reference for every preset and every knob value;
- invariances (normalize vs loss scale, clip below threshold, module split with one tensor per
  module) and equivalences (AdamW);
- behaviour every preset must have (loss decreases, state_dict round trip in lockstep);
- per-group knobs, GradScaler, gradient accumulation, zero-norm guards, stats, phase restart,
  checked against hand computations at step 1 in float64.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable

import pytest
import torch
from helpers import (
    batches,
    eval_loss,
    flat,
    make_model,
    named_groups,
    plain_groups,
    rel_diff,
    stats_rows,
    train,
)
from torch.nn.functional import mse_loss

import lamb_variants
import lamb_variants.fast as fast_module
from lamb_variants import DEFAULTS, PRESETS, Lamb, create

REL64 = 1e-12
STATS_FIELDS = ("grad_norm", "weight_norms", "update_norms", "trust_ratios")

# ---------------------------------------------------------------------------------------------
# fast == reference, for every preset and every knob value
# ---------------------------------------------------------------------------------------------

#: Every knob except lr, with the values to try (on top of the NVLAMB defaults). A value is a
#: dict of overrides when a knob only acts together with another one.
KNOB_VALUES: dict[str, list] = {
    "betas": [(0.9, 0.999), (0.5, 0.9)],
    "eps": [1e-6, 1e-3],
    "weight_decay": [0.0, 0.1],
    "prenorm": ["none", "clip", "normalize"],
    "max_grad_norm": [0.3, 5.0],
    "bias_correction": [True, False, "step_size"],
    "grad_averaging": [True, False],
    "eps_inside_sqrt": [False, True],
    # Adam-atan2 (ε-free): alone and with each knob its folded scalars touch (bias correction,
    # the decay stages, the LARS denominator); eps_inside_sqrt must not act.
    "eps_mode": [
        "add",
        "atan2",
        {"eps_mode": "atan2", "bias_correction": False},
        {"eps_mode": "atan2", "bias_correction": "step_size", "eps_inside_sqrt": True},
        {"eps_mode": "atan2", "decay": "l2"},
        {"eps_mode": "atan2", "decay": "decoupled", "ratio_denominator": "split"},
    ],
    "moments": ["adam", "momentum"],
    "momentum": [
        {"moments": "momentum", "momentum": 0.0},
        {"moments": "momentum", "momentum": 0.5},
    ],
    "dampening": [{"moments": "momentum", "dampening": 0.3}],
    "nesterov": [
        {"moments": "momentum", "nesterov": True},
        {"moments": "momentum", "nesterov": False},
    ],
    "decay": ["in_ratio", "decoupled", "l2"],
    "adapt": ["all", "decayed", "none"],
    "layer_split": ["tensor", "module"],
    # phi_max = 1 < ‖w‖ of the Linear and LayerNorm weights, phi_min = 0.5 > ‖bias‖: both bite.
    "phi": ["identity", {"phi": "clip", "phi_min": 0.5, "phi_max": 1.0}],
    "phi_min": [{"phi": "clip", "phi_min": 0.7}],
    "phi_max": [{"phi": "clip", "phi_max": 1.0}],
    "trust_clip": [None, (0.01, 10.0), (0.0, 1.0), (0.2, 0.3)],
    "trust_coeff": [1.0, 0.3],
    "trust_eps": [0.0, 1e-3],
    "ratio_denominator": ["update", "split"],
}


def _knob_rows() -> list:
    rows = []
    for knob, values in KNOB_VALUES.items():
        for v in values:
            overrides = v if isinstance(v, dict) else {knob: v}
            label = ",".join(f"{k}={x}" for k, x in overrides.items())
            rows.append(pytest.param("nvlamb", overrides, id=f"knob:{label}"))
    return rows


#: A sensible lr per preset (also used by the loss-decrease test); lars adapts every tensor.
PRESET_LR = {
    "nvlamb": (1e-2, {}),
    "apex": (1e-2, {}),
    "timm": (1e-2, {}),
    "torch_optimizer": (1e-2, {}),
    "pytorch_lamb": (1e-2, {}),
    "optax": (1e-2, {}),
    "deepspeed": (3e-2, {}),
    "tfa": (1e-2, {}),
    "bert_adam": (1e-2, {}),
    "adamw": (1e-2, {}),
    "lars": (10.0, {"adapt": "all"}),
}
PRESET_ROWS = [pytest.param(name, {}, id=f"preset:{name}") for name in PRESETS]
MIXED_ROWS = [
    pytest.param(
        "nvlamb",
        {"layer_split": "module", "phi": "clip", "phi_max": 2.0, "trust_clip": (0.05, 5.0)},
        id="mixed:module+phi+trust_clip",
    ),
    pytest.param(
        "nvlamb",
        {"moments": "momentum", "momentum": 0.9, "nesterov": True, "ratio_denominator": "split"},
        id="mixed:lars-like",
    ),
    pytest.param(
        "deepspeed",
        {"eps_inside_sqrt": True, "prenorm": "normalize"},
        id="mixed:deepspeed+normalize",
    ),
]


def test_knob_table_covers_every_knob():
    assert set(KNOB_VALUES) == set(DEFAULTS) - {"lr"}
    assert set(PRESET_LR) == set(PRESETS)


def _lr_for(preset: str) -> float:
    return 1.0 if preset == "lars" else 1e-2


#: Fast-path layouts: the default plan (small tensors packed into one foreach block); tiny blocks
#: (tensors of >= 64 elements cut into 40-element per-piece blocks, the rest packed 40 at a
#: time); the accelerator code path (device scalars, whole-group blocks) run on CPU;
#: ``impl="compiled"`` on tiny blocks (its fused kernel runs on the per-piece blocks).
LAYOUTS = ["default", "tiny-blocks", "accelerator-path", "compiled"]


def _fast_layout(layout: str, monkeypatch) -> Callable[[Lamb], Lamb]:
    if layout in ("tiny-blocks", "compiled"):
        monkeypatch.setattr(fast_module, "CPU_BLOCK_NUMEL", 40)
        monkeypatch.setattr(fast_module, "CPU_PER_PIECE_MIN", 64)
    accelerator = layout == "accelerator-path"

    def apply(opt: Lamb) -> Lamb:
        if accelerator:
            assert hasattr(opt._fast, "accelerator_path")
            opt._fast.accelerator_path = True
        return opt

    return apply


def _fast_and_reference(make_opt, steps: int, layout: str, monkeypatch):
    """Train twice (fast with ``layout``, reference); return {impl: (flat params, stats rows)}."""
    fast_layout = _fast_layout(layout, monkeypatch)
    fast_impl = "compiled" if layout == "compiled" else "fast"
    runs = {}
    for impl in ("fast", "reference"):
        rows: list[dict] = []

        def make(m, impl=impl):
            if impl == "reference":
                return make_opt(m, impl)
            opt = fast_layout(make_opt(m, fast_impl))
            assert opt.impl == fast_impl
            return opt

        runs[impl] = (
            train(make, make_model(), steps, callback=stats_rows(rows)),
            rows,
        )
    return runs


def _assert_runs_equal(runs, steps: int) -> None:
    (fast, fast_stats), (ref, ref_stats) = runs["fast"], runs["reference"]
    assert torch.isfinite(ref).all()
    assert rel_diff(ref, fast) <= REL64
    assert len(fast_stats) == len(ref_stats) == steps
    for a, b in zip(ref_stats, fast_stats, strict=True):
        assert a["names"] == b["names"] and a["layers"] == b["layers"]
        for name in STATS_FIELDS:
            torch.testing.assert_close(b[name], a[name], rtol=REL64, atol=0, msg=name)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("preset", "overrides"), PRESET_ROWS + _knob_rows() + MIXED_ROWS)
def test_fast_equals_reference(preset, overrides, layout, monkeypatch):
    """Parameters and every stats tensor agree to 1e-12 over 20 float64 steps."""
    lr = _lr_for(preset)
    runs = _fast_and_reference(
        lambda m, impl: create(preset, named_groups(m), lr=lr, impl=impl, **overrides),
        20,
        layout,
        monkeypatch,
    )
    _assert_runs_equal(runs, 20)
    assert rel_diff(runs["reference"][0], flat(make_model())) > 1e-4  # the parameters moved


def _with_knob_changes(opt: Lamb, changes: dict[int, list[dict]]) -> Lamb:
    """Before step t, update group i with ``changes[t][i]`` (as a scheduler would)."""
    step = opt.step
    count = [0]

    def stepped(closure=None):
        for gi, knobs in enumerate(changes.get(count[0], [])):
            opt.param_groups[gi].update(knobs)
        count[0] += 1
        return step(closure)

    opt.step = stepped
    return opt


KNOB_CHANGES = [
    pytest.param({5: [{"weight_decay": 0.1}, {"weight_decay": 0.001}]}, id="weight_decay"),
    pytest.param(
        {5: [{"adapt": "none"}, {}], 10: [{"adapt": "all"}, {"adapt": "none"}]}, id="adapt"
    ),
    pytest.param(
        {5: [{"trust_clip": (0.0, 1.0)}, {"phi": "clip", "phi_max": 0.5}]}, id="ratio-knobs"
    ),
    pytest.param(
        {5: [{"prenorm": "normalize", "lr": 3e-3}, {"decay": "l2", "weight_decay": 0.01}]},
        id="prenorm+decay",
    ),
    pytest.param({5: [{"eps_mode": "atan2"}, {}], 10: [{}, {"eps_mode": "atan2"}]}, id="eps_mode"),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("changes", KNOB_CHANGES)
def test_fast_equals_reference_when_knobs_change_between_steps(changes, layout, monkeypatch):
    """Knobs edited in param_groups mid-run act at the next step on both paths (no stale
    cache of the previous values)."""
    runs = _fast_and_reference(
        lambda m, impl: _with_knob_changes(
            create("nvlamb", named_groups(m), lr=1e-2, impl=impl), changes
        ),
        15,
        layout,
        monkeypatch,
    )
    _assert_runs_equal(runs, 15)
    unchanged = train(lambda m: create("nvlamb", named_groups(m), lr=1e-2), make_model(), 15)
    assert rel_diff(unchanged, runs["reference"][0]) > 1e-6


def _drop_grads(opt: Lamb, model, when: Callable[[int], list[str]]) -> Lamb:
    """Before step t, set the gradients of the parameters named by ``when(t)`` to None."""
    step = opt.step
    count = [0]

    def stepped(closure=None):
        for name in when(count[0]):
            model.get_parameter(name).grad = None
        count[0] += 1
        return step(closure)

    opt.step = stepped
    return opt


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fast_equals_reference_when_some_grads_are_missing(layout, monkeypatch):
    """Tensors without a gradient at some steps are skipped (frozen for that step) on both paths,
    and the set of tensors a step sees changes from step to step."""

    def when(t):
        return {
            0: ["head.weight"],
            3: ["dense_in.bias", "LayerNorm_mid.weight"],
            4: ["head.weight"],
        }.get(t, ["dense_mid.weight"] if t % 2 else [])

    def make_opt(m, impl):
        return _drop_grads(
            create("nvlamb", named_groups(m), lr=1e-2, impl=impl, layer_split="module"), m, when
        )

    runs = _fast_and_reference(make_opt, 12, layout, monkeypatch)
    _assert_runs_equal(runs, 12)
    assert len(runs["fast"][1][0]["names"]) == 9  # head.weight had no gradient at step 1


# ---------------------------------------------------------------------------------------------
# Invariances and equivalences
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_normalize_is_invariant_to_gradient_scale(impl):
    """ĝ = g/G does not depend on the loss scale, so neither does anything after it."""

    def run(prenorm, loss_scale):
        return train(
            lambda m: create("nvlamb", named_groups(m), lr=1e-2, impl=impl, prenorm=prenorm),
            make_model(),
            50,
            loss_scale=loss_scale,
        )

    assert rel_diff(run("normalize", 1.0), run("normalize", 1e3)) <= REL64
    # Control: without normalization the scale changes the trajectory (through ε).
    assert rel_diff(run("none", 1.0), run("none", 1e3)) > 1e-6


@pytest.mark.parametrize("impl", ["fast", "reference", "compiled"])
def test_atan2_direction_is_invariant_to_gradient_scale(impl, monkeypatch):
    """Adam-atan2 is ε-free: every gradient times c gives m̂·c and √v̂·c, and
    atan2(c·m̂, c·√v̂) = atan2(m̂, √v̂), so the run is the same. c = 2^-30 (exact in floating
    point) puts √v̂ far below ε = 1e-6, where the "add" direction m̂/(√v̂+ε) collapses."""
    if impl == "compiled":  # small chunks, so the fused kernel runs on this model
        _fast_layout("compiled", monkeypatch)

    def run(eps_mode, loss_scale):
        return train(
            lambda m: create(
                "nvlamb", named_groups(m), lr=1e-2, impl=impl, prenorm="none", eps_mode=eps_mode
            ),
            make_model(),
            30,
            loss_scale=loss_scale,
        )

    c = 2.0**-30
    assert rel_diff(run("atan2", 1.0), run("atan2", c)) <= REL64
    # Control: with ε the scale changes the run, by far once ε dominates.
    assert rel_diff(run("add", 1.0), run("add", c)) > 1e-3


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_atan2_first_step_is_a_signed_constant(impl):
    """Step 1 by hand: m̂ = ĝ, √v̂ = |ĝ|, so d = a·atan2(ĝ, |ĝ|) = a·(π/4)·sign(ĝ) with
    a = 1.27 (Everett et al. 2024); u = d + λw and r = ‖w‖/‖u‖ as for every direction."""
    model, opt, before, grads = _one_step({"eps_mode": "atan2"}, impl)
    name = "dense_in.weight"
    w, g = before[name], grads[name]
    u = 1.27 * (math.pi / 4) * torch.sign(g) + 0.01 * w
    r = torch.linalg.vector_norm(w) / torch.linalg.vector_norm(u)
    i = opt.stats.names.index(name)
    torch.testing.assert_close(opt.stats.trust_ratios[i], r, rtol=REL64, atol=0)
    torch.testing.assert_close(
        model.get_parameter(name).detach(), w - 1e-2 * r * u, rtol=REL64, atol=0
    )


def test_state_dict_without_a_newer_knob_loads_with_its_default():
    """A checkpoint saved before ``eps_mode`` existed resumes as "add", today's behaviour."""
    data = list(batches(6, torch.float64))
    model = make_model()
    opt = create("nvlamb", named_groups(model), lr=1e-2)
    _steps(model, opt, data[:3])
    saved = copy.deepcopy(opt.state_dict())  # else both optimizers would share m and v
    for group in saved["param_groups"]:
        del group["eps_mode"]
    twin = copy.deepcopy(model)
    twin_opt = create("nvlamb", named_groups(twin), lr=1e-2, eps_mode="atan2")
    twin_opt.load_state_dict(saved)
    assert [g["eps_mode"] for g in twin_opt.param_groups] == ["add", "add"]
    _steps(model, opt, data[3:])
    _steps(twin, twin_opt, data[3:])
    assert torch.equal(flat(model), flat(twin))


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_clip_with_huge_threshold_is_none(impl):
    def run(**kw):
        return train(
            lambda m: create("nvlamb", named_groups(m), lr=1e-2, impl=impl, **kw), make_model(), 50
        )

    assert torch.equal(run(max_grad_norm=1e30), run(prenorm="none"))


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_clip_below_threshold_is_none(impl):
    """When G < M at every step, clipping is the identity (exactly)."""

    def run(loss_scale, **kw):
        rows: list[dict] = []
        out = train(
            lambda m: create("nvlamb", named_groups(m), lr=1e-2, impl=impl, **kw),
            make_model(),
            50,
            loss_scale=loss_scale,
            callback=stats_rows(rows),
        )
        return out, max(r["grad_norm"].item() for r in rows)

    small, g_max = run(0.01)
    assert g_max < 1.0
    assert torch.equal(small, run(0.01, prenorm="none")[0])
    # Control: at the usual scale G exceeds 1 and clipping changes the run.
    clipped, g_max = run(1.0)
    assert g_max > 1.0
    assert rel_diff(clipped, run(1.0, prenorm="none")[0]) > 1e-6


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_module_split_with_one_tensor_per_module_is_tensor_split(impl):
    rows = {}
    out = {}
    for split in ("tensor", "module"):
        rows[split] = []
        out[split] = train(
            lambda m, split=split: create(
                "nvlamb", named_groups(m), lr=1e-2, impl=impl, layer_split=split
            ),
            make_model("nobias"),
            30,
            callback=stats_rows(rows[split]),
        )
    assert rel_diff(out["tensor"], out["module"]) <= REL64
    assert rows["module"][0]["layers"] == ("dense_in", "dense_mid", "head")
    assert rows["tensor"][0]["layers"] == ("dense_in.weight", "dense_mid.weight", "head.weight")


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_module_split_shares_one_ratio_between_weight_and_bias(impl):
    """Step 1 by hand: r = ‖[w; b]‖ / ‖[u_w; u_b]‖ for both tensors of the Linear."""
    model = make_model("linear")
    opt = create("nvlamb", named_groups(model), lr=1e-2, impl=impl, layer_split="module")
    x, y, s = next(batches(1, torch.float64))
    (s * mse_loss(model(x), y)).backward()
    w, b = model.head.weight, model.head.bias
    gw, gb, w0, b0 = w.grad.clone(), b.grad.clone(), w.detach().clone(), b.detach().clone()
    opt.step()

    big_g = torch.sqrt((gw * gw).sum() + (gb * gb).sum())
    c = 1.0 / max(1.0, big_g.item())
    eps, lam = 1e-6, 0.01

    def direction(g):  # step 1: m̂ = ĝ, v̂ = ĝ²
        g_hat = c * g
        return g_hat / (g_hat.abs() + eps)

    u_w, u_b = direction(gw) + lam * w0, direction(gb)
    r = torch.sqrt((w0 * w0).sum() + (b0 * b0).sum()) / torch.sqrt(
        (u_w * u_w).sum() + (u_b * u_b).sum()
    )
    stats = opt.stats
    assert stats.layers == ("head", "head")
    torch.testing.assert_close(stats.trust_ratios, torch.stack([r, r]), rtol=REL64, atol=0)
    torch.testing.assert_close(w.detach(), w0 - 1e-2 * r * u_w, rtol=REL64, atol=0)
    torch.testing.assert_close(b.detach(), b0 - 1e-2 * r * u_b, rtol=REL64, atol=0)
    # Per tensor the two ratios differ, so the shared value is not an accident.
    r_w = torch.linalg.vector_norm(w0) / torch.linalg.vector_norm(u_w)
    r_b = torch.linalg.vector_norm(b0) / torch.linalg.vector_norm(u_b)
    assert abs(r_w - r_b) > 1e-3


@pytest.mark.parametrize(
    "params",
    [
        pytest.param(lambda m: m.parameters(), id="tensors"),
        pytest.param(lambda m: plain_groups(m), id="groups-of-tensors"),
    ],
)
def test_module_split_without_names_is_an_error(params):
    model = make_model()
    with pytest.raises(ValueError, match="named_parameters"):
        Lamb(params(model), layer_split="module")


def test_module_split_per_group_without_names_is_an_error():
    groups = plain_groups(make_model())
    groups[1]["layer_split"] = "module"
    with pytest.raises(ValueError, match="named_parameters"):
        Lamb(groups)


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("weight_decay", [0.01, 0.1])
def test_adam_knobs_equal_torch_adamw(impl, weight_decay):
    """adapt="none" + prenorm="none" + decay="decoupled" + eps=1e-8 is torch.optim.AdamW."""
    ours = train(
        lambda m: create(
            "nvlamb",
            named_groups(m, weight_decay),
            lr=1e-2,
            impl=impl,
            adapt="none",
            prenorm="none",
            decay="decoupled",
            eps=1e-8,
        ),
        make_model(),
        50,
    )
    theirs = train(
        lambda m: torch.optim.AdamW(plain_groups(m, weight_decay), lr=1e-2), make_model(), 50
    )
    assert rel_diff(theirs, ours) <= 1e-10


# ---------------------------------------------------------------------------------------------
# Behaviour every preset must have
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_decreases_the_loss(preset, impl):
    lr, overrides = PRESET_LR[preset]
    weight_decay = 1e-4 if preset == "lars" else 0.01
    model = make_model()
    before = eval_loss(model)
    train(
        lambda m: create(preset, named_groups(m, weight_decay), lr=lr, impl=impl, **overrides),
        model,
        100,
    )
    after = eval_loss(model)
    assert math.isfinite(after)
    assert after < 0.5 * before


def _steps(model, opt, data) -> None:
    for x, y, s in data:
        opt.zero_grad(set_to_none=True)
        (s * mse_loss(model(x), y)).backward()
        opt.step()


ROUND_TRIP_ROWS = [pytest.param(name, None, id=name) for name in PRESETS] + [
    pytest.param("nvlamb", {"prenorm": "normalize", "lr": 3e-3}, id="nvlamb+group1-normalize"),
    pytest.param(
        "lars",
        {"moments": "momentum", "momentum": 0.9, "nesterov": True, "adapt": "all"},
        id="lars+group1-nesterov",
    ),
    pytest.param(
        "timm", {"layer_split": "module", "trust_clip": (0.0, 1.0)}, id="timm+group1-module"
    ),
]


# Optimizer.load_state_dict ends with self.__setstate__({"state", "param_groups"}): loading
# must keep the instance's impl (a reference optimizer must not switch to the fast path).
IMPLS_AFTER_LOAD = ["fast", "reference"]


@pytest.mark.parametrize("impl", IMPLS_AFTER_LOAD)
def test_load_state_dict_keeps_impl(impl):
    model = make_model()
    opt = Lamb(named_groups(model), impl=impl)
    _steps(model, opt, list(batches(2, torch.float64)))
    twin = Lamb(named_groups(make_model()), impl=impl)
    twin.load_state_dict(opt.state_dict())
    assert twin.impl == impl


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_deepcopy_keeps_impl_and_lockstep(impl):
    model = make_model()
    opt = Lamb(named_groups(model), impl=impl)
    data = list(batches(6, torch.float64))
    _steps(model, opt, data[:3])
    twin_model, twin_opt = copy.deepcopy((model, opt))
    assert twin_opt.impl == impl
    _steps(model, opt, data[3:])
    _steps(twin_model, twin_opt, data[3:])
    assert torch.equal(flat(model), flat(twin_model))


@pytest.mark.parametrize("twin", ["fresh", "used"])
@pytest.mark.parametrize("impl", IMPLS_AFTER_LOAD)
@pytest.mark.parametrize(("preset", "group1"), ROUND_TRIP_ROWS)
def test_state_dict_round_trip_keeps_lockstep(preset, group1, impl, twin):
    """Train 5 steps, save (torch.save / torch.load(weights_only=True)), load into a
    default-knob optimizer on a copied model, then 10 more steps: bitwise equal. Knobs set on one
    group only come back from the checkpoint, not from the fresh optimizer's defaults. A "used"
    twin has already taken steps of its own (state and caches filled) before it loads."""
    lr = _lr_for(preset)
    data = list(batches(15, torch.float64))
    model = make_model()
    groups = named_groups(model)
    if group1:
        groups[1].update(group1)
    opt = create(preset, groups, lr=lr, impl=impl)
    _steps(model, opt, data[:5])

    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    twin_model = make_model()
    twin_opt = Lamb(named_groups(twin_model), impl=impl)  # every knob at its default
    if twin == "used":
        _steps(twin_model, twin_opt, list(batches(3, torch.float64, seed=1)))
    with torch.no_grad():  # in place: the twin's parameters stay the same tensors
        for p, q in zip(model.parameters(), twin_model.parameters(), strict=True):
            q.copy_(p)
    twin_opt.load_state_dict(torch.load(buffer, weights_only=True))
    assert twin_opt.impl == impl

    for mine, theirs in zip(opt.param_groups, twin_opt.param_groups, strict=True):
        for knob in DEFAULTS:
            assert theirs[knob] == mine[knob], knob
        assert theirs["step"] == mine["step"] == 5
    _steps(model, opt, data[5:])
    _steps(twin_model, twin_opt, data[5:])
    assert torch.equal(flat(model), flat(twin_model))
    for p, q in zip(model.parameters(), twin_model.parameters(), strict=True):
        for key, value in opt.state[p].items():
            assert torch.equal(value, twin_opt.state[q][key]), key


# ---------------------------------------------------------------------------------------------
# Per-group knobs
# ---------------------------------------------------------------------------------------------

PER_GROUP = [
    pytest.param({"adapt": "all"}, {"decay": "l2", "weight_decay": 0.001}, id="adapt-all|decay-l2"),
    pytest.param({"prenorm": "clip"}, {"prenorm": "normalize"}, id="clip|normalize"),
    pytest.param(
        {"bias_correction": "step_size", "trust_clip": (0.01, 10.0)},
        {"moments": "momentum", "momentum": 0.9, "lr": 0.1},
        id="deepspeed-like|momentum",
    ),
    # Module layers span both groups (a Linear's weight is decayed, its bias is not).
    pytest.param(
        {"layer_split": "module"},
        {"layer_split": "module", "adapt": "all", "phi": "clip", "phi_max": 0.5},
        id="module|module+phi",
    ),
]


@pytest.mark.parametrize(("group0", "group1"), PER_GROUP)
def test_per_group_knobs(group0, group1):
    """Groups with different knobs run, the fast path equals the reference, the knobs stay on
    their groups, and they matter (the run differs from the one with defaults everywhere)."""

    def run(impl, g0, g1):
        def make(m):
            groups = named_groups(m)
            groups[0].update(g0)
            groups[1].update(g1)
            return Lamb(groups, lr=1e-2, adapt="decayed", impl=impl)

        return train(make, make_model(), 20)

    fast, ref = run("fast", group0, group1), run("reference", group0, group1)
    assert rel_diff(ref, fast) <= REL64
    assert rel_diff(ref, run("reference", {}, {})) > 1e-6
    opt = Lamb(named_groups(make_model()), lr=1e-2, adapt="decayed")
    for g, knobs in zip(opt.param_groups, (group0, group1), strict=True):
        g.update(knobs)  # also settable after construction, as schedulers do with lr
    assert all(opt.param_groups[1][k] == v for k, v in group1.items())
    assert opt.param_groups[0]["adapt"] == group0.get("adapt", "decayed")


# ---------------------------------------------------------------------------------------------
# GradScaler and gradient accumulation
# ---------------------------------------------------------------------------------------------


def _scaled_run(model, opt, scaler, data, inf_at=None):
    for t, (x, y, s) in enumerate(data):
        opt.zero_grad(set_to_none=True)
        loss = s * mse_loss(model(x), y)
        if scaler is None:
            loss.backward()
            opt.step()
            continue
        scaler.scale(loss).backward()
        if t == inf_at:
            model.dense_in.weight.grad[0, 0] = math.inf
        scaler.step(opt)
        scaler.update()


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_grad_scaler_is_transparent(impl):
    data = list(batches(30, torch.float32))
    plain_model, scaled_model = make_model(dtype=torch.float32), make_model(dtype=torch.float32)
    plain_opt = create("nvlamb", named_groups(plain_model), lr=1e-2, impl=impl)
    scaled_opt = create("nvlamb", named_groups(scaled_model), lr=1e-2, impl=impl)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    _scaled_run(plain_model, plain_opt, None, data)
    _scaled_run(scaled_model, scaled_opt, scaler, data)
    assert scaler.get_scale() == 2.0**10
    assert rel_diff(flat(plain_model), flat(scaled_model)) <= 1e-6
    assert scaled_opt.param_groups[0]["step"] == 30


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_grad_scaler_skips_inf_step(impl):
    data = list(batches(4, torch.float32))
    model = make_model(dtype=torch.float32)
    opt = create("nvlamb", named_groups(model), lr=1e-2, impl=impl)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    _scaled_run(model, opt, scaler, data[:3])
    params = flat(model)
    moments = {k: v.clone() for k, v in opt.state[model.dense_in.weight].items()}
    steps = [g["step"] for g in opt.param_groups]
    _scaled_run(model, opt, scaler, data[3:], inf_at=0)
    assert scaler.get_scale() == 2.0**9  # the inf was seen, and the scale backed off
    assert [g["step"] for g in opt.param_groups] == steps == [3, 3]
    assert torch.equal(flat(model), params)
    for k, v in moments.items():
        assert torch.equal(opt.state[model.dense_in.weight][k], v), k


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_gradient_accumulation_equals_full_batch(impl):
    """4 micro-batches with loss/4, accumulated, then one step == one step on the full batch."""
    data = list(batches(10, torch.float64))
    full, micro = make_model(), make_model()
    full_opt = create("nvlamb", named_groups(full), lr=1e-2, impl=impl)
    micro_opt = create("nvlamb", named_groups(micro), lr=1e-2, impl=impl)
    for x, y, s in data:
        full_opt.zero_grad(set_to_none=True)
        (s * mse_loss(full(x), y)).backward()
        full_opt.step()
        micro_opt.zero_grad(set_to_none=True)
        for xs, ys in zip(x.chunk(4), y.chunk(4), strict=True):
            (s * mse_loss(micro(xs), ys) / 4).backward()
        micro_opt.step()
    assert rel_diff(flat(full), flat(micro)) <= 1e-10
    assert rel_diff(flat(full), flat(make_model())) > 1e-3


# ---------------------------------------------------------------------------------------------
# Zero-norm guards, stats, phase restart (hand computations in float64)
# ---------------------------------------------------------------------------------------------


def _one_step(opt_kwargs, impl, zero_grad_of=None):
    model = make_model()
    opt = create("nvlamb", named_groups(model), lr=1e-2, impl=impl, **opt_kwargs)
    x, y, s = next(batches(1, torch.float64))
    (s * mse_loss(model(x), y)).backward()
    if zero_grad_of is not None:
        model.get_parameter(zero_grad_of).grad.zero_()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    return model, opt, before, grads


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_zero_initialised_tensor_moves_with_ratio_one(impl):
    model, opt, before, _ = _one_step({"adapt": "all"}, impl)
    i = opt.stats.names.index("LayerNorm_in.bias")
    assert torch.equal(before["LayerNorm_in.bias"], torch.zeros(16, dtype=torch.float64))
    assert opt.stats.weight_norms[i] == 0
    assert opt.stats.trust_ratios[i] == 1.0
    # Ratio 1 and λ = 0: a plain Adam step of size lr·|d| ≈ lr per element at step 1.
    moved = model.LayerNorm_in.bias.detach().abs()
    assert (moved > 0.5e-2).all()


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_zero_gradient_gives_ratio_one(impl):
    """A non-decayed tensor with a zero gradient: u = 0, r = 1 (not nan), the tensor stays."""
    name = "LayerNorm_in.weight"
    model, opt, before, _ = _one_step({"adapt": "all"}, impl, zero_grad_of=name)
    i = opt.stats.names.index(name)
    assert opt.stats.update_norms[i] == 0
    assert opt.stats.trust_ratios[i] == 1.0
    assert torch.isfinite(opt.stats.trust_ratios).all()
    assert torch.equal(model.get_parameter(name).detach(), before[name])


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_stats_match_hand_computation(impl):
    model, opt, before, grads = _one_step({}, impl)
    stats = opt.stats
    names = [n for g in named_groups(make_model()) for n, _ in g["params"]]
    assert stats.names == tuple(names)
    big_g = torch.nn.utils.get_total_norm(list(grads.values()))
    torch.testing.assert_close(stats.grad_norm, big_g, rtol=REL64, atol=0)
    assert big_g > 1.0  # so the clip acted at this step
    name = "dense_in.weight"
    w, g_hat = before[name], grads[name] / big_g
    u = g_hat / (g_hat.abs() + 1e-6) + 0.01 * w  # step 1: m̂ = ĝ, v̂ = ĝ²
    i = stats.names.index(name)
    w_norm, u_norm = torch.linalg.vector_norm(w), torch.linalg.vector_norm(u)
    torch.testing.assert_close(stats.weight_norms[i], w_norm, rtol=REL64, atol=0)
    torch.testing.assert_close(stats.update_norms[i], u_norm, rtol=REL64, atol=0)
    torch.testing.assert_close(stats.trust_ratios[i], w_norm / u_norm, rtol=REL64, atol=0)
    torch.testing.assert_close(
        model.get_parameter(name).detach(), w - 1e-2 * (w_norm / u_norm) * u, rtol=REL64, atol=0
    )


def _zero_steps(opt: Lamb) -> None:
    for group in opt.param_groups:
        group["step"] = 0


@pytest.mark.parametrize(
    "restart",
    [
        pytest.param(_zero_steps, id="group-step-0"),
        pytest.param(lambda opt: opt.restart_steps(), id="restart_steps"),
    ],
)
@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_phase_restart_uses_step_one_bias_correction(impl, restart):
    """NVIDIA phase 2: m, v carried over, group["step"] = 0, so the next step divides by
    1-β1 and 1-β2 (t = 1)."""
    beta1, beta2, eps, lr = 0.9, 0.999, 1e-6, 1e-2
    data = list(batches(6, torch.float64))
    model = make_model()
    opt = create("nvlamb", named_groups(model), lr=lr, impl=impl, prenorm="none")
    _steps(model, opt, data[:5])
    restart(opt)
    assert [g["step"] for g in opt.param_groups] == [0, 0]
    x, y, s = data[5]
    opt.zero_grad(set_to_none=True)
    (s * mse_loss(model(x), y)).backward()
    expected = {}
    for group in opt.param_groups:
        lam = group["weight_decay"]
        for p in group["params"]:
            m = beta1 * opt.state[p]["exp_avg"] + (1 - beta1) * p.grad
            v = beta2 * opt.state[p]["exp_avg_sq"] + (1 - beta2) * p.grad * p.grad
            w = p.detach().clone()
            u = (m / (1 - beta1)) / (torch.sqrt(v / (1 - beta2)) + eps) + lam * w
            r = torch.linalg.vector_norm(w) / torch.linalg.vector_norm(u)
            expected[p] = w - lr * r * u
    opt.step()
    assert [g["step"] for g in opt.param_groups] == [1, 1]
    for p, want in expected.items():
        torch.testing.assert_close(p.detach(), want, rtol=REL64, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# Half precision: norms must not overflow (apex accumulates them in float32)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_float16_weight_norm_above_256_does_not_overflow(impl):
    w = torch.nn.Parameter(torch.full((10_000,), 3.0, dtype=torch.float16))  # ‖w‖ = 300
    opt = Lamb([w], lr=1e-2, impl=impl, prenorm="none")
    w.grad = torch.full_like(w, 0.01)
    opt.step()
    assert opt.stats.weight_norms.item() == pytest.approx(300.0, rel=1e-3)
    assert torch.isfinite(opt.stats.trust_ratios).all()
    assert torch.isfinite(w).all()


def test_public_api_exports():
    for name in ("Lamb", "LambStats", "create", "PRESETS", "DEFAULTS", "nvidia_param_groups"):
        assert hasattr(lamb_variants, name), name


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_step_with_closure_returns_loss_and_matches_plain_step(impl):
    data = list(batches(5, torch.float64))
    plain, closed = make_model(), make_model()
    plain_opt = create("nvlamb", named_groups(plain), lr=1e-2, impl=impl)
    closed_opt = create("nvlamb", named_groups(closed), lr=1e-2, impl=impl)
    _steps(plain, plain_opt, data)
    for x, y, s in data:

        def closure(x=x, y=y, s=s):
            closed_opt.zero_grad(set_to_none=True)
            loss = s * mse_loss(closed(x), y)
            loss.backward()
            return loss

        with torch.no_grad():
            expected = (s * mse_loss(closed(x), y)).item()
        loss = closed_opt.step(closure)
        assert loss.item() == expected  # the closure's loss, from before the update
    assert torch.equal(flat(plain), flat(closed))


@pytest.mark.parametrize(
    ("preset", "overrides", "used"),
    [
        ("nvlamb", {}, True),
        ("adamw", {}, True),  # decoupled decay
        ("nvlamb", {"eps_inside_sqrt": True}, True),
        ("nvlamb", {"eps_mode": "atan2"}, True),
        ("deepspeed", {"eps_mode": "atan2"}, True),  # step-size correction, no m̂/v̂
        ("nvlamb", {"decay": "l2"}, False),  # the fast path's job
        ("lars", {}, False),  # SGD momentum
    ],
)
def test_compiled_impl_fuses_the_adam_family_on_cpu_chunks(preset, overrides, used, monkeypatch):
    """The "compiled" rows above are only meaningful if the fused kernel ran: count its calls."""
    from lamb_variants import compiled

    calls = []
    real = compiled.fused_direction

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(compiled, "fused_direction", counted)
    runs = _fast_and_reference(
        lambda m, impl: create(preset, named_groups(m), lr=_lr_for(preset), impl=impl, **overrides),
        5,
        "compiled",
        monkeypatch,
    )
    _assert_runs_equal(runs, 5)
    assert bool(calls) == used
