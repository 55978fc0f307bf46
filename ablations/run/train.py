"""Train one run: the place where a ``lamb_variants`` optimizer meets the BERT workload.

:func:`train` runs the phases of a :class:`~ablations.config.RunConfig` one Lightning
``Trainer.fit`` each, writes the run's files (:mod:`ablations.run.curves`), and resumes from the
last checkpoint (:mod:`ablations.run.checkpoints`) when called again with the same ``run_dir``::

    <run_dir>/checkpoints/phase1/last.ckpt   every ``checkpoint_every`` steps (the resume point)
    <run_dir>/checkpoints/phase1/end.ckpt    the phase is complete (last.ckpt is then removed)
    <run_dir>/checkpoints/phase2/...

Phase 2 starts from ``phase1/end.ckpt``: its weights, its optimizer moments
(``optimizer.phase2="carry"``, NVIDIA's semantics; ``"fresh"``: a new optimizer), its counters and
its RNG state, with the step count and LR schedule restarted at phase 2's lr. A checkpoint inside
phase 2 resumes phase 2. A run whose ``status.json`` says ``complete`` or ``diverged`` is not run
again; ``train`` returns that status (the statuses: :mod:`ablations.core.status`).

Data (:mod:`ablations.run.phase_data`). The data module
(``ablations.data.datamodule.BertDataModule(data, phase, seed)`` unless one is injected) provides
examples; the training batches are cut by :class:`~ablations.run.sampling.StepBatchSampler` from
``train_dataloader().dataset`` (a map-style dataset of examples, collated by the loader's
``collate_fn`` into :mod:`ablations.data.batch` dicts), so the data order is a function of (seed,
optimizer step, rank): restored exactly on resume and the same global batches on any number of
devices. A data module may define ``epoch_order(epoch)`` (a permutation of its training examples,
the same on every rank) to set the order within an epoch, e.g. shard by shard; the default is a
seeded ``randperm``. Exact resumption also needs a data pipeline that does not draw from the
global RNGs (the model's dropout does, and its RNG state is checkpointed).

Progress. Lightning's progress bar when stderr is a terminal, otherwise a status line every
``log.status_every_seconds`` (``log.progress``; :mod:`ablations.run.progress`). Both go to stderr:
stdout carries the CLI's result. Loggers: ``log.loggers`` (:mod:`ablations.run.loggers`).

Distributed. ``devices * num_nodes > 1`` uses Lightning's ``"ddp"`` strategy (gloo on CPU, NCCL
on GPU); under SLURM Lightning's ``SLURMEnvironment`` is detected as usual (``srun`` with
``--ntasks-per-node = devices``). Every rank runs this function; only global rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback, ProgressBar

from ablations.config import RunConfig, load_factory
from ablations.core.errors import one_line
from ablations.core.fileio import read_json
from ablations.core.status import DONE, Status, StopRun
from ablations.run import checkpoints, resolved, writer
from ablations.run.checkpoints import AtomicCheckpointIO, PhaseEnd, ResumePoints
from ablations.run.curves import write_config, write_meta, write_status
from ablations.run.loggers import check_loggers, end_tracker_runs, lightning_loggers, log_final
from ablations.run.module import PretrainingModule
from ablations.run.phase_data import DataModuleFactory, PhaseData, phase_datamodule, windows
from ablations.run.progress import callbacks as progress_callbacks
from ablations.run.resolved import resolve

#: Lightning warnings that do not apply here (each says why in train()).
_QUIET = (
    # Our checkpoints are taken after the update on purpose: they are resume points.
    r"Using ModelCheckpoint with manual optimization",
    # The sampler restarts at the restored step: the data loader needs no state of its own.
    r"You're resuming from a checkpoint that ended before the epoch ended",
    # Lightning 2.6.6's own use of a torch.utils._pytree API that torch 2.13 deprecates.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # Lightning's SLURM check at every fit() (SLURMEnvironment.detect), on any machine where srun
    # is installed: a run outside SLURM is meant to be one (under srun it does not fire).
    r"The `srun` command is available on your system but is not used",
)


def under_srun() -> bool:
    """Whether this process is a task ``srun`` started in a SLURM job: Lightning's own rule for
    using its ``SLURMEnvironment`` (``SLURM_NTASKS`` set, the job not named ``bash`` or
    ``interactive``), read without Lightning's detection, which warns outside SLURM on a machine
    where ``srun`` is merely installed."""
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in (
        "bash",
        "interactive",
    )


class _NoAdvertisement(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing litlogger" line, an advertisement printed by
    every ``Trainer`` that has no LitLogger (issue 21, item 5); its other info lines stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    if not any(isinstance(f, _NoAdvertisement) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(_NoAdvertisement())


class RunDirError(ValueError):
    """``run_dir`` holds a run with a different config."""


def train(
    config: RunConfig,
    run_dir: Path | str,
    datamodule: L.LightningDataModule | DataModuleFactory | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    plugins: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train (or resume, or return the result of) the run in ``run_dir``.

    Args:
        config: the run.
        run_dir: the run's directory, created if needed; a second call resumes.
        datamodule: the data: None for ``BertDataModule(config.phase_data(phase), phase,
            config.seed)``, a factory with that signature, or one data module used for every
            phase.
        callbacks: extra Lightning callbacks, given to every phase's ``Trainer``.
        plugins: Lightning plugins for every phase's ``Trainer`` (the sweep passes
            ``SLURMEnvironment(auto_requeue=False)``: it handles SLURM's signals itself).

    Returns:
        The content of ``status.json``: ``status`` ("complete" or "diverged"), ``step``, for a
        divergence its ``reason``, and the last ``metrics`` and ``val`` lines.

    Raises:
        RunDirError: ``run_dir`` holds a run with a different config (a ``ValueError``).
        Exception: whatever stopped training; ``status.json`` then says ``failed`` (or
            ``interrupted`` for a signal or Ctrl-C, or the status of a :class:`StopRun`) with a
            one-line error.
    """
    run_dir = Path(run_dir)
    saved = run_dir / "config.yaml"
    previous = resolved.read(run_dir)  # resolved.json, else config.yaml resolved now
    if saved.exists() and (previous is None or previous.identity() != resolve(config).identity()):
        raise RunDirError(f"{run_dir} holds a run with a different config.yaml; use a new run_dir")
    status = read_json(run_dir / "status.json")
    if status is not None and status["status"] in DONE:
        return status
    check_loggers(config)  # a resume may name other loggers
    if not saved.exists():
        _preflight(config, datamodule)

    L.seed_everything(config.seed, verbose=False)
    try:
        # one writer: global rank 0 (the only rank that writes; reentrant: a sweep worker
        # holds it already); the other ranks of a multi-process run write nothing
        rank = getattr(rank_zero_only, "rank", 0)
        hold = writer.exclusive(run_dir) if rank == 0 else contextlib.nullcontext()
        with hold, warnings.catch_warnings():
            for message in _QUIET:
                warnings.filterwarnings("ignore", message=message)
            try:
                result = _train(config, run_dir, datamodule, list(callbacks), list(plugins))
            except BaseException:
                end_tracker_runs(config, failed=True)
                raise
            end_tracker_runs(config, failed=False)
            return result
    except writer.WriterBusy as e:
        raise RunDirError(str(e)) from None


