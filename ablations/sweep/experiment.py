"""One experiment of the sweep file: what it compares, how it tunes, where its workers run.

An experiment compares *variants* (a grid of toggles, or a list of named ones) of one workload
(a :class:`~ablations.config.RunConfig` as plain data). Every variant gets the same tuning
budget: ``search.budget`` points of the ``tune`` ranges (the same quasi-random points for every
variant by default, so variants are compared point by point), then the best point of each
variant is rerun with ``seeds`` fresh seeds. Without ``tune`` the variants are run with seeds
``0 .. seeds-1`` directly. Toggles, tuned hyperparameters and the workload are all addressed by
the dotted paths of the run config (``optimizer.overrides.prenorm``, ``phases.0.lr``), the same
paths as ``python -m ablations train ... key=value``.

These are the blocks' dataclasses, each value checked as it is built
(:func:`ablations.config.build`); what needs the whole experiment (the workload, its variants and
tuning points together) is checked when it is resolved (:mod:`ablations.sweep.plan`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ablations.config import check

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TIME = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+)(?::(\d+))?$")
_MEM = re.compile(r"^\d+[KMGT]?$")
OBJECTIVES = ("val/mlm_loss", "val/loss")


@dataclass(frozen=True)
class SlurmConfig:
    """One job array of workers per experiment (plus a dependent collect job).

    ``nodes`` x ``tasks_per_node`` ranks train one trial together (``tasks_per_node`` must equal
    the workload's ``devices``, ``nodes`` its ``num_nodes``: Lightning's SLURM rules).
    ``array_size`` workers in all, ``parallelism`` at a time (``--array=0-N%P``). Jobs are
    submitted with ``--requeue`` and ``--signal=USR1@signal_seconds``: on the signal a worker
    checkpoints its trial, hands it back to the study and requeues itself.
    """

    #: ``--partition`` of the worker and collect jobs; None: the cluster's default.
    partition: str | None = None
    #: ``--account`` of the worker and collect jobs; None: your default account.
    account: str | None = None
    #: ``--qos`` of the worker and collect jobs; None: the default QOS.
    qos: str | None = None
    #: ``--nodes`` of each worker: the nodes one trial trains on (= the workload's
    #: ``num_nodes``).
    nodes: int = 1
    #: ``--ntasks-per-node``: one task per device (= the workload's ``devices``).
    tasks_per_node: int = 1
    #: ``--gpus-per-node``; 0: none requested (a CPU workload).
    gpus_per_node: int = 0
    #: ``--cpus-per-task``; also each task's CPU threads (``torch.set_num_threads``,
    #: ``OMP_NUM_THREADS``).
    cpus_per_task: int = 1
    #: ``--mem``: memory per node, a number with an optional K, M, G or T suffix.
    mem: str = "4G"
    #: ``--time``: the limit of each worker job (SLURM's format), which runs trial after trial
    #: until no work is left or the limit nears (``signal_seconds``).
    time: str = "01:00:00"
    #: Workers of the job array (``--array=0-N``), each running one trial at a time.
    array_size: int = 1
    #: Workers running at once (``--array=...%P``); None: as many as SLURM allows.
    parallelism: int | None = None
    #: Seconds before ``time`` at which SLURM sends USR1 (``--signal=USR1@N``): enough for a
    #: worker to checkpoint its trial, hand it back and requeue itself.
    signal_seconds: int = 120
    #: Times the collect job resubmits workers while trials are left (a killed array).
    max_resubmits: int = 2
    extra_sbatch: tuple[str, ...] = ()  # more "#SBATCH ..." lines, e.g. "--constraint=a100"
    setup: tuple[str, ...] = ()  # shell lines before the workers start, e.g. "module load cuda"

    def __post_init__(self) -> None:
        for name in ("nodes", "tasks_per_node", "cpus_per_task", "array_size"):
            check(getattr(self, name) >= 1, name, "an integer >= 1", getattr(self, name))
        check(self.gpus_per_node >= 0, "gpus_per_node", "an integer >= 0", self.gpus_per_node)
        check(_MEM.match(self.mem) is not None, "mem", "a size like 4G or 4000M", self.mem)
        check(
            _TIME.match(self.time) is not None and time_seconds(self.time) > 0,
            "time",
            "a SLURM time like 04:00:00, 90 or 1-00:00:00",
            self.time,
        )
        limit = time_seconds(self.time)
        check(
            0 < self.signal_seconds < limit,
            "signal_seconds",
            f"seconds in (0, time={limit})",
            self.signal_seconds,
        )
        if self.parallelism is not None:
            check(
                1 <= self.parallelism <= self.array_size,
                "parallelism",
                f"an integer in [1, array_size={self.array_size}]",
                self.parallelism,
            )
        check(self.max_resubmits >= 0, "max_resubmits", "an integer >= 0", self.max_resubmits)
        for i, line in enumerate(self.extra_sbatch):
            check(line.startswith("--"), f"extra_sbatch[{i}]", "an option like --qos=x", line)


def time_seconds(text: str) -> int:
    """Seconds of a SLURM time limit (``[D-]HH:MM:SS``, ``MM:SS``, ``MM``, ``D-HH``)."""
    m = _TIME.match(text)
    if m is None:
        return 0
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        parts = [p for p in (a, b, c) if p is not None]
        hh, mm, ss = (parts + [0, 0, 0])[:3] if a is None else (a, b or 0, c or 0)
        return days * 86400 + hh * 3600 + mm * 60 + ss
    if a is None and c is None:
        return b * 60  # minutes
    if c is None:
        return a * 60 + b  # MM:SS
    return a * 3600 + b * 60 + c


@dataclass(frozen=True)
class Range:
    """A tuned hyperparameter: ``low``..``high`` (``log`` scale), or ``values`` for a grid."""

    #: Lower end of the range (``qmc``, ``random`` and ``tpe``; not with ``grid``).
    low: float | None = None
    #: Upper end of the range, above ``low``.
    high: float | None = None
    #: Draw uniformly in log space (e.g. learning rates); ``low`` must then be > 0.
    log: bool = False
    #: The values to try, for ``search.method: grid`` only (instead of ``low`` and ``high``).
    values: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class SearchConfig:
    """How the ``budget`` points per variant are chosen.

    ``qmc`` (default): scrambled Halton points, the same for every variant (the tuning
    playbook's quasi-random search: non-adaptive, so variants are compared point by point).
    ``random``: seeded uniform points, also shared. ``grid``: every combination of the ranges'
    ``values``. ``tpe``: Optuna's TPE, adaptive, one model per variant (fit to that variant's
    finished trials only).
    """

    #: How the points are chosen (see above).
    method: Literal["qmc", "random", "grid", "tpe"] = "qmc"
    #: Tuning trials per variant (pruned ones count); 1 when nothing is tuned. With ``grid``:
    #: the grid's size (or 1, meaning the same).
    budget: int = 1
    #: Seed of the points: the Halton scrambling (``qmc``), the uniform draws (``random``), or
    #: TPE's sampler (``tpe``); not the runs' seeds.
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.budget >= 1, "budget", "an integer >= 1", self.budget)


@dataclass(frozen=True)
class PrunerConfig:
    """Optional pruning of tuning trials (never of the seed reruns), on the objective at each
    validation; the same pruner for every variant, and pruned trials count in the budget.
    Optuna's pruners compare a trial with all the experiment's trials at the same step, other
    variants' included: for a comparison that is strictly per variant, leave it off (the
    default, as AlgoPerf, DeepOBS and Crowded Valley do)."""

    #: ``none``; ``median``: Optuna's ``MedianPruner`` (stop a trial whose objective is worse
    #: than the median of the trials at the same step); ``hyperband``: Optuna's
    #: ``HyperbandPruner``.
    type: Literal["none", "median", "hyperband"] = "none"
    #: ``median``: no pruning until this many trials of the experiment have finished.
    n_startup_trials: int = 4
    #: ``median``: no pruning of a trial before this optimizer step.
    n_warmup_steps: int = 0
    #: ``hyperband``: optimizer steps a trial runs before it may first be stopped (its first
    #: rung).
    min_resource: int = 1


@dataclass(frozen=True)
class Variants:
    """``grid``: the cartesian product of toggle values; ``named``: variants by name; both:
    every named variant at every grid point (``no_prenorm,preset=apex,lr=0.003``), e.g. a few
    interventions each swept over the learning rate."""

    #: Run-config path -> the values to try (``optimizer.preset: [apex, nvlamb]``): one variant
    #: per combination, named after it (``preset=apex,lr=0.003``).
    grid: Mapping[str, tuple[Any, ...]] | None = None
    #: Variant name -> the run-config paths it sets and their values (``{}``: the workload as
    #: it is).
    named: Mapping[str, Mapping[str, Any]] | None = None


@dataclass(frozen=True)
class ExtendConfig:
    """A design that extends itself until its edges are bracketed (issue 20; rule and records in
    :mod:`ablations.sweep.extend`).

    ``axis`` is a numeric path of ``variants.grid`` (e.g. ``phases.0.lr``); a *curve* is the set
    of variants that differ only in it. After each round (every slot of a curve finished), a
    curve whose best value (``bracket: optimum``: the lowest mean ranked objective over seeds)
    or whose first failing value (``failure``: the smallest at which a seed failed to train or
    diverged; none yet counts as "beyond the top") lies at an end of its values gets the next
    value beyond that end: ``factor`` times the largest, or the smallest divided by it, up to
    ``max_steps`` values beyond each end. With ``against`` (a named variant), a variant whose
    paired difference from ``against`` at the same grid point has a 95% interval wider than
    ``± half_width`` gets one more seed (both sides of the pair), up to ``max_seeds``. With
    ``best_seeds``, a curve whose optimum is settled gets that many seeds at its best value.
    """

    #: The ``variants.grid`` path extended: its values must be numbers > 0.
    axis: str
    #: Ratio of each added value to its neighbour at the end (× above the largest, ÷ below
    #: the smallest).
    factor: float
    #: Values added beyond each end of a curve at most.
    max_steps: int = 3
    #: What each curve is extended to bracket: ``optimum``, its best value (while that is at
    #: an end); ``failure``, the value from which seeds diverge or fail to train (upward while
    #: none fails, downward while the smallest does); or both.
    bracket: tuple[Literal["optimum", "failure"], ...] = ("optimum",)
    #: The named variant every other one is compared with, pairwise at each grid point; set
    #: together with ``half_width`` and ``max_seeds``.
    against: str | None = None
    #: Target half-width of the 95% interval of a paired difference, in the units of the
    #: ranked objective (a loss, or steps under ``rank: first_target``): a wider pair gets one
    #: more seed on both sides.
    half_width: float | None = None
    #: Seeds per variant at most when seeds are added for ``against`` (more than ``seeds``).
    max_seeds: int | None = None
    #: Seeds of each curve's best value once its optimum is bracketed (or its end's budget
    #: spent): the rest of the curve keeps ``seeds``. None: every value keeps ``seeds``.
    best_seeds: int | None = None

    def __post_init__(self) -> None:
        check(1 < self.factor < float("inf"), "factor", "a number > 1", self.factor)
        best = self.best_seeds
        check(best is None or best >= 1, "best_seeds", "an integer >= 1", best)
        check(self.max_steps >= 1, "max_steps", "an integer >= 1", self.max_steps)
        check(
            len(set(self.bracket)) == len(self.bracket),
            "bracket",
            "distinct values of ['optimum', 'failure']",
            list(self.bracket),
        )
        seeds = (self.against, self.half_width, self.max_seeds)
        check(
            all(x is None for x in seeds) or all(x is not None for x in seeds),
            "against",
            "'against', 'half_width' and 'max_seeds' together, or none of them",
            self.against,
        )
        if self.half_width is not None:
            check(self.half_width > 0, "half_width", "a number > 0", self.half_width)


@dataclass(frozen=True)
class Experiment:
    """One study: variants of a workload, an equal tuning budget each, seeds."""

    #: The run config every trial starts from, as plain data (a run config file's keys;
    #: defaults fill the rest). Its ``seed`` is set per trial.
    workload: Mapping[str, Any]
    #: What is compared: the variants' settings over the workload, by run-config path.
    variants: Variants
    #: What the experiment does, in a sentence (shown with its results).
    description: str = ""
    #: The published claim this experiment tests (shown next to our result).
    claim: str = ""
    #: Run by a plain ``make sweep`` (``false``: only with ``EXPERIMENT=name``).
    default: bool = True
    #: Shortcut for ``workload.optimizer.preset``.
    preset: str | None = None
    #: Run-config path -> the range it is tuned over, for every variant (``phases.0.lr``);
    #: a path may not also be set by ``variants``. Empty: no tuning.
    tune: Mapping[str, Range] = field(default_factory=dict)
    #: How the ``tune`` points are chosen and how many per variant.
    search: SearchConfig = field(default_factory=SearchConfig)
    #: Runs per variant at its best tuning point (seeds 1 .. ``seeds``; the tuning trials use
    #: seed 0); without ``tune``, the variant's runs (seeds 0 .. ``seeds`` - 1).
    seeds: int = 3
    #: The validation metric, lower being better, that ranks the trials (under ``rank:
    #: first_target``, by the step at which it reaches the target) and that the pruner reads:
    #: ``val/mlm_loss`` (masked-LM cross-entropy) or ``val/loss`` (plus the next-sentence
    #: loss). A run that diverged or never validated ranks last.
    objective: str = "val/mlm_loss"
    #: Target values of the objective, declared before the runs: ``runs.parquet`` gets, per
    #: run, the first step and the samples at which its validation ``objective`` reaches each
    #: (``steps_to_<t>``, ``samples_to_<t>``; NaN: not reached). A workload's ``stop_at`` ends
    #: a run at such a target.
    targets: tuple[float, ...] = ()
    #: How a trial is ranked (its Optuna value, minimized; the seeds rerun the best tuning
    #: point): "final": the objective at the run's end; "first_target": the first validation
    #: step at which the objective reaches the lowest target, a run that never does ranking
    #: after every one that does, by its final objective (steps x (1 + final - target)). A
    #: steps-to-target study needs the latter: with ``stop_at`` every run that reaches the
    #: target ends at about the target's loss, so "final" would pick among them by chance.
    #: Under "first_target" a tuning run that has not reached the target by the step at which
    #: a finished tuning run of its variant did stops there (pruned, "outpaced"): it can no
    #: longer rank first, so the best point is the same at a fraction of the cost.
    rank: Literal["final", "first_target"] = "final"
    #: Early stopping of unpromising tuning trials; off by default.
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    #: This experiment's SLURM jobs: its keys override the top-level ``slurm`` block's.
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    #: Points added beyond the grid's edges and seeds added to wide comparisons, from finished
    #: trials (:class:`ExtendConfig`); None: the design as written.
    extend: ExtendConfig | None = None
