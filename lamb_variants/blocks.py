"""The fused paths' data: one group's stages folded into scalars for one step
(:class:`GroupScalars`), and a block of tensor pieces processed together (:class:`Block`).

Shared by the fast path (:mod:`lamb_variants.fast`) and the compiled kernels
(:mod:`lamb_variants.compiled`), below both, so neither imports the other for its types.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from . import stages
from .stages import Scalar

# ----------------------------------------------------------------------------------------------
# Per-group scalars of one step, folded for the fused kernels
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupScalars:
    """One group's stages for one step, in the folded form the fused kernels use.

    Built from the group's :class:`~lamb_variants.stages.Pipeline` (which read the knobs), never
    from the knobs themselves. ``adam``/``direction`` are the Adam stages 2-3 (None for SGD
    momentum, whose stage 6 is ``momentum``); ``l2``, ``decoupled`` and ``in_ratio`` are λ of the
    decay stage the pipeline has (0 for the others); ``split``: stage 5 needs ‖d‖. ``pre``
    multiplies every gradient (stage 1); ``bc1``/``bc2`` are the bias corrections used on m and
    v (1 unless ``bias_correction=True``); ``step_size`` is η_t of stage 6.
    """

    pre: Scalar
    lr: float
    bc1: float
    bc2: float
    step_size: float
    adam: stages.AdamMoments | None
    direction: stages.AdamDirection | None
    momentum: stages.MomentumApply | None
    l2: float
    decoupled: float
    in_ratio: float
    split: bool


def group_scalars(pipe: stages.Pipeline, t: stages.StepScalars) -> GroupScalars:
    adam = pipe.find(stages.AdamMoments)
    bc1, bc2 = adam.corrections(t.step) if adam is not None else (1.0, 1.0)
    apply = pipe.apply
    momentum = apply if isinstance(apply, stages.MomentumApply) else None
    step_size = apply.step_size(t) if isinstance(apply, stages.AdamApply) else t.lr

    def decay(kind: type[stages.L2Term | stages.DecoupledDecay | stages.InRatioDecay]) -> float:
        stage = pipe.find(kind)
        return 0.0 if stage is None else stage.weight_decay

    return GroupScalars(
        pre=t.pre,
        lr=t.lr,
        bc1=bc1,
        bc2=bc2,
        step_size=step_size,
        adam=adam,
        direction=pipe.find(stages.AdamDirection),
        momentum=momentum,
        l2=decay(stages.L2Term),
        decoupled=decay(stages.DecoupledDecay),
        in_ratio=decay(stages.InRatioDecay),
        split=pipe.ratio.split,
    )


# ----------------------------------------------------------------------------------------------
# Blocks of tensor pieces
# ----------------------------------------------------------------------------------------------


@dataclass
class Block:
    """Pieces (flat views) of tensors of one group, device and dtype, processed together.

    ``per_piece`` blocks hold chunks of large CPU tensors and run ``out=`` ops piece by piece;
    the others run foreach ops over many small tensors (or a whole group on an accelerator).
    """

    group: int
    per_piece: bool
    tensor: list[int] = field(default_factory=list)  # step-order index of each piece's tensor
    spans: list[tuple[int, int]] = field(default_factory=list)  # the piece within its tensor
    numel: int = 0
    w: list[Tensor] = field(default_factory=list)
    g: list[Tensor] = field(default_factory=list)  # re-sliced every step (grads may be new)
    u: list[Tensor] = field(default_factory=list)  # views of the persistent update buffer
    exp_avg: list[Tensor] = field(default_factory=list)
    exp_avg_sq: list[Tensor] = field(default_factory=list)
    buf: list[Tensor] = field(default_factory=list)
    index: Tensor | None = None  # ``tensor`` as a device tensor, for index_add_