def _train(
    config: RunConfig,
    run_dir: Path,
    datamodule: L.LightningDataModule | DataModuleFactory | None,
    callbacks: list[Callback],
    plugins: list[Any],
) -> dict[str, Any]:
    rank0 = True
    module: PretrainingModule | None = None
    try:
        for i, phase in enumerate(config.phases):
            phase_dir = run_dir / "checkpoints" / f"phase{i + 1}"
            trainer = _trainer(config, i, phase_dir, callbacks, plugins)
            if i == 0:
                rank0 = trainer.global_rank == 0
                if rank0:
                    run_dir.mkdir(parents=True, exist_ok=True)
                    write_config(run_dir, config.to_dict())
                    write_meta(run_dir, _device(config))
                    write_status(run_dir, Status.RUNNING)
            end = phase_dir / checkpoints.END
            if end.exists():
                state = _reached(end) if config.stop_at is not None else None
                if state is not None:  # the run ended at stop_at in this phase
                    result = {
                        "status": Status.COMPLETE,
                        "step": state["reached"],
                        "reason": _REACHED.format(step=state["reached"], stop=config.stop_at),
                        "metrics": state["last_metrics"],
                        "val": state["last_val"],
                    }
                    return write_status(run_dir, **result) if rank0 else result
                continue
            resume = checkpoints.resume_path(phase_dir)
            init = None
            if resume is None and i > 0:
                init = checkpoints.load(run_dir / "checkpoints" / f"phase{i}" / checkpoints.END)
            module = PretrainingModule(config, i, run_dir=run_dir, init=init)
            data = PhaseData(phase_datamodule(datamodule, config, phase), phase, config.seed)
            trainer.fit(module, datamodule=data, ckpt_path=resume)
            if rank0:
                log_final(trainer.loggers, config, run_dir, module.last_val)
            # module.outcome is a plain string: it is saved in checkpoints loaded weights_only
            if module.outcome == Status.DIVERGED:
                result = _status(module, Status.DIVERGED, **module.divergence)
                return write_status(run_dir, **result) if rank0 else result
            if module.progress.reached is not None:  # at stop_at: no more steps, no phase 2
                reason = _REACHED.format(step=module.step, stop=config.stop_at)
                result = _status(module, Status.COMPLETE, step=module.step, reason=reason)
                return write_status(run_dir, **result) if rank0 else result
            if module.outcome != Status.COMPLETE:
                raise RuntimeError(
                    f"phase {i + 1} stopped after {module.progress.phase_step} of {phase.steps} "
                    f"steps ({module.progress.skipped} fp16 steps skipped)"
                )
        result = _status(module, Status.COMPLETE, step=sum(p.steps for p in config.phases))
        if module is None:  # every phase was complete already: take the numbers from the end
            state = checkpoints.load(end)["ablations"]
            result.update(metrics=state["last_metrics"], val=state["last_val"])
        return write_status(run_dir, **result) if rank0 else result
    except BaseException as e:
        if module is not None and module.curves is not None:
            module.curves.close()  # Lightning skips the module's teardown on an exception
        if rank0 and run_dir.exists():
            if isinstance(e, StopRun):
                status = e.status
            elif isinstance(e, KeyboardInterrupt | SystemExit):
                status = Status.INTERRUPTED
            else:
                status = Status.FAILED
            step = module.step if module is not None else 0
            write_status(run_dir, status, error=one_line(e, line="first"), step=step)
        raise


