"""The sweep file (``sweep.yaml``): named experiments, validated strictly before anything runs.

An experiment compares *variants* (a grid of toggles, or a list of named ones) of one workload
(a :class:`~ablations.config.RunConfig` as plain data). Every variant gets the same tuning
budget: ``search.budget`` points of the ``tune`` ranges (the same quasi-random points for every
variant by default, so variants are compared point by point), then the best point of each
variant is rerun with ``seeds`` fresh seeds. Without ``tune`` the variants are run with seeds
``0 .. seeds-1`` directly. Toggles, tuned hyperparameters and the workload are all addressed by
the dotted paths of the run config (``optimizer.overrides.prenorm``, ``phases.0.lr``), the same
paths as ``python -m ablations train ... key=value``.

Every error is one line naming the key path (``experiments.fig2.tune.phases.0.lr.low``) and what
is allowed; :func:`load_sweep` raises it before any file is created or job submitted. Besides
each value, it refuses what would run but not compare what the file says: a key given twice (the
YAML loader), a variant path that ``tune`` also varies (or that one variant sets twice), a
``seed`` as variant or tuned value (the sweep sets it), and two variants that are the same run.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ablations.config import (
    ConfigError,
    RunConfig,
    build,
    check,
    check_key,
    plain,
    with_overrides,
)
from ablations.core.yamlio import load_yaml
from ablations.run.resolved import resolve

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

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem: str = "4G"
    time: str = "01:00:00"
    array_size: int = 1
    parallelism: int | None = None
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
class LocalConfig:
    """Workers as local processes, where ``sbatch`` does not exist."""

    workers: int = 2
    threads_per_worker: int = 1

    def __post_init__(self) -> None:
        check(self.workers >= 1, "workers", "an integer >= 1", self.workers)
        t = self.threads_per_worker
        check(t >= 1, "threads_per_worker", "an integer >= 1", t)


@dataclass(frozen=True)
class RetryConfig:
    """Lost trials (a worker killed or preempted) are retried from their checkpoint.

    A worker renews a lease file for its trial every ``heartbeat_seconds`` (or, with an RDB
    storage, Optuna's heartbeat); a trial whose worker process or SLURM job is gone, or whose
    lease is older than ``grace_seconds``, is failed and re-queued with the same parameters,
    at most ``max_retry`` times.
    """

    max_retry: int = 3
    heartbeat_seconds: int = 10
    grace_seconds: int = 120

    def __post_init__(self) -> None:
        check(self.max_retry >= 0, "max_retry", "an integer >= 0", self.max_retry)
        h = self.heartbeat_seconds
        check(h >= 1, "heartbeat_seconds", "an integer >= 1", h)
        check(
            self.grace_seconds >= 2 * h,
            "grace_seconds",
            f"at least 2 x heartbeat_seconds = {2 * h}",
            self.grace_seconds,
        )


@dataclass(frozen=True)
class Range:
    """A tuned hyperparameter: ``low``..``high`` (``log`` scale), or ``values`` for a grid."""

    low: float | None = None
    high: float | None = None
    log: bool = False
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

    method: Literal["qmc", "random", "grid", "tpe"] = "qmc"
    budget: int = 1
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

    type: Literal["none", "median", "hyperband"] = "none"
    n_startup_trials: int = 4
    n_warmup_steps: int = 0
    min_resource: int = 1


@dataclass(frozen=True)
class Variants:
    """``grid``: the cartesian product of toggle values; ``named``: variants by name; both:
    every named variant at every grid point (``no_prenorm,preset=apex,lr=0.003``), e.g. a few
    interventions each swept over the learning rate."""

    grid: Mapping[str, tuple[Any, ...]] | None = None
    named: Mapping[str, Mapping[str, Any]] | None = None


@dataclass(frozen=True)
class Experiment:
    """One study: variants of a workload, an equal tuning budget each, seeds."""

    workload: Mapping[str, Any]
    variants: Variants
    description: str = ""
    #: The published claim this experiment tests (shown next to our result).
    claim: str = ""
    #: Run by a plain ``make sweep`` (``false``: only with ``EXPERIMENT=name``).
    default: bool = True
    #: Shortcut for ``workload.optimizer.preset``.
    preset: str | None = None
    tune: Mapping[str, Range] = field(default_factory=dict)
    search: SearchConfig = field(default_factory=SearchConfig)
    seeds: int = 3
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
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


@dataclass(frozen=True)
class Sweep:
    """The whole sweep file."""

    experiments: Mapping[str, Experiment]
    #: Experiments write to ``<results>/<experiment>/`` (a shared filesystem on a cluster).
    results: str = "results"
    #: ``journal`` (Optuna's journal file in the experiment's directory, no server) or a
    #: PostgreSQL/MySQL URL (Optuna's RDB storage, with heartbeats).
    storage: str = "journal"
    local: LocalConfig = field(default_factory=LocalConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    #: Defaults of every experiment's ``slurm`` block (an experiment's keys override them).
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    #: Free-form; a place for YAML anchors (``&workload``) shared by experiments.
    templates: Mapping[str, Any] = field(default_factory=dict)
    #: Each experiment resolved (:func:`plan`), derived from the fields above when the sweep is
    #: built: not a key of the file.
    plans: Mapping[str, Plan] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Resolve every experiment once, here: all errors surface while the file is loaded,
        and the CLI, the driver and the workers read the same plans instead of redoing it."""
        plans = {name: _resolve(name, exp) for name, exp in self.experiments.items()}
        object.__setattr__(self, "plans", types.MappingProxyType(plans))
        _check_storage(self.storage)


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """An experiment, resolved: its variants' toggles and its tuning points."""

    name: str
    experiment: Experiment
    variants: dict[str, dict[str, Any]]  # variant name -> {path: value}
    points: list[dict[str, Any]] | None  # shared tuning points; None: tpe samples them
    base: RunConfig  # the workload, defaults filled in: what variants and points override

    @property
    def tuned(self) -> bool:
        return bool(self.experiment.tune)

    def config(self, variant: str, params: Mapping[str, Any], seed: int) -> RunConfig:
        """The run config of one trial: the workload with the variant's toggles, ``params``
        and ``seed`` set."""
        return with_overrides(self.base, {**self.variants[variant], **params, "seed": seed})

    def toggles(self, variant: str) -> dict[str, Any]:
        """Every toggle path of the experiment (the union over its variants) with the value
        ``variant`` runs: its own, or what its config resolves to (an optimizer knob left to the
        preset: the preset's, ``Preset.resolved``). What the study stores per trial."""
        paths = dict.fromkeys(p for toggles in self.variants.values() for p in toggles)
        own = self.variants[variant]
        resolution = None
        out = {}
        for path in paths:
            if path in own:
                out[path] = own[path]
                continue
            resolution = resolution or resolve(self.config(variant, {}, 0))
            out[path] = resolution.value(path)
        return out

    def to_dict(self) -> dict[str, Any]:
        """What ``sweep.json`` of the experiment holds (compared on every restart)."""
        return {
            "name": self.name,
            "experiment": plain(self.experiment),
            "variants": self.variants,
            "points": self.points,
        }


def load_sweep(path: Path | str) -> Sweep:
    """Read and validate a sweep file; raises :class:`ConfigError` (one line, key path)."""
    path = Path(path)
    raw = load_yaml(path, str(path))
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping with 'experiments', got {raw!r}")
    raw = dict(raw)
    exps = raw.get("experiments")
    if not isinstance(exps, Mapping) or not exps:
        raise ConfigError("experiments: expected a mapping of experiment names to experiments")
    top = raw.get("slurm", {})
    if not isinstance(top, Mapping):
        raise ConfigError(f"slurm: expected a mapping, got {top!r}")
    build(SlurmConfig, top, "slurm")  # its errors name the top-level block
    merged = {}
    for name, exp in exps.items():
        check(
            isinstance(name, str) and NAME.match(name) is not None,
            f"experiments.{name}",
            "a name of letters, digits, '_', '-', '.'",
            name,
        )
        if not isinstance(exp, Mapping):
            raise ConfigError(f"experiments.{name}: expected a mapping, got {exp!r}")
        own = exp.get("slurm", {})
        if not isinstance(own, Mapping):
            raise ConfigError(f"experiments.{name}.slurm: expected a mapping, got {own!r}")
        merged[name] = {**exp, "slurm": {**top, **own}}
    raw["experiments"] = merged
    return build(Sweep, raw)  # resolves every experiment (Sweep.plans)


def plan(sweep: Sweep, name: str) -> Plan:
    """Experiment ``name`` of ``sweep``, resolved (when the sweep was loaded); an unknown name
    (``--experiment``) is a one-line :class:`ConfigError` listing the experiments."""
    if name not in sweep.plans:
        raise ConfigError(
            f"experiment {name!r}: not in the sweep file; expected one of "
            f"{sorted(sweep.experiments)}"
        )
    return sweep.plans[name]


def _resolve(name: str, exp: Experiment) -> Plan:
    """Experiment ``name``: its variants and tuning points, every config checked."""
    where = f"experiments.{name}"
    check(exp.seeds >= 1, f"{where}.seeds", "an integer >= 1", exp.seeds)
    check(
        exp.objective in OBJECTIVES,
        f"{where}.objective",
        f"one of {list(OBJECTIVES)}",
        exp.objective,
    )
    check(
        exp.rank == "final" or bool(exp.targets),
        f"{where}.rank",
        "'final' unless targets are declared (first_target ranks by the lowest)",
        exp.rank,
    )
    check(
        exp.rank == "final" or exp.pruner.type == "none",
        f"{where}.rank",
        "'final' with a pruner (it compares the objective's values, not steps)",
        exp.rank,
    )
    for i, t in enumerate(exp.targets):
        check(math.isfinite(t) and t > 0, f"{where}.targets[{i}]", "a loss > 0", t)
    check(
        len(set(exp.targets)) == len(exp.targets),
        f"{where}.targets",
        "distinct values",
        list(exp.targets),
    )
    workload = _workload(exp)
    try:
        base = RunConfig.from_dict(workload)
    except ConfigError as e:
        raise ConfigError(f"{where}.workload.{e}") from None
    _check_slurm(exp.slurm, base, f"{where}.slurm")
    variants = _variants(exp.variants, f"{where}.variants")
    _check_paths(exp, variants, where)
    points = _points(exp, f"{where}")
    probes = points if points is not None else _corners(exp.tune)
    runs: dict[str, dict[str, Any]] = {}  # variant -> what decides its runs
    for variant, toggles in variants.items():
        grid = exp.variants.named is None
        section = "variants.grid" if grid else f"variants.named.{variant.split(',')[0]}"
        config = with_overrides(base, toggles, f"{where}.{section}", variant)
        key = f"{where}.{section}" + (f" ({variant})" if grid else "")
        _check_distinct(variant, resolve(config).identity(), runs, key)
        for point in probes[:64]:  # on the variant's config: tuned paths never overlap toggles
            with_overrides(config, point, f"{where}.tune", variant)
    return Plan(name, exp, variants, points, base)


#: Run-config paths the sweep sets for every trial itself: a variant or tuned value there would
#: be overwritten (:meth:`Plan.config`).
SET_BY_SWEEP = ("seed",)


def _check_paths(exp: Experiment, variants: dict[str, dict[str, Any]], where: str) -> None:
    """Every variant and ``tune`` path names a value of the run config, set in one place only.

    A path that a variant sets and ``tune`` varies (or that one variant sets twice, as
    ``optimizer.overrides`` and ``optimizer.overrides.prenorm``) would leave which value wins to
    the order of application, unseen in the file; checked on the paths as written, so the error
    names the one in the file rather than the rebuilt config's notation.
    """
    tune = f"{where}.tune"
    sections = [(tune, list(exp.tune))]
    grid = list(exp.variants.grid or {})
    named = exp.variants.named or {}
    if exp.variants.grid is not None:
        sections.append((f"{where}.variants.grid", grid))
    sections += [(f"{where}.variants.named.{n}", list(t)) for n, t in named.items()]
    for n, toggles in named.items():  # crossed with the grid: no path in both
        for path in toggles:
            for g in grid:
                if _overlap(path, g):
                    raise ConfigError(
                        f"{where}.variants.named.{n}.{path}: also set by "
                        f"{where}.variants.grid.{g}; set it in one place"
                    )
    for section, paths in sections:
        for i, path in enumerate(paths):
            key = f"{section}.{path}"
            check_key(RunConfig, path, section)
            if any(_overlap(path, owned) for owned in SET_BY_SWEEP):
                raise ConfigError(
                    f"{key}: expected a path the sweep does not set, got {path!r} (each trial's "
                    "seed comes from 'seeds')"
                )
            for other in paths[:i]:
                if _overlap(path, other):
                    raise ConfigError(f"{key}: also set by {section}.{other}; set it in one place")
            for tuned in exp.tune if section != tune else ():
                if _overlap(path, tuned):
                    raise ConfigError(f"{key}: also tuned by {tune}.{tuned}; set it in one place")


def _overlap(a: str, b: str) -> bool:
    """Whether dotted paths ``a`` and ``b`` set the same value, one inside the other or equal
    (``phases`` and ``phases.0.lr``; ``phases.00`` is ``phases.0``)."""
    pa, pb = ([str(int(p)) if p.isdigit() else p for p in x.split(".")] for x in (a, b))
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]


