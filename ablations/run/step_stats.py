"""The optimizer's side of each training step, as device tensors (no host sync): what
``PretrainingModule`` writes into ``metrics.jsonl`` (:data:`OPTIM`) and ``layers.jsonl``
(:data:`LAYER`).

- ``lamb_variants.Lamb`` reports its own telemetry (``opt.stats``: gradient norms, ‖w‖, ‖u‖,
  trust ratios; ``opt.direction_stats()``: ε's share of the direction). Any other optimizer (an
  ``optimizer.factory`` one) gets what can be measured from outside: the gradient norm and ‖w‖,
  the rest NaN (written as null).
- Every optimizer gets the applied relative update ‖Δw‖/‖w‖ of each tensor, measured from a copy
  of the weights taken before a sampled step (every ``log.layer_every`` steps), and a count of
  the updates it applied (its step post-hook: a step the fp16 GradScaler skips never runs it).
- ``log.noise_scale``: each micro-batch's squared gradient norm, read by tensor hooks before the
  gradient is accumulated into ``.grad`` and before DDP's all-reduce (:mod:`ablations.run.noise`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

import lamb_variants
from ablations.run.curves import LAYER_VALUES

#: Per step: global gradient norm before and after pre-normalization (what the moments see),
#: global ‖u‖, trust ratio min/median/max over adapted layers, the GradScaler's scale, and for
#: the noise scale the micro-batch gradients' mean squared norm and the step gradient's.
OPTIM = (
    "grad_norm",
    "moments_grad_norm",
    "update_norm",
    "r_min",
    "r_p50",
    "r_max",
    "loss_scale",
    "noise_small_sq",
    "noise_big_sq",
)
#: Per tensor, every ``log.layer_every`` steps (the fields of ``layers.jsonl``): trust ratio,
#: the layer's ‖w‖ and ‖u‖, the ε-dominated fraction and median √v̂/ε
#: (:mod:`lamb_variants.telemetry`), and the applied ‖Δw‖/‖w‖.
LAYER = LAYER_VALUES


class StepStats:
    """The numbers of one phase's optimizer steps, for ``model`` and the optimizer it
    :meth:`watch` es."""

    def __init__(self, model: torch.nn.Module, *, noise_scale: bool) -> None:
        self.model = model
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.applied = 0  # updates the optimizer applied (its step post-hook)
        self._generic: lamb_variants.LambStats | None = None
        self._index: tuple[tuple, Tensor, Tensor] | None = None
        self._noise_sq: Tensor | None = None  # Σ over the step's micro-batches of ‖g_i/k‖²
        if noise_scale:
            device = next(model.parameters()).device
            self._noise_sq = torch.zeros((), dtype=torch.float64, device=device)
            for p in model.parameters():
                if p.requires_grad:
                    p.register_hook(self._noise_hook)

    def watch(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.register_step_post_hook(self._after_step)

    def _after_step(self, optimizer: torch.optim.Optimizer, *args: Any) -> None:
        """After every applied update: count it; for an optimizer without ``stats`` measure
        the gradient norm (unscaled by then under fp16) and ‖w‖ now."""
        self.applied += 1
        if not isinstance(optimizer, lamb_variants.Lamb):
            self._generic = generic_stats(self.model, self.names)

    def of(self, optimizer: torch.optim.Optimizer) -> lamb_variants.LambStats:
        """The telemetry of the step that just ran."""
        if isinstance(optimizer, lamb_variants.Lamb) and optimizer.stats is not None:
            return optimizer.stats
        assert self._generic is not None, "no step has run"
        return self._generic

    # --- the noise scale ----------------------------------------------------------------------

    def _noise_hook(self, grad: Tensor) -> None:
        """A parameter's gradient of this micro-batch alone: its squared norm joins the sum."""
        self._noise_sq += torch.linalg.vector_norm(grad.detach()).double() ** 2

    def noise_values(self, accumulation: int, world: int, scale: Tensor | None) -> Tensor:
        """``(|G_b|², 0)`` of the step about to be taken: the micro-batch gradients' mean
        squared norm over its micro-batches and ranks (the hooks saw g_i/k, times the fp16
        scale); |G_B|² is filled in after the step. NaN without ``log.noise_scale``."""
        device = next(self.model.parameters()).device
        if self._noise_sq is None:
            return torch.full((2,), math.nan, dtype=torch.float64, device=device)
        small = all_reduce(self._noise_sq.clone()) * accumulation / world
        if scale is not None:
            small = small / scale.to(torch.float64) ** 2
        self._noise_sq.zero_()
        return torch.stack([small, torch.zeros_like(small)])

    # --- per step -----------------------------------------------------------------------------

    def optim_values(self, stats: lamb_variants.LambStats, scale: Tensor | None) -> Tensor:
        """The first seven of :data:`OPTIM`: gradient norms, ‖u‖ over all tensors, trust ratio
        min/median/max over adapted layers (NaN when none is), the loss scale (NaN without)."""
        first, adapted = self._layers(stats)
        u = stats.update_norms[first]
        ratios = stats.trust_ratios[adapted].to(torch.float64)
        if ratios.numel():
            r = torch.stack([ratios.min(), torch.quantile(ratios, 0.5), ratios.max()])
        else:  # no tensor has a trust ratio (adapt="none", or an optimizer without any)
            r = torch.full((3,), math.nan, dtype=torch.float64, device=u.device)
        if scale is None:
            scale = torch.full((1,), math.nan, dtype=torch.float64, device=u.device)
        return torch.cat(
            [
                stats.grad_norm.reshape(1).to(torch.float64),
                torch.as_tensor(stats.moments_grad_norm).reshape(1).to(torch.float64),
                torch.linalg.vector_norm(u.to(torch.float64)).reshape(1),
                r,
                scale.reshape(1).to(torch.float64),
            ]
        )

    def _layers(self, stats: lamb_variants.LambStats) -> tuple[Tensor, Tensor]:
        """Indices of the first tensor of every layer, and of one tensor per layer that gets a
        trust ratio (cached per tensor layout)."""
        key = (stats.names, stats.layers, stats.adapted)
        if self._index is None or self._index[0] != key:
            first: dict[str, int] = {}
            adapted: dict[str, int] = {}
            for i, layer in enumerate(stats.layers):
                first.setdefault(layer, i)
                if stats.adapted[i]:
                    adapted.setdefault(layer, i)
            device = stats.trust_ratios.device
            self._index = (
                key,
                torch.tensor(list(first.values()), device=device),
                torch.tensor(list(adapted.values()), dtype=torch.long, device=device),
            )
        return self._index[1], self._index[2]

    # --- every log.layer_every steps ----------------------------------------------------------

    def weights(self) -> dict[str, Tensor]:
        """A copy of every trained tensor before a sampled step, for the applied ‖Δw‖."""
        params = dict(self.model.named_parameters())
        return {n: params[n].detach().clone() for n in self.names}

    def layer_values(self, optimizer: torch.optim.Optimizer, before: dict[str, Tensor]) -> Tensor:
        """The :data:`LAYER` rows of the step that just ran, [len(LAYER), tensors]."""
        stats = self.of(optimizer)
        if isinstance(optimizer, lamb_variants.Lamb):
            direction = optimizer.direction_stats()
            eps_rows = [direction.eps_dominated, direction.sqrt_v_over_eps]
        else:
            device = stats.weight_norms.device
            nan = torch.full((len(stats.names),), math.nan, dtype=torch.float64, device=device)
            eps_rows = [nan, nan]
        after = dict(self.model.named_parameters())
        relative = torch.stack(
            [
                torch.linalg.vector_norm((after[n].detach() - before[n]).double())
                / torch.linalg.vector_norm(before[n].double())
                for n in stats.names
            ]
        )
        rows = [stats.trust_ratios, stats.weight_norms, stats.update_norms, *eps_rows, relative]
        return torch.stack([r.to(torch.float64) for r in rows])


