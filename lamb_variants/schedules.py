"""Warmup + polynomial-decay learning-rate schedules as pure functions of the step.

Two published shapes, selected by ``relative_to``:

``"start"`` -- NVIDIA DeepLearningExamples ``PyTorch/LanguageModeling/BERT/schedulers.py``
    ``PolyWarmUpScheduler`` (the NVLAMB BERT recipe; google-research/bert ``optimization.py``
    ``create_optimizer`` has the same shape with power 1). The decay is measured from step 0,
    so the factor drops at the end of warmup: with ``p = t / T`` and ``w = W / T``::

        f(t) = p / w                        if p < w   (i.e. t < W)
        f(t) = e + (1 - e) * (1 - p) ** d   otherwise

    In NVIDIA's phase 1 (T = 7038, warmup_proportion 0.2843, lr 6e-3) the lr falls from
    6e-3 to 6e-3 * (1 - 0.2843) ** 0.5 = 5.076e-3 after warmup.

``"warmup"`` -- decay measured from the end of warmup, continuous there (HF
    ``get_polynomial_decay_schedule_with_warmup``; the "warmup, then polynomial decay" reading of
    google-research/bert)::

        f(t) = t / W                                      if t < W
        f(t) = e + (1 - e) * (1 - (t - W) / (T - W)) ** d  otherwise

Here ``t`` is the step, ``T = total_steps``, ``W = warmup_steps``, ``d = decay_power`` and
``e = end_factor`` (HF's ``lr_end / lr``; NVIDIA and Google use 0). For ``t >= T`` the factor
stays at its value at ``T``: ``e`` when ``d > 0`` (no negative base is raised to a fractional
power) and 1 when ``d == 0``, which makes ``decay_power=0`` a constant schedule after warmup.

Step counting. ``t`` is the optimizer step the factor is used by, counted like torch's
``state["step"]`` and the bias-correction exponent: the first ``optimizer.step()`` is ``t = 1``
(``t = 0`` is "before any update" and gives 0 during warmup). This is NVIDIA's convention:
its ``scheduler.step()`` runs *before* ``optimizer.step()`` and sets
``last_epoch = group["step"] + 1``, so update ``t`` uses ``p = t / T``. It also means update
``W`` is the first at full lr in ``"warmup"`` mode and update ``T`` uses ``end_factor``.
Google BERT and HF evaluate their formulas at the 0-based ``global_step`` instead, i.e. their
update ``t`` uses ``f(t - 1)``; call ``warmup_poly(t - 1, ...)`` to reproduce them exactly.

Phases. NVIDIA restarts the schedule (and the optimizer's step count) at the start of phase 2
while keeping the moments. :func:`start_phase` does the schedule half: a fresh
:class:`~torch.optim.lr_scheduler.LambdaLR` that counts from 0 again at a new base lr.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["PolyWarmup", "RelativeTo", "start_phase", "warmup_poly"]

RelativeTo = Literal["start", "warmup"]
_RELATIVE_TO = ("start", "warmup")


def _validate(
    total_steps: int,
    warmup_steps: float,
    decay_power: float,
    relative_to: str,
    end_factor: float,
) -> None:
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
        raise ValueError(f"total_steps must be an integer > 0, got {total_steps!r}")
    if not (0 <= warmup_steps <= total_steps):
        raise ValueError(
            f"warmup_steps must satisfy 0 <= warmup_steps <= total_steps ({total_steps}), "
            f"got {warmup_steps!r}"
        )
    if not (math.isfinite(decay_power) and decay_power >= 0):
        raise ValueError(f"decay_power must be a finite number >= 0, got {decay_power!r}")
    if relative_to not in _RELATIVE_TO:
        raise ValueError(f"relative_to must be one of {_RELATIVE_TO}, got {relative_to!r}")
    if not (0 <= end_factor <= 1):
        raise ValueError(f"end_factor must satisfy 0 <= end_factor <= 1, got {end_factor!r}")


def _factor(
    step: float,
    total_steps: int,
    warmup_steps: float,
    decay_power: float,
    relative_to: str,
    end_factor: float,
) -> float:
    if not step >= 0:
        raise ValueError(f"step must be >= 0, got {step!r}")
    step = min(step, total_steps)
    if step < warmup_steps:
        return step / warmup_steps
    if relative_to == "start":
        remaining = 1.0 - step / total_steps
    elif warmup_steps < total_steps:
        remaining = 1.0 - (step - warmup_steps) / (total_steps - warmup_steps)
    else:  # warmup_steps == total_steps == step: the decay has no length
        remaining = 0.0
    return end_factor + (1.0 - end_factor) * remaining**decay_power


def warmup_poly(
    step: float,
    *,
    total_steps: int,
    warmup_steps: float,
    decay_power: float,
    relative_to: RelativeTo = "warmup",
    end_factor: float = 0.0,
) -> float:
    """The lr multiplier for optimizer step ``step`` (see the module docstring for the math).

    Args:
        step: The optimizer step the factor is used by, counted like torch's ``state["step"]``:
            the first ``optimizer.step()`` is 1; 0 means before any update. Must be >= 0;
            steps past ``total_steps`` keep the value at ``total_steps``.
        total_steps: ``T``, the length of the schedule in optimizer steps (> 0).
        warmup_steps: ``W``, linear warmup length, ``0 <= W <= T``. May be fractional:
            NVIDIA's ``warmup_proportion * total_steps`` (e.g. 0.2843 * 7038 = 2000.9).
        decay_power: ``d >= 0``. NVIDIA LAMB 0.5, Google BERT / HF default 1.0; 0 keeps the
            factor at 1 after warmup.
        relative_to: ``"start"``: decay from step 0 (NVIDIA ``PolyWarmUpScheduler``, Google
            BERT), with a drop at the end of warmup; ``"warmup"``: decay from the end of warmup,
            continuous (HF ``get_polynomial_decay_schedule_with_warmup``).
        end_factor: ``e`` in ``[0, 1]``, the factor reached at ``total_steps`` (HF's
            ``lr_end / lr``).

    Returns:
        The multiplier of the base lr, in ``[0, 1]``.

    Raises:
        ValueError: An argument is out of range; the message names it and the allowed range.
    """
    _validate(total_steps, warmup_steps, decay_power, relative_to, end_factor)
    return _factor(step, total_steps, warmup_steps, decay_power, relative_to, end_factor)


@dataclass(frozen=True)
class PolyWarmup:
    """A warmup + polynomial-decay schedule: config as data, plus a ``LambdaLR`` factory.

    Defaults are NVIDIA's BERT recipe shape (``PolyWarmUpScheduler``: decay from step 0,
    ``degree=0.5``). ``schedule(t)`` is :func:`warmup_poly` for optimizer step ``t`` (1-based,
    like torch's ``state["step"]``).

    Example (NVIDIA phase 1)::

        sched = PolyWarmup.from_proportion(7038, 0.2843)
        lr_scheduler = sched.lambda_lr(optimizer)  # optimizer built with lr=6e-3
        for batch in loader:
            loss(batch).backward()
            optimizer.step()  # update t uses lr = 6e-3 * sched(t)
            optimizer.zero_grad()
            lr_scheduler.step()

    Attributes:
        total_steps: ``T``, schedule length in optimizer steps (> 0).
        warmup_steps: ``W``, warmup length in steps, ``0 <= W <= T``; may be fractional.
        decay_power: ``d >= 0`` (NVIDIA's ``degree``).
        relative_to: ``"start"`` (NVIDIA, decay from step 0) or ``"warmup"`` (HF, continuous).
        end_factor: Factor reached at ``total_steps``, in ``[0, 1]``.
    """

    total_steps: int
    warmup_steps: float
    decay_power: float = 0.5
    relative_to: RelativeTo = "start"
    end_factor: float = 0.0

    def __post_init__(self) -> None:
        _validate(
            self.total_steps, self.warmup_steps, self.decay_power, self.relative_to, self.end_factor
        )

    @classmethod
    def from_proportion(
        cls,
        total_steps: int,
        warmup_proportion: float,
        *,
        decay_power: float = 0.5,
        relative_to: RelativeTo = "start",
        end_factor: float = 0.0,
    ) -> PolyWarmup:
        """Build from NVIDIA's ``--warmup_proportion`` (``W = warmup_proportion * T``)."""
        if not (0 <= warmup_proportion <= 1):
            raise ValueError(
                f"warmup_proportion must satisfy 0 <= warmup_proportion <= 1, "
                f"got {warmup_proportion!r}"
            )
        return cls(
            total_steps=total_steps,
            warmup_steps=warmup_proportion * total_steps,
            decay_power=decay_power,
            relative_to=relative_to,
            end_factor=end_factor,
        )

    def __call__(self, step: float) -> float:
        """The lr multiplier for optimizer step ``step`` (1-based; 0 = before any update)."""
        return _factor(
            step,
            self.total_steps,
            self.warmup_steps,
            self.decay_power,
            self.relative_to,
            self.end_factor,
        )

    def lambda_lr(self, optimizer: torch.optim.Optimizer, last_epoch: int = -1) -> LambdaLR:
        """A ``LambdaLR`` whose lr at the t-th ``optimizer.step()`` is ``base_lr * self(t)``.

        Use the standard torch order: ``optimizer.step()`` then ``scheduler.step()``.
        ``LambdaLR`` calls its lambda with ``last_epoch``, which is 0 after construction and
        ``t - 1`` after ``t - 1`` calls to ``scheduler.step()``, i.e. while update ``t`` is
        pending. The lambda is therefore ``lambda e: self(e + 1)``, which reproduces NVIDIA's
        ``PolyWarmUpScheduler`` (stepped *before* the update, with ``last_epoch = step + 1``).

        To resume, prefer ``scheduler.load_state_dict``. ``last_epoch`` is passed to
        ``LambdaLR`` unchanged, and its constructor advances it once: after ``n`` completed
        updates pass ``last_epoch=n - 1`` (the groups must hold ``initial_lr``, as torch
        requires for any ``last_epoch >= 0``).

        The lambda is a plain function, so ``scheduler.state_dict()`` stores only the counters;
        the schedule itself is config.
        """

        def factor(epoch: int) -> float:
            return self(epoch + 1)

        return LambdaLR(optimizer, factor, last_epoch=last_epoch)


def start_phase(
    optimizer: torch.optim.Optimizer,
    schedule: PolyWarmup,
    *,
    lr: float | Sequence[float],
) -> LambdaLR:
    """Start a training phase whose schedule counts from step 0 again (NVIDIA phase 2).

    Sets every param group's ``lr`` and ``initial_lr`` to ``lr`` (one value, or one per group),
    then returns ``schedule.lambda_lr(optimizer)``: the first update of the phase uses
    ``lr * schedule(1)``. Setting ``initial_lr`` matters: ``LambdaLR`` only fills it with
    ``setdefault``, so a new scheduler on an optimizer that already had one would otherwise keep
    the previous phase's base lr. Discard the previous phase's scheduler.

    NVIDIA's phase 2 also zeroes the optimizer's step count (bias correction restarts) while
    keeping ``exp_avg``/``exp_avg_sq``; that is optimizer state and is not touched here.

    Args:
        optimizer: The optimizer, usually carrying state from the previous phase.
        schedule: The new phase's schedule (e.g. ``PolyWarmup.from_proportion(1563, 0.128)``).
        lr: The new phase's base lr (NVIDIA: 6e-3 in phase 1, 4e-3 in phase 2).

    Returns:
        A fresh ``LambdaLR`` for the phase.
    """
    groups = optimizer.param_groups
    lrs = [float(lr)] * len(groups) if isinstance(lr, int | float) else [float(x) for x in lr]
    if len(lrs) != len(groups):
        raise ValueError(f"lr must be one value or one per param group ({len(groups)}), got {lr!r}")
    for group, group_lr in zip(groups, lrs, strict=True):
        group["lr"] = group_lr
        group["initial_lr"] = group_lr
    return schedule.lambda_lr(optimizer)
