"""The stages of one LAMB-family step as data: each param group's pipeline, built from its knobs.

One step is the pipeline (``Lamb.step``)::

    pre-normalize -> moments -> direction -> weight decay -> trust ratio -> apply

Notation: g gradient, G global L2 norm of every gradient of every group, w weights, m / v first
and second moments, t the group's step count (1-based), bc1 = 1 - beta1^t, bc2 = 1 - beta2^t,
d the direction (Adam's m̂/(√v̂+ε) or ε-free a·atan2(m̂, b·√v̂), or the gradient for SGD
momentum), u the update whose norm enters the trust ratio, r the trust ratio, η the learning rate.

:func:`build` reads a group's knobs, each at most once, and chooses the stages; a stage holds
the values it needs, and every path (reference, fast, compiled) reads those values from the
stages, never from the knobs. Besides :func:`build`, a step reads a group's knobs only to
decide whether to rebuild (:class:`Pipelines` compares them with the last build) and ``lr``
(:func:`step_scalars`); ``tests/test_stages.py`` counts the reads. Which knob :func:`build`
reads for which stage:

- stage 1, :class:`Prenormalize`: ``prenorm``, ``max_grad_norm``.
- ``decay`` chooses which stage gets λ·w: :class:`L2Term` (stage 1), :class:`DecoupledDecay` or
  :class:`InRatioDecay` (stage 4); none when ``weight_decay`` (λ) is 0. λ fills that stage and
  :class:`~lamb_variants.trust.RatioRow` (stage 5: the split denominator and ``adapt="decayed"``).
- ``moments`` chooses :class:`AdamMoments` + :class:`AdamDirection` + :class:`AdamApply`, or
  :class:`GradientDirection` + :class:`MomentumApply`.
- stage 2, :class:`AdamMoments`: ``betas``, ``grad_averaging``, ``bias_correction=True``
  (m̂, v̂); stage 6, :class:`AdamApply`: ``bias_correction="step_size"`` (η_t) and ``betas``.
- stage 3, :class:`AdamDirection`: ``eps_mode``; ``eps``, ``eps_inside_sqrt`` only for
  ``eps_mode="add"`` (Adam-atan2 has no ε).
- stage 5, :class:`~lamb_variants.trust.RatioRow`: ``layer_split``, ``adapt``, ``phi``,
  ``phi_min``, ``phi_max``, ``trust_clip``, ``trust_coeff``, ``trust_eps``, ``ratio_denominator``
  (and λ, above).
- stage 6, :class:`MomentumApply`: ``momentum``, ``dampening``, ``nesterov``.
- ``lr``: not by :func:`build` but every step (:func:`step_scalars`), since schedulers change it.

Running the stages one tensor at a time, as :meth:`Pipeline.run_direction` and
:attr:`Pipeline.apply` do, is the reference path (``impl="reference"``): the math written out,
the specification. The fast path (:mod:`lamb_variants.fast`) and ``impl="compiled"``
(:mod:`lamb_variants.compiled`) fuse stages 1-4 and 6 over blocks of tensors, with the values
of the same stage objects; tests prove them equal to the reference for every knob value. Stage
1's factor (:meth:`Prenormalize.factor`) and stage 5 (:mod:`lamb_variants.trust`) are shared by
all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor

from .knobs import KNOB_NAMES
from .trust import Norms, RatioInputs, RatioRow, ratio_inputs, squared_norm

Scalar = float | Tensor
S = TypeVar("S")


@dataclass(frozen=True)
class StepScalars:
    """What a group's stages need from the step besides tensors: t, η and the stage-1 factor."""

    step: int
    lr: float
    pre: Scalar


def step_scalars(group: dict[str, Any], pre: Scalar) -> StepScalars:
    return StepScalars(step=group["step"], lr=float(group["lr"]), pre=pre)


@dataclass
class Flow:
    """One tensor on its way through stages 1-4: ĝ (``g``), d and u as the stages set them."""

    w: Tensor
    g: Tensor
    state: dict[str, Any]
    m_hat: Tensor | None = None
    v_hat: Tensor | None = None
    d: Tensor | None = None
    u: Tensor | None = None


class Stage(Protocol):
    """A per-tensor stage of the reference path (stages 1-4)."""

    def __call__(self, x: Flow, t: StepScalars) -> None: ...


