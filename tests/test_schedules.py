"""lamb_variants.schedules against formulas written out independently here."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from lamb_variants.schedules import PolyWarmup, start_phase, warmup_poly

REL = 1e-12


def nvidia_poly_warmup(t: int, total_steps: int, warmup: float, degree: float = 0.5) -> float:
    """DLE ``PolyWarmUpScheduler.get_lr`` (base_lr=1) for ``last_epoch = t``, as written there."""
    progress = t / total_steps
    if progress < warmup:
        return progress / warmup
    return (1.0 - progress) ** degree


def hf_poly_decay(step: int, total: int, warmup: int, power: float, end: float) -> float:
    """HF ``get_polynomial_decay_schedule_with_warmup`` lr_lambda with lr_init=1, lr_end=end."""
    if step < warmup:
        return step / max(1, warmup)
    if step > total:
        return end
    pct_remaining = 1 - (step - warmup) / (total - warmup)
    return (1 - end) * pct_remaining**power + end


# NVIDIA BERT recipe (run_pretraining.sh): (total_steps, warmup_proportion, learning_rate).
PHASE1 = (7038, 0.2843, 6e-3)
PHASE2 = (1563, 0.128, 4e-3)


@pytest.mark.parametrize(
    ("total", "proportion", "lr", "published_after"),
    [(*PHASE1, 5.076e-3), (*PHASE2, 3.735e-3)],
    ids=["phase1", "phase2"],
)
def test_nvidia_recipe_reproduced(total, proportion, lr, published_after):
    sched = PolyWarmup.from_proportion(total, proportion)
    for t in range(total + 1):
        assert lr * sched(t) == pytest.approx(lr * nvidia_poly_warmup(t, total, proportion), REL)
    # The drop at the end of warmup: from ~lr to lr * (1 - proportion) ** 0.5 (the published
    # numbers, 4 digits), which is the factor exactly at the fractional warmup boundary.
    last_warmup = math.ceil(proportion * total) - 1  # the last t with t / total < proportion
    assert lr * sched(last_warmup) == pytest.approx(lr, rel=1e-3)
    assert lr * sched(sched.warmup_steps) == pytest.approx(lr * (1 - proportion) ** 0.5, REL)
    assert lr * sched(sched.warmup_steps) == pytest.approx(published_after, abs=5e-7)
    assert lr * sched(last_warmup + 1) == pytest.approx(published_after, rel=1e-3)


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize(("total", "warmup"), [(100, 10), (100, 0), (50, 49), (7, 7)])
def test_start_mode_matches_formula(power, total, warmup):
    for t in range(total + 5):
        p = min(t, total) / total
        expected = p / (warmup / total) if t < warmup else (1 - p) ** power
        got = warmup_poly(
            t, total_steps=total, warmup_steps=warmup, decay_power=power, relative_to="start"
        )
        assert got == pytest.approx(expected, REL)


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("end", [0.0, 0.1])
@pytest.mark.parametrize(("total", "warmup"), [(100, 10), (100, 0), (50, 49)])
def test_warmup_mode_matches_hf(power, end, total, warmup):
    for t in range(total + 1):
        got = warmup_poly(
            t, total_steps=total, warmup_steps=warmup, decay_power=power, end_factor=end
        )
        assert got == pytest.approx(hf_poly_decay(t, total, warmup, power, end), REL)


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0])
def test_start_mode_drops_at_warmup_end(power):
    total, warmup = 1000, 200
    kw = dict(total_steps=total, warmup_steps=warmup, decay_power=power, relative_to="start")
    before, at = warmup_poly(warmup - 1, **kw), warmup_poly(warmup, **kw)
    assert before == pytest.approx((warmup - 1) / warmup, REL)
    assert at == pytest.approx((1 - warmup / total) ** power, REL)
    assert at < before - 1e-3


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0])
def test_warmup_mode_is_continuous_at_warmup_end(power):
    total, warmup = 1000, 200
    kw = dict(total_steps=total, warmup_steps=warmup, decay_power=power, relative_to="warmup")
    assert warmup_poly(warmup, **kw) == 1.0
    # One step either side moves the factor by at most one step's worth of slope.
    bound = max(1 / warmup, max(1.0, power) / (total - warmup))
    for t in (warmup - 1, warmup + 1):
        assert abs(warmup_poly(t, **kw) - 1.0) <= bound + 1e-12


@pytest.mark.parametrize("relative_to", ["start", "warmup"])
@pytest.mark.parametrize("power", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("end", [0.0, 0.25])
def test_monotone_in_each_phase_and_flat_after_total(relative_to, power, end):
    sched = PolyWarmup(100, 20, decay_power=power, relative_to=relative_to, end_factor=end)
    warm = [sched(t) for t in range(20)]
    decay = [sched(t) for t in range(20, 101)]
    assert all(a < b for a, b in zip(warm[:-1], warm[1:], strict=True))
    assert all(a >= b for a, b in zip(decay[:-1], decay[1:], strict=True))
    assert all(0.0 <= f <= 1.0 for f in warm + decay)
    final = 1.0 if power == 0 else end
    assert sched(100) == pytest.approx(final, REL)
    assert [sched(t) for t in (101, 150, 10**6)] == [sched(100)] * 3


def test_power_zero_is_constant_after_warmup():
    for relative_to in ("start", "warmup"):
        sched = PolyWarmup(50, 10, decay_power=0.0, relative_to=relative_to)
        assert [sched(t) for t in range(10, 60)] == [1.0] * 50


def test_fractional_warmup_steps():
    sched = PolyWarmup(1000, 10.5, decay_power=1.0, relative_to="warmup")
    assert sched(10) == pytest.approx(10 / 10.5, REL)
    assert sched(11) == pytest.approx(1 - 0.5 / 989.5, REL)


def test_function_and_dataclass_agree():
    sched = PolyWarmup(300, 30, decay_power=2.0, relative_to="warmup", end_factor=0.1)
    kw = dataclasses.asdict(sched)
    assert [sched(t) for t in range(310)] == [warmup_poly(t, **kw) for t in range(310)]


def test_dataclass_is_frozen():
    sched = PolyWarmup(10, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sched.total_steps = 20  # type: ignore[misc]


BAD_ARGS = [
    (dict(total_steps=0), "total_steps"),
    (dict(total_steps=-5), "total_steps"),
    (dict(total_steps=10.0), "total_steps"),
    (dict(warmup_steps=-1), "warmup_steps"),
    (dict(warmup_steps=101), "warmup_steps"),
    (dict(warmup_steps=float("nan")), "warmup_steps"),
    (dict(decay_power=-0.5), "decay_power"),
    (dict(decay_power=float("inf")), "decay_power"),
    (dict(relative_to="end"), "relative_to"),
    (dict(end_factor=-0.1), "end_factor"),
    (dict(end_factor=1.5), "end_factor"),
]


@pytest.mark.parametrize(("override", "name"), BAD_ARGS, ids=[n for _, n in BAD_ARGS])
def test_bad_arguments_raise(override, name):
    kw = dict(total_steps=100, warmup_steps=10, decay_power=0.5) | override
    with pytest.raises(ValueError, match=name):
        warmup_poly(5, **kw)
    with pytest.raises(ValueError, match=name):
        PolyWarmup(**kw)


@pytest.mark.parametrize("step", [-1, float("nan")])
def test_bad_step_raises(step):
    with pytest.raises(ValueError, match="step"):
        PolyWarmup(100, 10)(step)


@pytest.mark.parametrize("proportion", [-0.1, 1.1])
def test_bad_warmup_proportion_raises(proportion):
    with pytest.raises(ValueError, match="warmup_proportion"):
        PolyWarmup.from_proportion(100, proportion)


def _lrs_seen_by_updates(optimizer, scheduler, n):
    """Run ``n`` updates in the standard torch order; the lr each ``optimizer.step()`` used."""
    seen = []
    for _ in range(n):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def _sgd(lr, groups=1):
    params = [torch.nn.Parameter(torch.ones(2)) for _ in range(groups)]
    for p in params:
        p.grad = torch.ones_like(p)
    return torch.optim.SGD([{"params": [p], "lr": lr * (i + 1)} for i, p in enumerate(params)])


@pytest.mark.parametrize("relative_to", ["start", "warmup"])
def test_lambda_lr_gives_factor_t_to_update_t(relative_to):
    sched = PolyWarmup(40, 8, decay_power=0.5, relative_to=relative_to)
    opt = _sgd(0.1, groups=2)
    scheduler = sched.lambda_lr(opt)
    seen = _lrs_seen_by_updates(opt, scheduler, 45)
    for t, lrs in enumerate(seen, start=1):
        assert lrs == pytest.approx([0.1 * sched(t), 0.2 * sched(t)], REL)
    if relative_to == "start":  # NVIDIA: update t uses p = t / total_steps
        assert seen[0][0] == pytest.approx(0.1 * (1 / 40) / (8 / 40), REL)


def test_lambda_lr_reproduces_nvidia_phase1_lrs():
    total, proportion, lr = PHASE1
    opt = _sgd(lr)
    scheduler = PolyWarmup.from_proportion(total, proportion).lambda_lr(opt)
    seen = [lrs[0] for lrs in _lrs_seen_by_updates(opt, scheduler, total)]
    expected = [lr * nvidia_poly_warmup(t, total, proportion) for t in range(1, total + 1)]
    assert seen == pytest.approx(expected, REL)
    assert seen[-1] == 0.0


def test_lambda_lr_state_dict_resumes():
    sched = PolyWarmup(30, 5)
    opt = _sgd(0.1)
    scheduler = sched.lambda_lr(opt)
    _lrs_seen_by_updates(opt, scheduler, 12)
    state = scheduler.state_dict()
    opt2 = _sgd(0.1)
    resumed = sched.lambda_lr(opt2)
    resumed.load_state_dict(state)
    opt2.param_groups[0]["lr"] = resumed.get_last_lr()[0]
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.1 * sched(13), REL)
    assert _lrs_seen_by_updates(opt2, resumed, 5) == _lrs_seen_by_updates(opt, scheduler, 5)


def test_lambda_lr_last_epoch_resume():
    sched = PolyWarmup(30, 5)
    opt = _sgd(0.1)
    opt.param_groups[0]["initial_lr"] = 0.1
    resumed = sched.lambda_lr(opt, last_epoch=12 - 1)  # after 12 completed updates
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * sched(13), REL)
    assert resumed.last_epoch == 12


def test_start_phase_restarts_the_schedule():
    (t1, w1, lr1), (t2, w2, lr2) = PHASE1, PHASE2
    opt = _sgd(lr1)
    phase1 = PolyWarmup.from_proportion(t1, w1)
    _lrs_seen_by_updates(opt, phase1.lambda_lr(opt), t1)
    assert opt.param_groups[0]["lr"] == 0.0  # past the end of phase 1

    phase2 = PolyWarmup.from_proportion(t2, w2)
    scheduler = start_phase(opt, phase2, lr=lr2)
    seen = [lrs[0] for lrs in _lrs_seen_by_updates(opt, scheduler, t2)]
    expected = [lr2 * nvidia_poly_warmup(t, t2, w2) for t in range(1, t2 + 1)]
    assert seen == pytest.approx(expected, REL)
    assert seen[0] == pytest.approx(lr2 / (w2 * t2), REL)  # warming up again from step 1
    assert max(seen) == pytest.approx(lr2 * 200 / (w2 * t2), REL)  # last warmup step, t = 200


def test_start_phase_without_it_keeps_old_base_lr():
    """Why start_phase sets initial_lr: LambdaLR only fills it with setdefault."""
    opt = _sgd(6e-3)
    PolyWarmup(10, 2).lambda_lr(opt)
    opt.param_groups[0]["lr"] = 4e-3
    naive = PolyWarmup(10, 2).lambda_lr(opt)
    assert naive.base_lrs == [6e-3]
    assert start_phase(opt, PolyWarmup(10, 2), lr=4e-3).base_lrs == [4e-3]


def test_start_phase_per_group_lr():
    opt = _sgd(1.0, groups=2)
    scheduler = start_phase(opt, PolyWarmup(10, 0, relative_to="warmup"), lr=[0.5, 0.25])
    assert scheduler.base_lrs == [0.5, 0.25]
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5 * 0.9**0.5, 0.25 * 0.9**0.5])
    with pytest.raises(ValueError, match="lr"):
        start_phase(opt, PolyWarmup(10, 0), lr=[0.5])
