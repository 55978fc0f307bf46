"""``Lamb``: one ``torch.optim.Optimizer`` whose knobs span the LAMB family."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from . import compiled, stages
from . import knobs as K
from .layers import layer_index

#: Elements per fast-path block on CPU: 4 MiB of float32 per operand keeps a block's operands in
#: L2/L3 between the ~12 ops of a step (optimizer-performance.md: per-op overhead ~6 µs, so much
#: smaller chunks lose more to dispatch than they gain in cache reuse).
CPU_BLOCK_NUMEL = 1 << 20
#: "fast" (default), "reference" (the spec, per tensor), "compiled" (fast, with the Adam family's
#: stages 2-4 fused per CPU chunk by torch.compile: lamb_variants.compiled)
IMPLS = ("fast", "reference", "compiled")
#: CPU tensors at least this large get per-piece ``out=`` ops; smaller ones share foreach ops.
CPU_PER_PIECE_MIN = 1 << 18


@dataclass(frozen=True)
class LambStats:
    """Telemetry of the last step, as tensors on the parameters' device (no host sync).

    ``names[i]`` is tensor i's name (from ``named_parameters()``, else ``"group{g}.{j}"``);
    ``layers[i]`` its trust-ratio layer. ``weight_norms``/``update_norms`` are ‖w‖ and ‖u‖ of that
    layer (before φ; ‖w‖ after a decoupled decay), ``trust_ratios`` the ratio tensor i applied.
    ``adapted[i]`` says whether tensor i gets a trust ratio at all (``adapt``; host-side, from
    the knobs, like the names).
    """

    grad_norm: Tensor
    names: tuple[str, ...]
    layers: tuple[str, ...]
    weight_norms: Tensor
    update_norms: Tensor
    trust_ratios: Tensor
    adapted: tuple[bool, ...] = ()


class Lamb(torch.optim.Optimizer):
    r"""The LAMB family as independent knobs. Defaults are NVLAMB (apex FusedLAMB,
    ``use_nvlamb=True``).

    One step, for every tensor w with gradient g (see :mod:`lamb_variants.stages`):

    1. **pre-normalize** (``prenorm``, ``max_grad_norm``): ĝ = g·c with G the global norm over
       every gradient of every group; c = 1 (``"none"``), 1/max(1, G/M) (``"clip"``, apex/timm),
       1/G (``"normalize"``). ``decay="l2"`` adds λw to ĝ here.
    2. **moments** (``moments``, ``betas``, ``grad_averaging``, ``bias_correction``): Adam moments
       m, v with β3 = 1-β1 (or 1); m̂ = m/(1-β1^t), v̂ = v/(1-β2^t) if ``bias_correction=True``.
    3. **direction** (``eps``, ``eps_inside_sqrt``): d = m̂/(√v̂+ε) or m̂/√(v̂+ε); d = ĝ for
       ``moments="momentum"`` (the LARS branch).
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
        super().__init__(params, defaults)
        self._reset_caches()
        self.stats: LambStats | None = None
        self._accelerator_path = False

    def _reset_caches(self) -> None:
        """Scratch and plans of the fast path: derived from params and state, never saved."""
        self._update_buffers: dict[Tensor, Tensor] = {}
        self._plan: list[stages.Block] = []
        self._plan_key: tuple = ()
        self._plan_refs: list = []
        self._ratio_key: tuple = ()
        self._ratio_cache: tuple = ()

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
        self._accelerator_path = getattr(self, "_accelerator_path", False)
        self._reset_caches()

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "impl": self.impl}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:
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
        work = self._gather()
        if not work.params:
            return loss
        grad_norm = stages.global_grad_norm(work.grads)  # stage 1 needs every group's gradients
        scalars = []
        for group in self.param_groups:
            group["step"] += 1
            pre = stages.prenorm_factor(group, grad_norm, host=self._host(grad_norm))
            scalars.append(stages.group_scalars(group, group["step"], pre))
        if self.impl == "reference":
            self._step_reference(work, scalars, grad_norm)
        else:
            self._step_fast(work, scalars, grad_norm)
        return loss

    def _step_reference(self, work: _Work, scalars: list, grad_norm: Tensor) -> None:
        updates, norms = [], []
        for p, g, gi in zip(work.params, work.grads, work.group_of, strict=True):
            u, n = stages.ref_direction(p, g, self.state[p], scalars[gi])  # stages 1-4
            updates.append(u)
            norms.append(n)
        squares = tuple(torch.stack([getattr(n, f) for n in norms]) for f in ("w", "u", "d"))
        ratios = self._ratios(work, squares, grad_norm)  # stage 5
        for i, (p, u, gi) in enumerate(zip(work.params, updates, work.group_of, strict=True)):
            stages.ref_apply(p, u, ratios[i], self.state[p], scalars[gi])  # stage 6

    def _step_fast(self, work: _Work, scalars: list, grad_norm: Tensor) -> None:
        fresh = [("momentum_buffer" not in self.state[p]) for p in work.params]
        for p, gi in zip(work.params, work.group_of, strict=True):
            if scalars[gi].knobs["moments"] == "momentum":
                self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
        blocks = self._blocks(work)
        n = len(work.params)
        dtype = work.norm_dtype
        device = work.params[0].device
        sq = [torch.zeros(n, dtype=dtype, device=device) for _ in range(3)]
        for b in blocks:  # stages 1-4, block by block
            index = b.index
            s = scalars[b.group]
            if self.impl == "compiled" and compiled.covers(
                s.knobs, b.per_piece, s.pre, b.w[0].dtype
            ):
                pieces = compiled.fused_direction(b, s, stages.direction_scale(s))
            else:
                pieces = stages.fast_direction(b, s)
            for acc, piece in zip(sq, pieces, strict=True):
                acc.index_add_(0, index, piece.to(device, dtype))
        ratios = self._ratios(work, tuple(sq), grad_norm)  # stage 5
        host = self._host(ratios)
        per_tensor = ratios.tolist() if host else ratios
        for b in blocks:  # stage 6
            ratio = [per_tensor[i] for i in b.tensor] if host else ratios[b.index]
            stages.fast_apply(b, ratio, scalars[b.group], [fresh[i] for i in b.tensor])

    def _ratios(
        self, work: _Work, squares: tuple[Tensor, Tensor, Tensor], grad_norm: Tensor
    ) -> Tensor:
        """Stage 5 from per-tensor squared norms (w, u, d); stores :class:`LambStats`."""
        device, dtype = work.params[0].device, work.norm_dtype
        groups = tuple(_ratio_knobs(g) for g in self.param_groups)
        key = (tuple(work.group_of), tuple(work.layer_of), groups, device, dtype)
        if self._ratio_key != key:  # built once: no host-to-device copies in a steady step
            layer_of = torch.tensor(work.layer_of, device=device)
            self._ratio_cache = (layer_of, stages.ratio_inputs(work.knobs, device, dtype))
            self._ratio_key = key
        layer_of, x = self._ratio_cache
        n_layers = len(work.layer_names)

        def per_layer(sq: Tensor) -> Tensor:
            total = torch.zeros(n_layers, dtype=dtype, device=device)
            return total.index_add_(0, layer_of, sq.to(device, dtype)).sqrt()[layer_of]

        w, u, d = (per_layer(sq) for sq in squares)
        ratios = stages.trust_ratios(w, u, d, x)
        self.stats = LambStats(
            grad_norm=grad_norm,
            names=tuple(work.names),
            layers=tuple(work.layer_names[i] for i in work.layer_of),
            weight_norms=w,
            update_norms=u,
            trust_ratios=ratios,
            adapted=tuple(stages.is_adapted(k) for k in work.knobs),
        )
        return ratios

    # ------------------------------------------------------------------------------------------

    def _gather(self) -> _Work:
        w = _Work()
        for gi, group in enumerate(self.param_groups):
            names = group.get("param_names") or [
                f"group{gi}.{j}" for j in range(len(group["params"]))
            ]
            for p, name in zip(group["params"], names, strict=True):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Lamb does not support sparse gradients")
                state = self.state[p]
                if group["moments"] == "adam" and "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                w.params.append(p)
                w.grads.append(p.grad)
                w.group_of.append(gi)
                w.names.append(name)
                w.knobs.append(group)
        w.layer_of, w.layer_names = layer_index(w.names, [k["layer_split"] for k in w.knobs])
        if any(p.dtype == torch.float64 for p in w.params):
            w.norm_dtype = torch.float64
        return w

    def _blocks(self, work: _Work) -> list[stages.Block]:
        """The step's tensors as fast-path blocks; views are cached, gradients are re-sliced.

        On CPU, tensors of at least ``CPU_PER_PIECE_MIN`` elements are cut into chunks of up to
        ``CPU_BLOCK_NUMEL`` (one chunk per block, processed with ``out=`` ops), and smaller ones
        are packed together into blocks of up to ``CPU_BLOCK_NUMEL`` elements (processed by
        foreach ops: one dispatch for many tensors). Elsewhere a block is a whole group.
        """
        refs = [
            (p, gi, *(t for t in self.state[p].values() if isinstance(t, Tensor)))
            for p, gi in zip(work.params, work.group_of, strict=True)
        ]
        key = tuple(tuple(id(x) for x in r) for r in refs)
        if self._plan_key != key:
            self._plan = self._plan_blocks(work)
            # The plan keeps these objects alive, so their ids cannot be reused by new tensors
            # (e.g. after load_state_dict) while the key still matches.
            self._plan_key, self._plan_refs = key, refs
        flat = [g.view(-1) if g.is_contiguous() else g.reshape(-1) for g in work.grads]
        for b in self._plan:
            b.g = [flat[i][lo:hi] for i, (lo, hi) in zip(b.tensor, b.spans, strict=True)]
        return self._plan

    def _plan_blocks(self, work: _Work) -> list[stages.Block]:
        blocks: list[stages.Block] = []
        packing: dict[tuple, stages.Block] = {}
        for i, (p, gi) in enumerate(zip(work.params, work.group_of, strict=True)):
            if not p.is_contiguous():
                raise RuntimeError(
                    "Lamb's fast path needs contiguous parameters; use impl='reference'"
                )
            state = self.state[p]
            flat = {
                "w": p.view(-1),
                "u": self._update_buffer(p).view(-1),
                **{
                    name: state[name].view(-1)
                    for name in ("exp_avg", "exp_avg_sq")
                    if name in state
                },
            }
            if "momentum_buffer" in state:
                flat["buf"] = state["momentum_buffer"].view(-1)
            n = p.numel()
            cpu = self._host(p)
            if cpu and n >= CPU_PER_PIECE_MIN:
                spans = [(lo, min(n, lo + CPU_BLOCK_NUMEL)) for lo in range(0, n, CPU_BLOCK_NUMEL)]
                targets = [stages.Block(gi, per_piece=True) for _ in spans]
                blocks.extend(targets)
            else:
                group_key = (gi, p.device, p.dtype)
                b = packing.get(group_key)
                if b is None or (cpu and b.numel + n > CPU_BLOCK_NUMEL):
                    b = packing[group_key] = stages.Block(gi, per_piece=False)
                    blocks.append(b)
                spans, targets = [(0, n)], [b]
            for (lo, hi), b in zip(spans, targets, strict=True):
                b.tensor.append(i)
                b.spans.append((lo, hi))
                b.numel += hi - lo
                for name, t in flat.items():
                    getattr(b, name).append(t[lo:hi])
        for b in blocks:
            b.index = torch.tensor(b.tensor, device=b.w[0].device)
        return blocks

    def _host(self, t: Tensor) -> bool:
        """True where scalars may be read on the host for free and blocks are cache-sized (CPU).

        ``_accelerator_path = True`` runs the accelerator code path (device scalars, whole-group
        blocks, foreach everywhere) on CPU tensors, so CPU-only tests can prove it equal too.
        """
        return t.device.type == "cpu" and not self._accelerator_path

    def _update_buffer(self, p: Tensor) -> Tensor:
        # Persistent, so the large update temporaries are not page-faulted in every step; not
        # optimizer state (it holds nothing between steps) and never saved.
        buf = self._update_buffers.get(p)
        if buf is None or buf.shape != p.shape or buf.dtype != p.dtype:
            buf = self._update_buffers[p] = torch.empty_like(
                p, memory_format=torch.contiguous_format
            )
        return buf


_RATIO_KNOBS = (
    "weight_decay",
    "adapt",
    "phi",
    "phi_min",
    "phi_max",
    "trust_clip",
    "trust_coeff",
    "trust_eps",
    "ratio_denominator",
)


def _ratio_knobs(group: dict[str, Any]) -> tuple:
    return tuple(group[k] for k in _RATIO_KNOBS)


class _Work:
    """The tensors of one step, in step order (every group, params that have a gradient)."""

    def __init__(self) -> None:
        self.params: list[Tensor] = []
        self.grads: list[Tensor] = []
        self.group_of: list[int] = []
        self.names: list[str] = []
        self.knobs: list[dict[str, Any]] = []
        self.layer_of: list[int] = []
        self.layer_names: list[str] = []
        self.norm_dtype = torch.float32