def _check_distinct(
    variant: str, run: dict[str, Any], runs: dict[str, dict[str, Any]], key: str
) -> None:
    """Add ``variant``'s ``run`` (:meth:`~ablations.run.resolved.Resolved.identity`) to ``runs``,
    unless another variant has it:
    two such variants would compare a run with itself, their difference being seed noise."""
    same = next((other for other, seen in runs.items() if seen == run), None)
    if same is not None:
        raise ConfigError(
            f"{key}: expected settings that differ from variant {same!r}, got the same run "
            "config once defaults and the preset's knobs are applied"
        )
    runs[variant] = run


def _workload(exp: Experiment) -> dict[str, Any]:
    raw = copy.deepcopy(dict(exp.workload))
    if exp.preset is not None:
        raw.setdefault("optimizer", {})
        if not isinstance(raw["optimizer"], Mapping):
            return raw  # RunConfig reports it
        raw["optimizer"] = {**raw["optimizer"], "preset": exp.preset}
    return raw


def _check_storage(storage: str) -> None:
    if storage == "journal":
        return
    scheme = storage.split(":", 1)[0].split("+", 1)[0]
    check(
        scheme in ("postgresql", "mysql"),
        "storage",
        "'journal' or a postgresql:// or mysql:// URL (SQLite is unsafe with parallel workers)",
        storage,
    )


