"""What ``train`` shows while it runs (``log.progress`` of the run config).

Two displays, one per kind of reader:

- :class:`StepProgressBar`, Lightning's tqdm bar for a terminal. Lightning's own bar counts
  micro-batches up to the data loader's length, which here is not the phase's length (the
  sampler has room for fp16-skipped windows, and accumulation makes several batches one step);
  this one counts the phase's optimizer steps, so its total, rate (steps/s) and remaining time
  are right, and it writes to stderr: stdout carries the CLI's result.
- :class:`StatusLines`, a one-line status on stderr every ``log.status_every_seconds``, for logs
  that are files (SLURM, sweep workers, CI), where a bar's carriage returns are noise::

      phase 1 step 120/875 (13%) loss 6.412 lr 3.1e-03 4.8 steps/s eta 2m01s

Both read numbers the module already has (:meth:`PretrainingModule.latest`), and neither goes
through ``self.log(..., prog_bar=True)``: Lightning converts logged values with ``.item()`` after
every batch, a host sync per step on an accelerator, which the module's deferred reads exist to
avoid. The bar shows the last written curve line (no read at all; on an accelerator it is up to
``log.flush_every`` steps old); a status line reads the newest step (one host transfer per line).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from ablations.config import LogConfig

Display = Literal["bar", "lines", "none"]


def display(log: LogConfig) -> Display:
    """The display ``log.progress`` asks for; ``"auto"``: the bar if stderr is a terminal."""
    if log.progress == "auto":
        return "bar" if sys.stderr.isatty() else "lines"
    return log.progress


def callbacks(log: LogConfig) -> list[Callback]:
    """The Lightning callbacks that show progress as ``log`` asks (empty for ``"none"``)."""
    shown = display(log)
    if shown == "bar":
        return [StepProgressBar()]
    if shown == "lines":
        return [StatusLines(log.status_every_seconds)]
    return []


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar over the phase's optimizer steps, on stderr, with step, loss and lr.

    Lightning disables it on every rank but global rank 0.
    """

    def init_train_tqdm(self) -> Tqdm:
        """Lightning's training bar, on stderr, over the phase's steps (a resumed phase starts
        where it was)."""
        module = self.trainer.lightning_module
        return Tqdm(
            desc=f"phase {module.phase_index + 1}",
            total=module.phase.steps,
            initial=module.progress.phase_step,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stderr,
            smoothing=0,  # the rate is the average since this fit started
            unit="steps",
            bar_format=self.BAR_FORMAT,
        )

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        """Nothing: Lightning resets the bar to the epoch's micro-batches here, but a phase is
        one epoch and the bar counts its steps from :meth:`init_train_tqdm`."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *_: Any) -> None:
        bar = self.train_progress_bar
        done = pl_module.progress.phase_step
        if bar.disable or done == bar.n:
            return  # inside an accumulation window, or a GradScaler-skipped step
        bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        bar.update(done - bar.n)  # redraws at most every tqdm mininterval (0.1 s)

    def get_metrics(self, trainer: L.Trainer, pl_module: Any) -> dict[str, Any]:
        """The last written line's step, loss and lr, then whatever is logged with prog_bar."""
        shown: dict[str, Any] = {}
        line = pl_module.latest()
        if line is not None:
            shown = {
                "step": line["step"],
                "loss": f"{line['train/loss']:.4g}",
                "lr": f"{line['optim/lr']:.2e}",
            }
        return {**shown, **super().get_metrics(trainer, pl_module)}


class StatusLines(Callback):
    """A status line on stderr (global rank 0) at the first step of each ``fit``, then at the
    first step after every ``every_seconds`` (0: every step), and at the phase's end.

    The first line says early that training runs and at what loss; the last one, that the phase
    finished. Step, percentage and ETA are over the whole run (the ``step`` of ``metrics.jsonl``);
    the rate is measured since this ``fit`` started, so a resumed run's rate is its own.
    """

    def __init__(self, every_seconds: float) -> None:
        self.every_seconds = every_seconds
        self._start = 0.0  # when this fit started (perf_counter)
        self._start_step = 0  # the run's step then
        self._last = 0.0  # when the last line was printed
        self._printed: int | None = None  # the step of the last line

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._start = self._last = time.perf_counter()
        self._start_step = pl_module.step
        self._printed = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *_: Any) -> None:
        step = pl_module.step
        if not trainer.is_global_zero or step in (self._printed, self._start_step):
            return  # no new applied step since the last line (or since the start)
        now = time.perf_counter()
        if self._printed is None or now - self._last >= self.every_seconds:
            self._print(pl_module, now)

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if trainer.is_global_zero and pl_module.step not in (self._printed, self._start_step):
            self._print(pl_module, time.perf_counter())

    def _print(self, pl_module: Any, now: float) -> None:
        line = pl_module.latest(read=True)
        if line is None:
            return
        step = line["step"]
        total = sum(p.steps for p in pl_module.config.phases)
        elapsed = now - self._start
        rate = (step - self._start_step) / elapsed if elapsed > 0 else 0.0
        text = (
            f"phase {line['phase']} step {step}/{total} ({100 * step // total}%) "
            f"loss {line['train/loss']:.4g} lr {line['optim/lr']:.1e}"
        )
        if rate > 0:
            text += f" {rate:.3g} steps/s eta {duration((total - step) / rate)}"
        print(text, file=sys.stderr, flush=True)
        self._last, self._printed = now, step


def duration(seconds: float) -> str:
    """``45s``, ``2m01s``, ``3h07m``: short enough for a status line."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
