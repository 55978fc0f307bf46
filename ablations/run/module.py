"""``PretrainingModule``: one phase of BERT pretraining with a ``lamb_variants`` optimizer.

Manual optimization, so that every part of an optimizer step is explicit:

- **Accumulation.** ``phase.accumulation(world_size)`` micro-batches per optimizer step; each
  micro-batch's loss is divided by that count, and under DDP the gradients of all but the last
  micro-batch are not all-reduced (``strategy.block_backward_sync``). The optimizer sees the mean
  gradient over the global batch, as in NVIDIA's recipe.
- **Mixed precision.** ``opt.step()`` goes through Lightning's precision plugin: with
  ``16-mixed`` it runs ``scaler.unscale_(optimizer)`` before ``scaler.step(optimizer)``, so Lamb's
  global norm and clipping see unscaled gradients. When the scaler finds a non-finite gradient it
  does not call ``Lamb.step`` and the group step count stays put; this module then does not step
  the LR scheduler either and does not count the window as a step (NVIDIA's
  ``PolyWarmUpScheduler`` derives its step from the optimizer's, and its loop does not count
  overflowed steps). Lightning's ``global_step`` counts every window; it only positions the data.
- **Schedule.** A ``LambdaLR`` of :class:`lamb_variants.PolyWarmup` stepped after each applied
  update; phase 2 starts a new one at phase 2's lr (:func:`lamb_variants.start_phase`), with the
  phase-1 moments (``optimizer.phase2="carry"``: ``restart_steps()``, NVIDIA) or none
  (``"fresh"``: a new optimizer).
- **Telemetry without host syncs.** Per step, the losses, counts and optimizer statistics
  (:mod:`ablations.run.step_stats`) are stacked into one small device tensor (all-reduced under
  DDP, an
  asynchronous op on GPU). They are read on the host in one transfer by :meth:`flush`: every step
  on CPU (where reading a tensor costs nothing), otherwise every ``log.flush_every`` steps, before
  every checkpoint (so the curves are never behind a checkpoint) and at validation. Divergence is
  judged at the flush, identically on every rank; under fp16 the GradScaler reads a flag on the
  host every step anyway.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DistributedSampler

import lamb_variants
from ablations.config import ConfigError, RunConfig, load_factory, plain
from ablations.core.internals import loss_scale
from ablations.run import noise, resolved
from ablations.run.curves import Curves
from ablations.run.model import BertPretraining
from ablations.run.step_stats import LAYER, OPTIM, StepStats, all_reduce, restart_steps

#: Per-micro-batch sums accumulated on the device, then all-reduced: loss, mlm_loss, nsp_loss
#: (each summed over micro-batches), mlm_correct, mlm_count, nsp_correct, real tokens.
_TRAIN = ("loss", "mlm_loss", "nsp_loss", "mlm_correct", "mlm_count", "nsp_correct", "tokens")


@dataclass
class Progress:
    """Counters of the run, saved in every checkpoint (``checkpoint["ablations"]``)."""

    phase_step: int = 0  # applied updates in this phase
    skipped: int = 0  # fp16 windows skipped by the GradScaler, whole run
    samples: int = 0  # examples of applied updates, whole run
    tokens: int = 0  # non-padding input tokens of applied updates, whole run
    wall_time: float = 0.0  # seconds inside fit, whole run, over every attempt
    first_loss: float | None = None  # loss of step 1 of the run (divergence reference)
    noise: dict[str, float | None] | None = None  # NoiseScale's averages (log.noise_scale)
    reached: int | None = None  # the step whose validation reached config.stop_at


@dataclass
class _Step:
    """One applied update whose numbers are still on the device."""

    step: int
    phase_step: int
    lr: float
    samples: int
    wall_time: float
    values: Tensor  # float64 [len(_TRAIN) + len(OPTIM)]
    layers: Tensor | None  # [len(LAYER), tensors] (every log.layer_every steps)
    names: tuple[str, ...] = ()
    layer_names: tuple[str, ...] = ()


class PretrainingModule(L.LightningModule):
    """Phase ``phase_index`` of ``config`` (0-based).

    Args:
        config: the run.
        phase_index: which phase this module trains.
        run_dir: where the curves go (written by global rank 0 only); None writes nothing.
        vocab_size: the model's vocabulary; None reads ``trainer.datamodule.vocab_size`` when the
            model is built (``configure_model``, after the data module's ``setup``).
        init: for phase 2, the phase-1 end checkpoint (a loaded dict): its weights, its optimizer
            state (``optimizer.phase2="carry"``), counters and RNG state are the phase's start.
    """

    def __init__(
        self,
        config: RunConfig,
        phase_index: int = 0,
        *,
        run_dir: Path | None = None,
        vocab_size: int | None = None,
        init: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.config = config
        self.phase_index = phase_index
        self.phase = config.phases[phase_index]
        self.step_offset = sum(p.steps for p in config.phases[:phase_index])
        self.vocab_size = vocab_size
        self.model: BertPretraining | None = None
        self.curves = Curves(run_dir, enabled=False) if run_dir is not None else None
        self.progress = Progress()
        #: "complete" once the phase's last step is done, "diverged" when a step diverged.
        self.outcome: str | None = None
        self.divergence: dict[str, Any] | None = None
        self.last_metrics: dict[str, Any] | None = None
        self.last_val: dict[str, Any] | None = None
        self._init = init
        self._pending_rng: dict[str, Any] | None = None
        if init is not None:
            state = init["ablations"]
            self.progress = Progress(
                **{**_fields(Progress, state), "phase_step": 0}  # counters go on, steps restart
            )
            self.last_metrics, self.last_val = state.get("last_metrics"), state.get("last_val")
            self._pending_rng = state.get("rng")
        self._micro = 0
        self._acc: Tensor | None = None
        self._steps: list[_Step] = []
        self._val: list[dict[str, Tensor]] | None = None
        self._stats: StepStats | None = None  # the optimizer's numbers (configure_optimizers)
        self._t0 = 0.0
        self._wall0 = 0.0

    # --- model and optimizer -------------------------------------------------------------------

    def configure_model(self) -> None:
        if self.model is not None:
            return
        vocab = self.vocab_size or self.trainer.datamodule.vocab_size
        self.model = BertPretraining(self.config.model, vocab)
        if self._init is not None:
            prefix = "model."
            weights = {k[len(prefix) :]: v for k, v in self._init["state_dict"].items()}
            self.model.load_state_dict(weights)

    def configure_optimizers(self) -> Any:
        opt_config, phase = self.config.optimizer, self.phase
        plan = resolved.resolve(self.config)  # λ per group: the one resolution of the run
        weight_decay = plan.groups[0].weight_decay
        groups = lamb_variants.nvidia_param_groups(self.model.named_parameters(), weight_decay)
        plan = plan.with_tensors(groups)  # before the optimizer takes the (name, tensor) pairs
        if opt_config.factory is not None:  # the user's optimizer (telemetry: what it allows)
            opt = load_factory(opt_config.factory)(groups, lr=phase.lr)
            if not isinstance(opt, torch.optim.Optimizer):
                raise ConfigError(
                    f"optimizer.factory: {opt_config.factory} returned {type(opt).__name__}, "
                    "expected a torch.optim.Optimizer"
                )
        else:
            opt = lamb_variants.create(
                opt_config.preset, groups, lr=phase.lr, **dict(opt_config.overrides)
            )
        if self._init is not None and opt_config.phase2 == "carry":
            opt.load_state_dict(self._init["optimizer_states"][0])
            restart_steps(opt)  # NVIDIA phase 2: bias correction restarts, moments are kept
        self._init = None  # the phase-1 checkpoint is no longer needed
        if self._stats is None:  # once per module: the noise hooks sit on the model
            self._stats = StepStats(self.model, noise_scale=self.config.log.noise_scale)
        self._stats.watch(opt)
        self._record_resolution(plan, opt)
        schedule = lamb_variants.PolyWarmup.from_proportion(
            phase.steps, phase.warmup, decay_power=phase.decay_power, relative_to=phase.schedule
        )
        return [opt], [lamb_variants.start_phase(opt, schedule, lr=phase.lr)]

    def _record_resolution(self, plan: resolved.Resolved, opt: torch.optim.Optimizer) -> None:
        """Write ``resolved.json`` (:mod:`ablations.run.resolved`; global rank 0 only): the
        knobs and λ of each group, its tensors and this phase's data, as this phase trains them.

        The knobs are the resolution of the config; the groups' λ are read back from the built
        optimizer, and a preset optimizer's knobs too, so that a resolution that disagreed with
        what ``lamb_variants.create`` built would fail here instead of mislabelling the run.
        Every phase and attempt rewrites the same values and adds its phase's data.
        """
        if self.curves is None or not self.curves.enabled:
            return
        run_dir = self.curves.run_dir
        previous = resolved.read(run_dir)
        mine = plan
        if previous is not None and previous.source == "run":
            mine = dataclasses.replace(mine, data=previous.data)
        for group, built in zip(mine.groups, opt.param_groups, strict=True):
            if group.knobs is None:
                continue  # a factory's groups are its own: λ and knobs as it builds them
            knobs = group.knobs
            differs = [k for k, v in knobs.items() if plain(built.get(k, v)) != v]
            if built.get("weight_decay") != group.weight_decay or differs:
                raise RuntimeError(
                    f"resolved.json: group {group.name} resolves to {knobs} with λ "
                    f"{group.weight_decay}, the optimizer has {built.get('weight_decay')} "
                    f"(knobs {differs} differ)"
                )
        identity = getattr(self.trainer.datamodule, "identity", None)
        described = identity() if callable(identity) else {}
        vocab = self.model.vocab_size if self.model is not None else None
        mine = mine.with_data(self.phase_index + 1, {"vocab_size": vocab, **described})
        resolved.write(run_dir, mine)

    @property
    def accumulation(self) -> int:
        return self.phase.accumulation(self.trainer.world_size)

    @property
    def step(self) -> int:
        """Applied updates since the start of the run (the last written line's ``step``)."""
        return self.step_offset + self.progress.phase_step

    # --- training ------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if self.curves is not None:
            self.curves.enabled = self.trainer.is_global_zero

    def on_train_start(self) -> None:
        self._t0, self._wall0 = time.perf_counter(), self.progress.wall_time
        self._micro, self._acc, self._steps = 0, None, []
        if self.curves is not None:
            self.curves.truncate(self.step)  # lines after the restored step are redone
        if self.progress.phase_step >= self.phase.steps:
            self.outcome = "complete"  # restored at the end of the phase

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        if self.outcome is not None:
            self.trainer.should_stop = True
            return -1  # ends the epoch, and should_stop ends fit
        return None

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if self._pending_rng is not None:  # restored here, right before the first use
            _set_rng(self._pending_rng)
            self._pending_rng = None
        accumulation = self.accumulation
        last = self._micro + 1 == accumulation
        with contextlib.nullcontext() if last else self._no_sync():
            out = self.model(batch)
            self.manual_backward(out["loss"] / accumulation)
        sums = torch.stack(
            [
                out["loss"].detach(),
                out["mlm_loss"].detach(),
                out["nsp_loss"].detach(),
                out["mlm_correct"],
                out["mlm_count"],
                out["nsp_correct"],
                batch["attention_mask"].sum(),
            ]
        ).to(torch.float64)
        self._acc = sums if self._acc is None else self._acc + sums
        self._micro += 1
        if last:
            self._micro = 0
            self._optimizer_step()

    def _no_sync(self) -> Any:
        block = getattr(self.trainer.strategy, "block_backward_sync", None)
        return block() if block is not None else contextlib.nullcontext()

    def _optimizer_step(self) -> None:
        opt = self.optimizers()
        inner, numbers = opt.optimizer, self._stats
        before, lr = numbers.applied, inner.param_groups[0]["lr"]
        # the fp16 scale the micro-batch gradients were computed under (the step may change it)
        noise_row = numbers.noise_values(
            self.accumulation, self.trainer.world_size, self._loss_scale()
        )
        sample = (self.step + 1) % self.config.log.layer_every == 0
        weights = numbers.weights() if sample else None
        opt.step()
        layers = None
        if sample and numbers.applied != before:
            layers = numbers.layer_values(inner, weights)
        opt.zero_grad(set_to_none=True)
        sums, self._acc = self._acc, None
        if numbers.applied == before:  # the GradScaler skipped a non-finite step
            self.progress.skipped += 1
            return
        self.lr_schedulers().step()
        self.progress.phase_step += 1
        self.progress.samples += self.phase.global_batch
        self.progress.wall_time = self._wall0 + time.perf_counter() - self._t0
        stats = numbers.of(inner)
        noise_row[1] = stats.grad_norm.to(torch.float64) ** 2  # |G_B|²: the gradient of the step
        optim = numbers.optim_values(stats, self._loss_scale())
        values = torch.cat([all_reduce(sums), optim, noise_row])
        self._steps.append(
            _Step(
                self.step,
                self.progress.phase_step,
                lr,
                self.progress.samples,
                self.progress.wall_time,
                values,
                layers,
                stats.names if layers is not None else (),
                stats.layers if layers is not None else (),
            )
        )
        if len(self._steps) >= self._flush_every():
            self.flush()
        end = self.progress.phase_step >= self.phase.steps
        if self.outcome is None and (end or self.step % self.config.log.val_every == 0):
            self.flush()
            if self.outcome is None:
                self._validate()
                self._stop_at_target()
        if end and self.outcome is None:
            self.outcome = "complete"
        if self.outcome is not None:
            self.trainer.should_stop = True

    def _stop_at_target(self) -> None:
        """End the run at the first validation with ``val/mlm_loss <= config.stop_at``."""
        stop, val = self.config.stop_at, self.last_val
        if stop is None or val is None or val.get("step") != self.step:
            return
        loss = val.get("val/mlm_loss")
        if loss is not None and loss <= stop:
            self.progress.reached = self.step
            self.outcome = "complete"

    def _flush_every(self) -> int:
        """Steps between host reads: 1 on CPU, where reading a tensor is free."""
        return 1 if self.device.type == "cpu" else self.config.log.flush_every

    def _loss_scale(self) -> Tensor | None:
        return loss_scale(getattr(self.trainer.precision_plugin, "scaler", None))

    # --- reading the numbers -------------------------------------------------------------------

    def latest(self, *, read: bool = False) -> dict[str, Any] | None:
        """The newest numbers for a progress display (:mod:`ablations.run.progress`), or None.

        Without ``read``: the last written ``metrics.jsonl`` line, with no host sync (on an
        accelerator it is up to ``log.flush_every`` steps old). With ``read``: the newest applied
        step's ``phase``, ``step``, ``phase_step``, ``train/loss``, ``optim/lr`` and
        ``wall_time``, read from the device in one transfer if it is not written yet; the numbers
        are those its line will hold. Only reads, on any rank: divergence is still judged at the
        flush, identically on every rank.
        """
        if not read or not self._steps:
            return self.last_metrics
        s = self._steps[-1]
        micro_batches = self.accumulation * self.trainer.world_size
        return {
            "phase": self.phase_index + 1,
            "step": s.step,
            "phase_step": s.phase_step,
            "train/loss": s.values[0].item() / micro_batches,  # _TRAIN[0], as flush computes it
            "optim/lr": s.lr,
            "wall_time": s.wall_time,
        }

    def flush(self) -> None:
        """Read the pending steps (one host transfer), write their lines, judge divergence."""
        if not self._steps:
            return
        steps, self._steps = self._steps, []
        rows = torch.stack([s.values for s in steps]).tolist()
        micro_batches = self.accumulation * self.trainer.world_size
        factor = self.config.divergence_factor
        records, layer_records = [], []
        for s, row in zip(steps, rows, strict=True):
            train = dict(zip(_TRAIN, row[: len(_TRAIN)], strict=True))
            optim = dict(zip(OPTIM, row[len(_TRAIN) :], strict=True))
            self.progress.tokens += int(train["tokens"]) if math.isfinite(train["tokens"]) else 0
            loss = train["loss"] / micro_batches
            record = {
                "phase": self.phase_index + 1,
                "step": s.step,
                "phase_step": s.phase_step,
                "train/loss": loss,
                "train/mlm_loss": train["mlm_loss"] / micro_batches,
                "train/nsp_loss": train["nsp_loss"] / micro_batches,
                "train/mlm_acc": train["mlm_correct"] / max(train["mlm_count"], 1.0),
                "train/nsp_acc": train["nsp_correct"] / self.phase.global_batch,
                "optim/lr": s.lr,
                "optim/grad_norm": optim["grad_norm"],
                "optim/moments_grad_norm": optim["moments_grad_norm"],
                "optim/update_norm": optim["update_norm"],
                "optim/trust_ratio_min": optim["r_min"],
                "optim/trust_ratio_p50": optim["r_p50"],
                "optim/trust_ratio_max": optim["r_max"],
                "optim/skipped": self.progress.skipped,
                "samples": s.samples,
                "tokens": self.progress.tokens,
                "wall_time": s.wall_time,
            }
            if math.isfinite(optim["loss_scale"]):
                record["optim/loss_scale"] = optim["loss_scale"]
            if self.config.log.noise_scale:
                record.update(self._noise_record(optim["noise_small_sq"], optim["noise_big_sq"]))
            records.append(record)
            if s.layers is not None:
                layer_records.append(
                    {
                        "phase": self.phase_index + 1,
                        "step": s.step,
                        "phase_step": s.phase_step,
                        "tensors": list(s.names),
                        "layers": list(s.layer_names),
                        **dict(zip(LAYER, s.layers.tolist(), strict=True)),
                    }
                )
            if s.step == 1:
                self.progress.first_loss = loss if math.isfinite(loss) else None
            reason = _diverged(loss, self.progress.first_loss, factor)
            if reason is not None:
                self.outcome = "diverged"
                self.divergence = {"step": s.step, "phase": self.phase_index + 1, "reason": reason}
                self.trainer.should_stop = True
                break  # the diverging step is the curve's last line
        self.last_metrics = records[-1]
        if self.curves is not None:
            self.curves.append("metrics", records)
            self.curves.append("layers", [r for r in layer_records if r["step"] <= s.step])
        self._to_loggers(records)

    def _noise_record(self, small_sq: float, big_sq: float) -> dict[str, float]:
        """The ``noise/*`` fields of one step (:mod:`ablations.run.noise`); advances the
        averages."""
        b, big_b = self.phase.micro_batch, self.phase.global_batch
        grad_sq, trace = noise.two_batch(small_sq, big_sq, b, big_b)
        scale = noise.NoiseScale(**(self.progress.noise or {}))
        b_simple = scale.update(grad_sq, trace, self.config.log.noise_ema)
        self.progress.noise = dataclasses.asdict(scale)
        return {
            "noise/small_sq": small_sq,
            "noise/big_sq": big_sq,
            "noise/grad_sq": grad_sq,
            "noise/trace": trace,
            "noise/b_simple": b_simple,
        }

    def _to_loggers(self, records: list[dict[str, Any]]) -> None:
        """The curves' numbers to the run's Lightning loggers (``log.loggers``), at the run's
        step; the JSONL curves stay the source of truth."""
        try:
            loggers = self.trainer.loggers
        except RuntimeError:  # not attached to a Trainer
            return
        for record in records:
            numbers = {
                k: float(v)
                for k, v in record.items()
                if "/" in k and isinstance(v, int | float) and not isinstance(v, bool)
            }
            for logger in loggers:
                logger.log_metrics(numbers, step=record["step"])

    @torch.no_grad()
    def _validate(self) -> None:
        """Validation losses on the first ``log.val_batches`` batches (split over ranks)."""
        batches = self._val_batches()
        if batches is None:
            return
        self.model.eval()
        sums = torch.zeros(6, dtype=torch.float64, device=self.device)
        for batch in batches:
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            out = self.model(batch)
            n = batch["next_sentence_labels"].numel()
            sums += torch.stack(
                [
                    out["mlm_loss"].detach() * out["mlm_count"],
                    out["mlm_count"],
                    out["nsp_loss"].detach() * n,
                    torch.tensor(n, device=self.device),
                    out["mlm_correct"],
                    out["nsp_correct"],
                ]
            ).to(torch.float64)
        self.model.train()
        mlm_sum, mlm_count, nsp_sum, count, mlm_correct, nsp_correct = all_reduce(sums).tolist()
        if count == 0:
            return
        mlm, nsp = mlm_sum / max(mlm_count, 1.0), nsp_sum / count
        record = {
            "phase": self.phase_index + 1,
            "step": self.step,
            "phase_step": self.progress.phase_step,
            "val/loss": mlm + nsp,
            "val/mlm_loss": mlm,
            "val/nsp_loss": nsp,
            "val/mlm_acc": mlm_correct / max(mlm_count, 1.0),
            "val/nsp_acc": nsp_correct / count,
            "samples": self.progress.samples,
            "wall_time": self.progress.wall_time,
        }
        self.last_val = record
        if self.curves is not None:
            self.curves.append("val", [record])
        self._to_loggers([record])

    def _val_batches(self) -> list[dict[str, Tensor]] | None:
        """This rank's share of the first ``log.val_batches`` validation batches (kept on CPU).

        A loader that shards by rank itself (a ``DistributedSampler`` over the ranks) gives each
        rank its first ``ceil(val_batches / world)`` batches; otherwise rank ``r`` takes batches
        ``r, r + world, ...`` of the first ``val_batches``.
        """
        if self._val is None:
            dm = self.trainer.datamodule
            limit = self.config.log.val_batches
            get = getattr(dm, "validation_loader", None) or getattr(dm, "val_dataloader", None)
            loader = get() if get is not None and limit > 0 else None
            rank, world = self.trainer.global_rank, self.trainer.world_size
            sampler = getattr(loader, "sampler", None)
            sharded = isinstance(sampler, DistributedSampler) and sampler.num_replicas == world
            self._val = []
            for i, batch in enumerate(loader or ()):
                if sharded:
                    if i >= -(-limit // world):
                        break
                    self._val.append(batch)
                elif i >= limit:
                    break
                elif i % world == rank:
                    self._val.append(batch)
        return self._val if self._val or self.trainer.world_size > 1 else None

    # --- checkpoints ---------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.flush()  # the curves are never behind a checkpoint
        checkpoint["ablations"] = {
            "phase": self.phase_index + 1,
            **dataclasses.asdict(self.progress),
            "outcome": self.outcome,
            "divergence": self.divergence,
            "last_metrics": self.last_metrics,
            "last_val": self.last_val,
            "rng": _get_rng(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["ablations"]
        if state["phase"] != self.phase_index + 1:
            raise ValueError(
                f"checkpoint of phase {state['phase']} given to phase {self.phase_index + 1}"
            )
        self.progress = Progress(**_fields(Progress, state))
        self.outcome, self.divergence = state["outcome"], state["divergence"]
        self.last_metrics, self.last_val = state["last_metrics"], state["last_val"]
        self._pending_rng = state["rng"]

    def on_train_end(self) -> None:
        self.flush()

    def teardown(self, stage: str) -> None:
        if self.curves is not None:
            self.curves.close()


def _diverged(loss: float, first: float | None, factor: float) -> str | None:
    if not math.isfinite(loss):
        return f"non-finite loss ({loss})"
    if first is not None and loss > factor * first:
        return f"loss {loss:.6g} > {factor:g} x the first step's loss {first:.6g}"
    return None


def _fields(cls: type, state: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in state.items() if k in names}


def _get_rng() -> dict[str, Any]:
    """Global RNG states as tensors and plain values (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