# ----------------------------------------------------------------------------------------------
# Stage 1: pre-normalize
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prenormalize:
    """ĝ = c·g, with c from G (shared by every path, since G needs every group's gradients).

    - ``"none"``: c = 1.
    - ``"clip"``: c = 1/max(1, G/M), M = ``max_grad_norm`` (apex FusedLAMB, timm Lamb, NVLAMB's
      "normalize if ‖g‖ > 1", Google BERT's clip_by_global_norm).
    - ``"normalize"``: c = 1/G always (the NVLAMB text read literally); 1 when G = 0.
    """

    how: str
    max_grad_norm: float

    def factor(self, grad_norm: Tensor, host: bool) -> Scalar:
        if self.how == "none":
            return 1.0
        g = grad_norm
        if self.how == "clip":
            factor = 1.0 / torch.clamp(g / self.max_grad_norm, min=1.0)
        else:
            factor = torch.where(g > 0, 1.0 / g, torch.ones_like(g))
        # A CPU scalar is free to read, and Python floats let the fast path fold it into other
        # scalars; on an accelerator it stays a device tensor so the step never waits on the host.
        return factor.item() if host else factor

    def __call__(self, x: Flow, t: StepScalars) -> None:
        x.g = x.g * t.pre


@dataclass(frozen=True)
class L2Term:
    """``decay="l2"``: ĝ ← ĝ + λw, so λw goes through the moments (Adam's L2 regularisation)."""

    weight_decay: float

    def __call__(self, x: Flow, t: StepScalars) -> None:
        x.g = x.g + self.weight_decay * x.w