def _check_slurm(slurm: SlurmConfig, base: RunConfig, where: str) -> None:
    check(
        slurm.tasks_per_node == base.devices,
        f"{where}.tasks_per_node",
        f"the workload's devices={base.devices} (one task per device)",
        slurm.tasks_per_node,
    )
    check(
        slurm.nodes == base.num_nodes,
        f"{where}.nodes",
        f"the workload's num_nodes={base.num_nodes}",
        slurm.nodes,
    )


def _variants(spec: Variants, where: str) -> dict[str, dict[str, Any]]:
    if spec.grid is None and spec.named is None:
        raise ConfigError(f"{where}: expected 'grid', 'named' or both")
    named = _named(spec.named, where) if spec.named is not None else None
    points = _grid(spec.grid, where) if spec.grid is not None else None
    if named is None:
        return points
    if points is None:
        return named
    return {
        f"{n},{g}": {**toggles, **point}
        for n, toggles in named.items()
        for g, point in points.items()
    }


def _named(spec: Mapping[str, Mapping[str, Any]], where: str) -> dict[str, dict[str, Any]]:
    check(len(spec) >= 1, f"{where}.named", "at least one variant", dict(spec))
    out = {}
    for name, toggles in spec.items():
        check(
            NAME.match(name) is not None,
            f"{where}.named.{name}",
            "a name of letters, digits, '_', '-', '.'",
            name,
        )
        if not isinstance(toggles, Mapping):
            raise ConfigError(
                f"{where}.named.{name}: expected a mapping of config paths "
                f"to values, got {toggles!r}"
            )
        out[name] = dict(toggles)
    return out