def generic_stats(model: torch.nn.Module, names: list[str]) -> lamb_variants.LambStats:
    """``LambStats`` for an optimizer without telemetry: the global gradient norm and each
    tensor's ‖w‖ measured here; ‖u‖ and trust ratios NaN (no such thing)."""
    params = dict(model.named_parameters())
    grads = [params[n].grad for n in names if params[n].grad is not None]
    device = next(iter(params.values())).device
    norm = (
        torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        if grads
        else torch.zeros((), device=device)
    )
    weights = torch.stack([torch.linalg.vector_norm(params[n].detach()) for n in names])
    nan = torch.full((len(names),), math.nan, device=device)
    return lamb_variants.LambStats(
        grad_norm=norm,
        moments_grad_norm=torch.full((), math.nan, device=device),
        names=tuple(names),
        layers=tuple(names),
        weight_norms=weights,
        update_norms=nan,
        trust_ratios=nan,
        adapted=(False,) * len(names),
    )


def restart_steps(optimizer: torch.optim.Optimizer) -> None:
    """NVIDIA's phase-2 start on a carried optimizer: its step count to 0, its moments kept
    (``Lamb.restart_steps``; for another optimizer, every ``state[p]["step"]``)."""
    if isinstance(optimizer, lamb_variants.Lamb):
        optimizer.restart_steps()
        return
    for state in optimizer.state.values():
        step = state.get("step")
        if isinstance(step, Tensor):
            step.zero_()
        elif step is not None:
            state["step"] = 0


def all_reduce(t: Tensor) -> Tensor:
    """Sum over ranks (in place; asynchronous with respect to the host on GPU)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t