def _preflight(
    config: RunConfig, datamodule: L.LightningDataModule | DataModuleFactory | None
) -> None:
    """Build and check every phase's data before the run directory is created.

    Bad input (a missing or empty corpus, a shard with a missing key or the wrong sequence
    length, a vocabulary smaller than the shards' token ids) then fails with its one-line
    ``DataError`` and leaves nothing behind. The caches it builds are the ones training reads.
    """
    if config.optimizer.factory is not None:
        load_factory(config.optimizer.factory)  # importable and callable, or one line now
    for phase in config.phases:
        data = phase_datamodule(datamodule, config, phase)
        data.prepare_data()
        data.setup("fit")
        _ = data.vocab_size
        if hasattr(data, "unigram_entropy"):  # BertDataModule: also checks ids < vocab size
            _ = data.unigram_entropy
        data.train_dataloader()  # checks that the split holds a micro-batch


_REACHED = "reached stop_at: val/mlm_loss <= {stop} at step {step}"


def _reached(end: Path) -> dict[str, Any] | None:
    """The ``ablations`` state of a phase's end checkpoint if that phase stopped at stop_at."""
    state = checkpoints.load(end)["ablations"]
    return state if state.get("reached") is not None else None


def _status(module: PretrainingModule | None, status: Status, **fields: Any) -> dict[str, Any]:
    result = {"status": status, **fields}
    if module is not None:
        result.update(metrics=module.last_metrics, val=module.last_val)
    return result


def _trainer(
    config: RunConfig,
    phase_index: int,
    phase_dir: Path,
    callbacks: list[Callback],
    plugins: list[Any],
) -> L.Trainer:
    phase = config.phases[phase_index]
    world = config.devices * config.num_nodes
    progress = progress_callbacks(config.log)  # Lightning's bar, status lines, or nothing
    checkpoint = ResumePoints(
        dirpath=phase_dir,
        save_last=True,
        save_top_k=0,  # only last.ckpt: a resume point, not a model selection
        every_n_train_steps=config.checkpoint_every,
        save_on_train_epoch_end=False,
        enable_version_counter=False,
    )
    return L.Trainer(
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy="ddp" if world > 1 else "auto",
        precision=config.precision,
        max_steps=windows(phase),
        # the curves are ours (append-only, truncated on resume); log.loggers get copies
        logger=lightning_loggers(config, phase_dir.parent.parent, phase_index) or False,
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in progress),
        enable_model_summary=False,
        callbacks=[checkpoint, PhaseEnd(phase_dir), *progress, *callbacks],
        plugins=[AtomicCheckpointIO(), *plugins],
        default_root_dir=phase_dir,  # where SLURM's auto-requeue puts hpc_ckpt_*.ckpt
        use_distributed_sampler=False,  # StepBatchSampler shards by rank
        limit_val_batches=0,  # validation is run by the module at its own steps
        num_sanity_val_steps=0,
    )


def _device(config: RunConfig) -> str:
    if config.accelerator != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return "cpu"