# ----------------------------------------------------------------------------------------------
# Stages 2-3: moments and direction
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdamMoments:
    """m ← β1·m + β3·ĝ, v ← β2·v + (1-β2)·ĝ² (β3 = 1-β1, or 1 without ``grad_averaging``);
    m̂ = m/bc1, v̂ = v/bc2 with ``bias_correction=True``, else m̂ = m, v̂ = v."""

    beta1: float
    beta2: float
    beta3: float
    correct: bool

    def init_state(self, w: Tensor, state: dict[str, Any]) -> None:
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(w, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(w, memory_format=torch.preserve_format)

    def corrections(self, step: int) -> tuple[float, float]:
        """(bc1, bc2) at step t; (1, 1) without ``bias_correction=True``."""
        if not self.correct:
            return 1.0, 1.0
        return 1.0 - self.beta1**step, 1.0 - self.beta2**step

    def __call__(self, x: Flow, t: StepScalars) -> None:
        m, v = x.state["exp_avg"], x.state["exp_avg_sq"]
        m.mul_(self.beta1).add_(x.g, alpha=self.beta3)
        v.mul_(self.beta2).addcmul_(x.g, x.g, value=1 - self.beta2)
        bc1, bc2 = self.corrections(t.step)
        x.m_hat, x.v_hat = m / bc1, v / bc2


#: Adam-atan2's constants, d = a·atan2(m̂, b·√v̂): Everett et al. 2024, "Scaling Exponents Across
#: Parameterizations and Optimizers" (arXiv 2407.05872, ICML 2024); the values are those of the
#: public implementations (lucidrains/adam-atan2-pytorch: ``a = 1.27``, ``b = 1.``). a ≈ 4/π
#: makes a steady gradient (m̂ = √v̂, where Adam's direction is 1) give a·π/4 = 0.997; with
#: b = 1, d ≈ a·m̂/√v̂ where |m̂| ≪ √v̂, and |d| < a·π/2 ≈ 2 everywhere.
ATAN2_A = 1.27
ATAN2_B = 1.0


@dataclass(frozen=True)
class AdamDirection:
    """Stage 3 with Adam moments; u = d until stage 4.

    - ``eps_mode="add"``: d = m̂/(√v̂ + ε), or m̂/√(v̂ + ε) with ``eps_inside_sqrt``.
    - ``eps_mode="atan2"`` (``atan2=True``): Adam-atan2 of Everett et al. 2024 (arXiv
      2407.05872), d = a·atan2(m̂, b·√v̂) elementwise with a = :data:`ATAN2_A`, b =
      :data:`ATAN2_B`. No ε: atan2(c·y, c·x) = atan2(y, x) for c > 0, so scaling every gradient
      by c (m̂ by c, √v̂ by c) leaves d unchanged, where m̂/(√v̂ + ε) shrinks once √v̂ ≲ ε; d is
      bounded by a·π/2, and atan2(0, 0) = 0. ``eps`` and ``eps_inside_sqrt`` do not act (the
      stage holds ε = 0 and ``inside_sqrt=False``).
    """

    eps: float
    inside_sqrt: bool
    atan2: bool = False

    def __call__(self, x: Flow, t: StepScalars) -> None:
        assert x.m_hat is not None and x.v_hat is not None
        if self.atan2:
            x.d = ATAN2_A * torch.atan2(x.m_hat, ATAN2_B * torch.sqrt(x.v_hat))
        elif self.inside_sqrt:
            x.d = x.m_hat / torch.sqrt(x.v_hat + self.eps)
        else:
            x.d = x.m_hat / (torch.sqrt(x.v_hat) + self.eps)
        x.u = x.d


@dataclass(frozen=True)
class GradientDirection:
    """``moments="momentum"``: d = ĝ; the momentum comes after the trust ratio, as LARS does."""

    def __call__(self, x: Flow, t: StepScalars) -> None:
        x.d = x.g.clone()
        x.u = x.d


# ----------------------------------------------------------------------------------------------
# Stage 4: weight decay (present only when λ != 0; ``"l2"`` acted in stage 1)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecoupledDecay:
    """``decay="decoupled"`` (timm, AdamW): w ← w·(1 - η·λ) before the norms; u = d."""

    weight_decay: float

    def __call__(self, x: Flow, t: StepScalars) -> None:
        x.w.mul_(1 - t.lr * self.weight_decay)


@dataclass(frozen=True)
class InRatioDecay:
    """``decay="in_ratio"`` (apex, the LAMB paper): u = d + λw, inside the trust ratio."""

    weight_decay: float

    def __call__(self, x: Flow, t: StepScalars) -> None:
        assert x.d is not None
        x.u = x.d + self.weight_decay * x.w


# ----------------------------------------------------------------------------------------------
# Stage 6: apply
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdamApply:
    """w ← w - η_t·r·u, η_t = η, or η·√bc2/bc1 for ``bias_correction="step_size"`` (DeepSpeed,
    torch-optimizer ``debias``)."""

    beta1: float
    beta2: float
    step_size_correction: bool

    def step_size(self, t: StepScalars) -> float:
        if not self.step_size_correction:
            return t.lr
        bc1, bc2 = 1.0 - self.beta1**t.step, 1.0 - self.beta2**t.step
        return t.lr * math.sqrt(bc2) / bc1

    def __call__(self, w: Tensor, u: Tensor, ratio: Scalar, state: dict, t: StepScalars) -> None:
        w.add_(u * ratio, alpha=-self.step_size(t))


@dataclass(frozen=True)
class MomentumApply:
    """torch.optim.SGD's momentum on r·u: b ← μ·b + (1-dampening)·r·u (b = r·u on the first
    step); w ← w - η·(r·u + μ·b if nesterov else b)."""

    momentum: float
    dampening: float
    nesterov: bool

    def __call__(self, w: Tensor, u: Tensor, ratio: Scalar, state: dict, t: StepScalars) -> None:
        step = u * ratio
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = step.clone()
        else:
            buf.mul_(self.momentum).add_(step, alpha=1 - self.dampening)
        step = step + self.momentum * buf if self.nesterov else buf
        w.add_(step, alpha=-t.lr)


# ----------------------------------------------------------------------------------------------
# The pipeline of one group
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pipeline:
    """One group's stages: ``direction`` (stages 1-4, in order), ``ratio`` (stage 5's row) and
    ``apply`` (stage 6); ``prenorm`` is ``direction[0]``, exposed for its factor."""

    prenorm: Prenormalize
    direction: tuple[Stage, ...]
    ratio: RatioRow
    apply: AdamApply | MomentumApply

    def find(self, kind: type[S]) -> S | None:
        """The stage of this type in stages 1-4, or None where the knobs left it out."""
        return next((stage for stage in self.direction if isinstance(stage, kind)), None)

    def init_state(self, w: Tensor, state: dict[str, Any]) -> None:
        """Create the state the stages keep (Adam's m and v) before the first step."""
        adam = self.find(AdamMoments)
        if adam is not None:
            adam.init_state(w, state)

    def run_direction(
        self, w: Tensor, g: Tensor, state: dict, t: StepScalars
    ) -> tuple[Tensor, Norms]:
        """Stages 1-4 for one tensor; returns u and the squared norms stage 5 needs (the other
        intermediates are dropped here, so a reference step keeps one temporary per tensor)."""
        x = Flow(w, g, state)
        for stage in self.direction:
            stage(x, t)
        assert x.u is not None and x.d is not None
        return x.u, Norms(squared_norm(x.w), squared_norm(x.u), squared_norm(x.d))


def build(knobs: dict[str, Any]) -> Pipeline:
    """A group's pipeline from its knobs (all but ``lr``, read every step): the one place where
    a stage is chosen or filled from a knob. The module docstring says which knob goes where."""
    lam = knobs["weight_decay"]
    decay = knobs["decay"]
    prenorm = Prenormalize(knobs["prenorm"], knobs["max_grad_norm"])
    direction: list[Stage] = [prenorm]
    if decay == "l2" and lam != 0:
        direction.append(L2Term(lam))
    apply: AdamApply | MomentumApply
    if knobs["moments"] == "adam":
        beta1, beta2 = knobs["betas"]
        beta3 = 1.0 - beta1 if knobs["grad_averaging"] else 1.0
        correction = knobs["bias_correction"]
        direction.append(AdamMoments(beta1, beta2, beta3, correct=correction is True))
        if knobs["eps_mode"] == "atan2":
            # ε-free: eps and eps_inside_sqrt are not read, so they cannot act.
            direction.append(AdamDirection(0.0, inside_sqrt=False, atan2=True))
        else:
            direction.append(AdamDirection(knobs["eps"], knobs["eps_inside_sqrt"]))
        apply = AdamApply(beta1, beta2, step_size_correction=correction == "step_size")
    else:
        direction.append(GradientDirection())
        apply = MomentumApply(knobs["momentum"], knobs["dampening"], knobs["nesterov"])
    if decay == "decoupled" and lam != 0:
        direction.append(DecoupledDecay(lam))
    elif decay == "in_ratio" and lam != 0:
        direction.append(InRatioDecay(lam))
    adapt = knobs["adapt"]
    identity = knobs["phi"] == "identity"
    clip = knobs["trust_clip"]
    ratio = RatioRow(
        layer_split=knobs["layer_split"],
        weight_decay=lam,
        adapt=adapt == "all" or (adapt == "decayed" and lam != 0),
        phi_min=0.0 if identity else knobs["phi_min"],
        phi_max=math.inf if identity else knobs["phi_max"],
        clip_min=clip[0] if clip else 0.0,
        clip_max=clip[1] if clip else math.inf,
        coeff=knobs["trust_coeff"],
        eps=knobs["trust_eps"],
        split=knobs["ratio_denominator"] == "split",
    )
    return Pipeline(prenorm, tuple(direction), ratio, apply)


#: What a pipeline is built from: every knob but ``lr``, which schedulers change every step.
_BUILT_FROM = tuple(k for k in KNOB_NAMES if k != "lr")


class Pipelines:
    """Each group's :class:`Pipeline`, rebuilt only when that group's knobs change, and stage 5's
    per-tensor vectors, rebuilt only when the knobs or the step's tensors change (so a steady
    step makes no host-to-device copies). Derived from the groups; never saved."""

    def __init__(self) -> None:
        self._built: list[tuple[tuple, Pipeline]] = []
        self._ratio_key: tuple = ()
        self._ratio_inputs: tuple[Tensor, RatioInputs] | None = None

    def of(self, groups: Sequence[dict[str, Any]]) -> list[Pipeline]:
        built = []
        for i, group in enumerate(groups):
            key = tuple(group[k] for k in _BUILT_FROM)
            if i < len(self._built) and self._built[i][0] == key:
                built.append(self._built[i])
            else:
                built.append((key, build(group)))
        self._built = built
        return [p for _, p in built]

    def ratio_inputs(
        self, rows: list[RatioRow], layer_of: list[int], device: torch.device, dtype: torch.dtype
    ) -> tuple[Tensor, RatioInputs]:
        """``layer_of`` as a device tensor, and :class:`RatioInputs` over the step's tensors."""
        key = (tuple(rows), tuple(layer_of), device, dtype)
        if self._ratio_inputs is None or self._ratio_key != key:
            self._ratio_inputs = (
                torch.tensor(layer_of, device=device),
                ratio_inputs(rows, device, dtype),
            )
            self._ratio_key = key
        return self._ratio_inputs


@dataclass
class Work:
    """The tensors of one step, in step order (every group, params that have a gradient)."""

    params: list[Tensor] = field(default_factory=list)
    grads: list[Tensor] = field(default_factory=list)
    group_of: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    rows: list[RatioRow] = field(default_factory=list)  # each tensor's group's stage-5 row
    layer_of: list[int] = field(default_factory=list)
    layer_names: list[str] = field(default_factory=list)
    norm_dtype: torch.dtype = torch.float32
