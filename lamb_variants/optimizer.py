"""``Lamb``: one ``torch.optim.Optimizer`` whose knobs span the LAMB family."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from . import blocks, fast, stages, telemetry, trust
from . import knobs as K
from .layers import layer_index

#: "fast" (default: :mod:`lamb_variants.fast`), "reference" (the spec, per tensor:
#: :mod:`lamb_variants.stages`), "compiled" (fast, with the Adam family's stages 2-4 fused per
#: CPU chunk by torch.compile: :mod:`lamb_variants.compiled`)
IMPLS = ("fast", "reference", "compiled")


@dataclass(frozen=True)
class LambStats:
    """Telemetry of the last step, as tensors on the parameters' device (no host sync).

    ``names[i]`` is tensor i's name (from ``named_parameters()``, else ``"group{g}.{j}"``);
    ``layers[i]`` its trust-ratio layer. ``weight_norms``/``update_norms`` are ‖w‖ and ‖u‖ of that
    layer (before φ; ‖w‖ after a decoupled decay), ``trust_ratios`` the ratio tensor i applied.
    ``adapted[i]`` says whether tensor i gets a trust ratio at all (``adapt``; host-side, from
    the knobs, like the names). ``grad_norm`` is G, the global norm of the raw gradients;
    ``moments_grad_norm`` that of ĝ = c·g after stage 1 (pre-normalization), the gradient the
    moments see (before ``decay="l2"``'s λw): c·G when every group pre-normalizes alike.
    """

    grad_norm: Tensor
    moments_grad_norm: Tensor
    names: tuple[str, ...]
    layers: tuple[str, ...]
    weight_norms: Tensor
    update_norms: Tensor
    trust_ratios: Tensor
    adapted: tuple[bool, ...]


class Lamb(torch.optim.Optimizer):
    r"""The LAMB family as independent knobs. Defaults are NVLAMB (apex FusedLAMB,
    ``use_nvlamb=True``).

    One step, for every tensor w with gradient g (see :mod:`lamb_variants.stages`):

    1. **pre-normalize** (``prenorm``, ``max_grad_norm``): ĝ = g·c with G the global norm over
       every gradient of every group; c = 1 (``"none"``), 1/max(1, G/M) (``"clip"``, apex/timm),
       1/G (``"normalize"``). ``decay="l2"`` adds λw to ĝ here.
    2. **moments** (``moments``, ``betas``, ``grad_averaging``, ``bias_correction``): Adam moments
       m, v with β3 = 1-β1 (or 1); m̂ = m/(1-β1^t), v̂ = v/(1-β2^t) if ``bias_correction=True``.
    3. **direction** (``eps_mode``, ``eps``, ``eps_inside_sqrt``): ``eps_mode="add"``:
       d = m̂/(√v̂+ε) or m̂/√(v̂+ε); ``eps_mode="atan2"``: Adam-atan2 of Everett et al. 2024
       (arXiv 2407.05872), d = a·atan2(m̂, b·√v̂) with a = 1.27, b = 1, ε-free and invariant to
       a common scale of the gradients (``eps``, ``eps_inside_sqrt`` then do not act); d = ĝ
       for ``moments="momentum"`` (the LARS branch).
    4. **weight decay** (``weight_decay`` λ, ``decay``): u = d + λw (``"in_ratio"``, apex/LAMB
       paper); w ← w(1-ηλ) before the norms, u = d (``"decoupled"``, timm); or L2 in step 1.
    5. **trust ratio** (``layer_split``, ``adapt``, ``phi``, ``phi_min``/``phi_max``,
       ``trust_clip``, ``trust_coeff``, ``trust_eps``, ``ratio_denominator``): per layer (a tensor,
       or all tensors of one module), r = clamp(c·φ(‖w‖)/(‖u‖ + eps_r), trust_clip); ‖u‖ is
       replaced by ‖d‖ + λ‖w‖ for the LARS denominator; r = 1 when either norm is 0 and for
       tensors ``adapt`` excludes (``"decayed"``: λ = 0 tensors, apex's default).
    6. **apply**: w ← w - η_t·r·u with η_t = η, or η·√(1-β2^t)/(1-β1^t) for
       ``bias_correction="step_size"`` (DeepSpeed, torch-optimizer ``debias``); for
       ``moments="momentum"``, SGD momentum on r·u (``momentum``, ``dampening``, ``nesterov``).

    Each group's stages are data: :func:`lamb_variants.stages.build` reads the group's knobs
    (each once; ``lr`` every step) and chooses its stages, e.g. the L2 term only for
    ``decay="l2"``, SGD momentum only for ``moments="momentum"``; the table of which knob chooses
    which stage is in :mod:`lamb_variants.stages`. ``impl="reference"`` runs those stages tensor
    by tensor; ``"fast"`` and ``"compiled"`` run the same stages' math fused over blocks
    (:mod:`lamb_variants.fast`), proved equal by the tests. G and stage 5 span every group.

    The step count t is per group (``group["step"]``, as apex); set it to 0 to restart bias
    correction (NVIDIA's phase 2). Knobs live in ``defaults`` and every param group.

    Args:
        params: tensors, ``named_parameters()``, or param-group dicts whose ``"params"`` are
            tensors or ``(name, tensor)`` pairs. ``layer_split="module"`` needs names.
        impl: ``"fast"`` (multi-tensor, default), ``"reference"`` (per tensor, the spec) or
            ``"compiled"`` (the fast path with the Adam family's moments, direction, decay and
            norms fused per CPU chunk by ``torch.compile``; see :mod:`lamb_variants.compiled`).
        **knobs: see :data:`lamb_variants.knobs.DEFAULTS`.
    """

    def __init__(self, params: Iterable[Any], impl: str = "fast", **knobs: Any) -> None:
        if impl not in IMPLS:
            raise ValueError(f"impl={impl!r} is not allowed; expected one of {list(IMPLS)}")
        defaults = K.validate({**K.DEFAULTS, **knobs})
        self.impl = impl
        self.stats: LambStats | None = None
        #: the last step's tensors and their groups, for :meth:`direction_stats` (no gradients:
        #: holding them would keep a second gradient buffer alive through the next backward)
        self._last_step: tuple[list[Tensor], list[int]] = ([], [])
        super().__init__(params, defaults)
        self._reset_caches()

    def _reset_caches(self) -> None:
        """What the step derives from knobs, params and state: rebuilt as needed, never saved.

        The fast path's accelerator switch (a test hook) survives a reset.
        """
        self._pipelines = stages.Pipelines()
        old = getattr(self, "_fast", None)
        self._fast = fast.FastPath(accelerator_path=old is not None and old.accelerator_path)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        given = {k: v for k, v in param_group.items() if k not in ("params", "param_names")}
        param_group.update(K.validate(given))
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group.setdefault("step", 0)
        if group["layer_split"] == "module" and "param_names" not in group:
            raise ValueError(
                'layer_split="module" needs parameter names: pass model.named_parameters() '
                "or param groups whose 'params' are (name, tensor) pairs"
            )

    def __setstate__(self, state: dict[str, Any]) -> None:
        # load_state_dict() also lands here (with state and param_groups only): keep what the
        # instance already has; unpickling gets the saved impl.
        impl = state.pop("impl", getattr(self, "impl", "fast"))
        super().__setstate__(state)
        self.impl = impl
        self.stats = getattr(self, "stats", None)
        self._last_step = ([], [])
        self._reset_caches()

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "impl": self.impl}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            # A knob missing from a saved group is newer than the save (e.g. ``eps_mode``); its
            # default is the behaviour before it existed.
            for k, v in K.DEFAULTS.items():
                group.setdefault(k, v)
            given = {k: v for k, v in group.items() if k in K.KNOB_NAMES}
            group.update(K.validate(given))

    def restart_steps(self) -> None:
        """Restart every group's step count, keeping the moments (NVIDIA's phase-2 start).

        The next step then uses bias corrections of t = 1: m̂ = m/(1-β1), v̂ = v/(1-β2) on moments
        carried over from phase 1 (DeepLearningExamples run_pretraining.py, ``--phase2``).
        """
        for group in self.param_groups:
            group["step"] = 0

    # ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        pipes = self._pipelines.of(self.param_groups)
        work = self._gather(pipes)
        if not work.params:
            return loss
        grad_norm = fast.global_grad_norm(work.grads)  # stage 1 needs every group's gradients
        host = self._fast.host(grad_norm)
        steps = []
        for group, pipe in zip(self.param_groups, pipes, strict=True):
            group["step"] += 1
            steps.append(stages.step_scalars(group, pipe.prenorm.factor(grad_norm, host)))

        moments_norm = _moments_grad_norm(work, pipes, steps, grad_norm)
        self._last_step = (work.params, work.group_of)

        def ratios(squares: tuple[Tensor, Tensor, Tensor]) -> Tensor:
            return self._trust_ratios(work, squares, grad_norm, moments_norm)

        if self.impl == "reference":
            self._step_reference(work, pipes, steps, ratios)
        else:
            scalars = [blocks.group_scalars(p, t) for p, t in zip(pipes, steps, strict=True)]
            self._fast.step(work, self.state, scalars, ratios, fuse=self.impl == "compiled")
        return loss

    def _step_reference(
        self,
        work: stages.Work,
        pipes: list[stages.Pipeline],
        steps: list[stages.StepScalars],
        ratios: Callable[[tuple[Tensor, Tensor, Tensor]], Tensor],
    ) -> None:
        """Each tensor through its group's pipeline: stages 1-4, stage 5 over all, stage 6."""
        updates, norms = [], []
        for p, g, gi in zip(work.params, work.grads, work.group_of, strict=True):
            u, n = pipes[gi].run_direction(p, g, self.state[p], steps[gi])
            updates.append(u)
            norms.append(n)
        r = ratios(tuple(torch.stack([getattr(n, f) for n in norms]) for f in ("w", "u", "d")))
        for i, (p, u, gi) in enumerate(zip(work.params, updates, work.group_of, strict=True)):
            pipes[gi].apply(p, u, r[i], self.state[p], steps[gi])

    def direction_stats(self) -> telemetry.DirectionStats:
        """How much ε shapes the last step's direction, per tensor (see :mod:`.telemetry`)."""
        params, group_of = self._last_step
        return telemetry.direction_stats(
            params, group_of, self._pipelines.of(self.param_groups), self.param_groups, self.state
        )

    def _trust_ratios(
        self,
        work: stages.Work,
        squares: tuple[Tensor, Tensor, Tensor],
        grad_norm: Tensor,
        moments_norm: Tensor,
    ) -> Tensor:
        """Stage 5 from per-tensor squared norms (w, u, d); stores :class:`LambStats`."""
        device, dtype = work.params[0].device, work.norm_dtype
        layer_of, x = self._pipelines.ratio_inputs(work.rows, work.layer_of, device, dtype)
        n_layers = len(work.layer_names)

        def per_layer(sq: Tensor) -> Tensor:
            total = torch.zeros(n_layers, dtype=dtype, device=device)
            return total.index_add_(0, layer_of, sq.to(device, dtype)).sqrt()[layer_of]

        w, u, d = (per_layer(sq) for sq in squares)
        ratios = trust.trust_ratios(w, u, d, x)
        self.stats = LambStats(
            grad_norm=grad_norm,
            moments_grad_norm=moments_norm,
            names=tuple(work.names),
            layers=tuple(work.layer_names[i] for i in work.layer_of),
            weight_norms=w,
            update_norms=u,
            trust_ratios=ratios,
            adapted=tuple(r.adapt for r in work.rows),
        )
        return ratios

    def _gather(self, pipes: list[stages.Pipeline]) -> stages.Work:
        """The step's tensors in step order, with the state their stages keep created."""
        w = stages.Work()
        for gi, (group, pipe) in enumerate(zip(self.param_groups, pipes, strict=True)):
            names = group.get("param_names") or [
                f"group{gi}.{j}" for j in range(len(group["params"]))
            ]
            for p, name in zip(group["params"], names, strict=True):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Lamb does not support sparse gradients")
                pipe.init_state(p, self.state[p])
                w.params.append(p)
                w.grads.append(p.grad)
                w.group_of.append(gi)
                w.names.append(name)
                w.rows.append(pipe.ratio)
        w.layer_of, w.layer_names = layer_index(w.names, [r.layer_split for r in w.rows])
        if any(p.dtype == torch.float64 for p in w.params):
            w.norm_dtype = torch.float64
        return w


def _moments_grad_norm(
    work: stages.Work,
    pipes: list[stages.Pipeline],
    steps: list[stages.StepScalars],
    grad_norm: Tensor,
) -> Tensor:
    """‖ĝ‖ over every tensor, ĝ = c_g·g with c_g group g's stage-1 factor: c·G when all groups
    pre-normalize alike (free), else one more pass over the gradients."""
    if all(p.prenorm == pipes[0].prenorm for p in pipes):
        return grad_norm * steps[0].pre
    factors = torch.stack([torch.as_tensor(t.pre, dtype=grad_norm.dtype) for t in steps])
    squares = torch.stack([torch.linalg.vector_norm(g).to(grad_norm.dtype) for g in work.grads])
    index = torch.tensor(work.group_of, device=squares.device)
    return torch.sqrt((squares**2 * factors.to(squares.device)[index] ** 2).sum())
