"""Each parameter group's lr: the phase's schedule times the group's ``lr_scale``.

``optimizer.groups.<group>.lr_scale`` (:class:`ablations.config.GroupOverrides`) is a number,
or ``"c_t"``: the bias-correction ratio of the group's own betas at its step t,

    c_t = (1 - β1^t) / √(1 - β2^t),

the factor by which turning bias correction off enlarges the Adam direction (m/√v against
m̂/√v̂ = m/√v · √(1-β2^t)/(1-β1^t), ε aside). With it and bias correction on, a group that gets no
trust ratio (``adapt="decayed"``: apex's no-decay group) takes the step it would take with bias
correction off, exactly at ε = 0 (tests/test_group_overrides.py): the experiment that asks
whether the bias-correction toggle in ``apex`` mode is a learning-rate effect on those tensors.

t counts the phase's updates from 1, as the optimizer's ``group["step"]`` does (NVIDIA's phase 2
restarts both).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR

import lamb_variants
from ablations.config import LR_SCALE_BIAS_CORRECTION


def bias_correction_ratio(t: int, betas: Sequence[float]) -> float:
    """c_t = (1 - β1^t)/√(1 - β2^t) for update t >= 1."""
    beta1, beta2 = betas
    return (1 - beta1**t) / math.sqrt(1 - beta2**t)


def _factor(
    schedule: lamb_variants.PolyWarmup, scale: float | str, betas: Sequence[float]
) -> Callable[[int], float]:
    if scale == LR_SCALE_BIAS_CORRECTION:
        # LambdaLR calls the lambda with t - 1 while update t is pending (PolyWarmup.lambda_lr)
        return lambda epoch: schedule(epoch + 1) * bias_correction_ratio(epoch + 1, betas)
    return lambda epoch: schedule(epoch + 1) * float(scale)


def start_phase(
    optimizer: torch.optim.Optimizer,
    schedule: lamb_variants.PolyWarmup,
    *,
    lr: float,
    scales: Sequence[float | str],
) -> LambdaLR:
    """:func:`lamb_variants.start_phase` with group i's lr at update t equal to
    ``lr * schedule(t) * scale_i(t)``; all scales 1: exactly the former's scheduler."""
    scheduler = lamb_variants.start_phase(optimizer, schedule, lr=lr)
    if all(scale == 1.0 for scale in scales):
        return scheduler
    groups = optimizer.param_groups
    if len(scales) != len(groups):
        raise ValueError(f"scales: expected one per param group ({len(groups)}), got {scales!r}")
    factors = [
        _factor(schedule, scale, group.get("betas", (0.9, 0.999)))
        for scale, group in zip(scales, groups, strict=True)
    ]
    return LambdaLR(optimizer, factors)
