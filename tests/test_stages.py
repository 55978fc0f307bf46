"""Stages as data: each group's pipeline is chosen once from its knobs, and each knob is read once.

The math of every stage is checked elsewhere (fast == reference == compiled, upstream packages,
float64 references); these tests pin down the structure the ``lamb_variants.stages`` docstring
states: which stage each knob value chooses, that :func:`build` reads a knob at most once, and
that a steady step reads each knob of a group exactly once (the pipeline cache's key; ``lr``
for the step's scalars) whatever the ``impl``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
from helpers import make_model, named_groups, train

from lamb_variants import DEFAULTS, KNOB_NAMES, PRESETS, create, stages


class CountingDict(dict):
    """A dict that counts reads of its keys."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads: Counter[str] = Counter()

    def __getitem__(self, key: str) -> Any:
        self.reads[key] += 1
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.reads[key] += 1
        return super().get(key, default)


def _knobs(preset: str, **overrides: Any) -> dict[str, Any]:
    return {**DEFAULTS, **PRESETS[preset].resolved(), **overrides}


ROWS = [(name, {}) for name in sorted(PRESETS)] + [
    ("nvlamb", {"decay": "l2"}),
    ("nvlamb", {"decay": "decoupled"}),
    ("nvlamb", {"decay": "l2", "weight_decay": 0.0}),
    ("nvlamb", {"bias_correction": "step_size", "phi": "clip"}),
    ("nvlamb", {"moments": "momentum", "nesterov": True}),
    ("nvlamb", {"eps_mode": "atan2"}),
    ("deepspeed", {"eps_mode": "atan2", "eps_inside_sqrt": True}),
]


@pytest.mark.parametrize(("preset", "overrides"), ROWS)
def test_build_reads_each_knob_at_most_once_and_never_lr(preset, overrides):
    knobs = CountingDict(_knobs(preset, **overrides))
    stages.build(knobs)
    assert "lr" not in knobs.reads
    assert max(knobs.reads.values()) == 1, knobs.reads


@pytest.mark.parametrize(("preset", "overrides"), ROWS)
def test_knob_values_choose_the_stages(preset, overrides):
    knobs = _knobs(preset, **overrides)
    pipe = stages.build(knobs)
    kinds = [type(s) for s in pipe.direction]
    lam, decay, adam = knobs["weight_decay"], knobs["decay"], knobs["moments"] == "adam"
    assert kinds[0] is stages.Prenormalize and pipe.prenorm is pipe.direction[0]
    assert (stages.L2Term in kinds) == (decay == "l2" and lam != 0)
    assert (stages.DecoupledDecay in kinds) == (decay == "decoupled" and lam != 0)
    assert (stages.InRatioDecay in kinds) == (decay == "in_ratio" and lam != 0)
    assert (stages.AdamMoments in kinds) == (stages.AdamDirection in kinds) == adam
    assert (stages.GradientDirection in kinds) == (not adam)
    assert isinstance(pipe.apply, stages.AdamApply if adam else stages.MomentumApply)
    # the pipeline order: 1 pre-normalize (+ L2), 2-3 moments and direction, 4 decay
    order = [
        stages.Prenormalize,
        stages.L2Term,
        stages.AdamMoments,
        stages.AdamDirection,
        stages.GradientDirection,
        stages.DecoupledDecay,
        stages.InRatioDecay,
    ]
    assert kinds == sorted(kinds, key=order.index)


@pytest.mark.parametrize("eps_inside_sqrt", [False, True])
@pytest.mark.parametrize("eps", [0.0, 1e-6, 1e-3])
def test_eps_mode_atan2_makes_eps_and_its_placement_irrelevant(eps, eps_inside_sqrt):
    """Adam-atan2 is ε-free: its stage 3 is the same whatever ``eps`` and ``eps_inside_sqrt``
    say, and ``eps_mode="add"`` keeps both exactly as before the knob existed."""
    knobs = _knobs("nvlamb", eps=eps, eps_inside_sqrt=eps_inside_sqrt)
    atan2 = stages.build({**knobs, "eps_mode": "atan2"}).find(stages.AdamDirection)
    assert atan2 == stages.AdamDirection(0.0, inside_sqrt=False, atan2=True)
    add = stages.build(knobs).find(stages.AdamDirection)
    assert add == stages.AdamDirection(eps, inside_sqrt=eps_inside_sqrt, atan2=False)


def test_pipelines_are_rebuilt_only_when_a_knob_other_than_lr_changes():
    group = _knobs("nvlamb")
    cache = stages.Pipelines()
    (first,) = cache.of([group])
    group["lr"] = 0.5
    assert cache.of([group])[0] is first
    group["decay"] = "decoupled"
    (rebuilt,) = cache.of([group])
    assert rebuilt is not first and stages.DecoupledDecay in map(type, rebuilt.direction)


@pytest.mark.parametrize("impl", ["reference", "fast", "compiled"])
@pytest.mark.parametrize("preset", ["nvlamb", "lars", "deepspeed"])
def test_a_steady_step_reads_each_knob_of_a_group_once(preset, impl):
    reads: list[dict[str, int]] = []

    def count(opt, t: int) -> None:
        if t == 0:  # the first step built the pipelines; count the reads of the second one
            opt.param_groups[:] = [CountingDict(g) for g in opt.param_groups]
        else:
            reads.extend({k: g.reads[k] for k in KNOB_NAMES} for g in opt.param_groups)

    model = make_model()
    train(lambda m: create(preset, named_groups(m), lr=1e-3, impl=impl), model, 2, callback=count)
    assert reads == [dict.fromkeys(KNOB_NAMES, 1)] * 2
    assert all(torch.isfinite(p).all() for p in model.parameters())