def _grid(spec: Mapping[str, tuple[Any, ...]], where: str) -> dict[str, dict[str, Any]]:
    grid = dict(spec)
    check(len(grid) >= 1, f"{where}.grid", "at least one toggle", grid)
    for path, values in grid.items():
        check(
            len(values) >= 1 and len(set(map(repr, values))) == len(values),
            f"{where}.grid.{path}",
            "a non-empty list of distinct values",
            list(values),
        )
    short = [p.rsplit(".", 1)[-1] for p in grid]
    labels = [s if short.count(s) == 1 else p for s, p in zip(short, grid, strict=True)]
    out = {}
    for combo in itertools.product(*grid.values()):
        name = ",".join(f"{lab}={_fmt(v)}" for lab, v in zip(labels, combo, strict=True))
        out[name] = dict(zip(grid, combo, strict=True))
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "-".join(_fmt(v) for v in value)
    return str(value)


def _points(exp: Experiment, where: str) -> list[dict[str, Any]] | None:
    """The tuning points shared by every variant (``[{}]`` without tuning; None for tpe)."""
    search, tune = exp.search, dict(exp.tune)
    if not tune:
        check(
            search.budget == 1,
            f"{where}.search.budget",
            "1 when nothing is tuned (add a 'tune' range)",
            search.budget,
        )
        return [{}]
    for path, r in tune.items():
        key = f"{where}.tune.{path}"
        if search.method == "grid":
            check(
                r.values is not None and len(r.values) >= 1 and r.low is None and r.high is None,
                key,
                "'values: [...]' for search.method=grid",
                plain(r),
            )
            continue
        check(
            r.values is None and r.low is not None and r.high is not None,
            key,
            f"'low' and 'high' for search.method={search.method}",
            plain(r),
        )
        check(r.low < r.high, f"{key}.high", f"a number > low={r.low}", r.high)
        if r.log:
            check(r.low > 0, f"{key}.low", "a number > 0 with log: true", r.low)
    if search.method == "grid":
        combos = list(itertools.product(*(r.values for r in tune.values())))
        check(
            search.budget in (1, len(combos)),
            f"{where}.search.budget",
            f"the grid's size {len(combos)} (or leave it out)",
            search.budget,
        )
        return [dict(zip(tune, c, strict=True)) for c in combos]
    if search.method == "tpe":
        return None
    unit = _unit_points(search.method, len(tune), search.budget, search.seed)
    return [
        {path: _scale(u, r) for (path, r), u in zip(tune.items(), row, strict=True)} for row in unit
    ]


def _unit_points(method: str, dims: int, n: int, seed: int) -> list[list[float]]:
    if method == "qmc":
        from scipy.stats import qmc

        return qmc.Halton(d=dims, scramble=True, seed=seed).random(n).tolist()
    import numpy as np

    return np.random.default_rng(seed).random((n, dims)).tolist()


def _scale(u: float, r: Range) -> float:
    assert r.low is not None and r.high is not None
    if r.log:
        value = math.exp(math.log(r.low) + u * (math.log(r.high) - math.log(r.low)))
    else:
        value = r.low + u * (r.high - r.low)
    return float(f"{value:.6g}")  # readable in names and configs; far below any effect


def _corners(tune: Mapping[str, Range]) -> list[dict[str, Any]]:
    """For tpe: the range ends, so bad paths and values fail at validation."""
    return [{p: r.low for p, r in tune.items()}, {p: r.high for p, r in tune.items()}]
