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
  DDP, an asynchronous op on GPU). They are read on the host in one transfer by :meth:`flush`:
  every step on CPU (where reading a tensor costs nothing), otherwise every ``log.flush_every``
  steps, before every checkpoint (so the curves are never behind a checkpoint) and at
  validation, and written as curve lines (:mod:`ablations.run.step_records`). Divergence is
  judged at the flush, identically on every rank; under fp16 the GradScaler reads a flag on the
  host every step anyway.
- **Validation** at the module's own steps, outside Lightning's loop
  (:mod:`ablations.run.validation`).
- **Checkpoints** carry the run's counters and RNG states besides Lightning's state
  (:mod:`ablations.run.checkpoint_state`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

import lamb_variants
from ablations.config import ConfigError, RunConfig, load_factory
from ablations.core.internals import loss_scale
from ablations.run import group_lr, noise, resolved, step_records, validation
from ablations.run.checkpoint_state import Progress, capture_rng, restore_rng
from ablations.run.curves import Curves
from ablations.run.model import BertPretraining
from ablations.run.step_records import PendingStep
from ablations.run.step_stats import StepStats, all_reduce, restart_steps


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
            # the counters go on, the steps restart
            self.progress = Progress.from_state(state, phase_step=0)
            self.last_metrics, self.last_val = state.get("last_metrics"), state.get("last_val")
            self._pending_rng = state.get("rng")
        self._micro = 0
        self._acc: Tensor | None = None
        self._steps: list[PendingStep] = []
        self._val: list[dict[str, Tensor]] | None = None
        #: Whether this phase's validation batches were read before the checkpoint this module
        #: resumed from (that read drew a DataLoader seed from the global RNG; see _val_batches).
        self._val_read_before = False
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
            for group, name in zip(groups, resolved.GROUPS, strict=False):
                group.update(opt_config.groups.knobs(name))  # a group's knobs win over defaults
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
        scales = [g.lr_scale for g in plan.groups][: len(opt.param_groups)]
        return [opt], [group_lr.start_phase(opt, schedule, lr=phase.lr, scales=scales)]

    def _record_resolution(self, plan: resolved.Resolved, opt: torch.optim.Optimizer) -> None:
        """Write ``resolved.json`` (:mod:`ablations.run.resolved`; global rank 0 only): the
        knobs and λ of each group, its tensors and this phase's data, as this phase trains them.

        The knobs are the resolution of the config; the groups' λ are read back from the built
        optimizer, and a preset optimizer's knobs too (:meth:`resolved.Resolved.check_built`), so
        that a resolution that disagreed with what ``lamb_variants.create`` built fails here
        instead of mislabelling the run.
        Every phase and attempt rewrites the same values and adds its phase's data.
        """
        if self.curves is None or not self.curves.enabled:
            return
        run_dir = self.curves.run_dir
        previous = resolved.read(run_dir)
        mine = plan
        if previous is not None and previous.source == "run":
            mine = dataclasses.replace(mine, data=previous.data)
        mine.check_built(opt.param_groups)
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
            restore_rng(self._pending_rng)
            self._pending_rng = None
        accumulation = self.accumulation
        last = self._micro + 1 == accumulation
        with contextlib.nullcontext() if last else self._no_sync():
            out = self.model(batch)
            self.manual_backward(out["loss"] / accumulation)
        sums = step_records.train_sums(out, batch)
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
            PendingStep(
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
            "train/loss": s.values[0].item() / micro_batches,  # TRAIN[0], as flush computes it
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
            train, optim = step_records.split_row(row)
            self.progress.tokens += int(train["tokens"]) if math.isfinite(train["tokens"]) else 0
            record = step_records.metrics_record(
                self.phase_index + 1,
                s,
                train,
                optim,
                micro_batches=micro_batches,
                global_batch=self.phase.global_batch,
                skipped=self.progress.skipped,
                tokens=self.progress.tokens,
            )
            if self.config.log.noise_scale:
                record.update(self._noise_record(optim["noise_small_sq"], optim["noise_big_sq"]))
            records.append(record)
            if s.layers is not None:
                layer_records.append(step_records.layers_record(self.phase_index + 1, s))
            loss = record["train/loss"]
            if s.step == 1:
                self.progress.first_loss = loss if math.isfinite(loss) else None
            reason = step_records.diverged(loss, self.progress.first_loss, factor)
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
        sums = validation.sums(self.model, batches, self.device)
        record = validation.record(
            all_reduce(sums).tolist(),
            phase=self.phase_index + 1,
            step=self.step,
            phase_step=self.progress.phase_step,
            samples=self.progress.samples,
            wall_time=self.progress.wall_time,
        )
        if record is None:
            return
        self.last_val = record
        if self.curves is not None:
            self.curves.append("val", [record])
        self._to_loggers([record])

    def _val_batches(self) -> list[dict[str, Tensor]] | None:
        """This rank's share of the first ``log.val_batches`` validation batches (kept on CPU;
        :func:`ablations.run.validation.rank_batches`), read once; None when there are none.

        Exact resume: creating a ``DataLoader`` iterator without a ``generator`` draws its base
        seed from the global torch RNG, the RNG dropout draws from. An uninterrupted phase makes
        that draw once, at its first validation. A phase resumed from a checkpoint taken after
        that validation must not draw again, or every dropout mask after its next validation
        differs from the uninterrupted run's: there the batches are read with the global RNG
        forked (its state put back after the read). Before the first validation, the read draws
        as the uninterrupted phase's did.
        """
        if self._val is None:
            dm = self.trainer.datamodule
            limit = self.config.log.val_batches
            get = getattr(dm, "validation_loader", None) or getattr(dm, "val_dataloader", None)
            rank, world = self.trainer.global_rank, self.trainer.world_size
            fork = (
                torch.random.fork_rng(devices=[])
                if self._val_read_before
                else contextlib.nullcontext()
            )
            with fork:
                loader = get() if get is not None and limit > 0 else None
                self._val = validation.rank_batches(loader, limit, rank, world)
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
            # a checkpoint taken after a restore and before the first step (a preemption
            # right after a resume) saves the restored state, not the unrestored global one
            "rng": self._pending_rng if self._pending_rng is not None else capture_rng(),
            "val_read": self._val is not None or self._val_read_before,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["ablations"]
        if state["phase"] != self.phase_index + 1:
            raise ValueError(
                f"checkpoint of phase {state['phase']} given to phase {self.phase_index + 1}"
            )
        self.progress = Progress.from_state(state)
        self.outcome, self.divergence = state["outcome"], state["divergence"]
        self.last_metrics, self.last_val = state["last_metrics"], state["last_val"]
        self._pending_rng = state["rng"]
        self._val_read_before = bool(state.get("val_read", False))  # older checkpoints: False

    def on_train_end(self) -> None:
        self.flush()

    def teardown(self, stage: str) -> None:
        if self.curves is not None:
            self.curves.close()
