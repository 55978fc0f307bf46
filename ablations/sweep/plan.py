"""An experiment, resolved (:class:`Plan`): its variants expanded, its tuning points drawn, every
run config they make built and checked.

Besides each value (:mod:`ablations.sweep.experiment`), it refuses what would run but not compare
what the file says: a variant path that ``tune`` also varies (or that one variant sets twice), a
``seed`` as variant or tuned value (the sweep sets it), and two variants that are the same run.
Every error is one line naming the key path (``experiments.fig2.tune.phases.0.lr.low``) and what
is allowed. The sweep resolves each experiment once, while it is loaded
(:attr:`ablations.sweep.spec.Sweep.plans`).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import qmc

from ablations.config import ConfigError, RunConfig, check, check_key, plain, with_overrides
from ablations.run.resolved import resolve
from ablations.sweep.experiment import (
    NAME,
    OBJECTIVES,
    Experiment,
    Range,
    SlurmConfig,
    Variants,
)


@dataclass(frozen=True)
class Plan:
    """An experiment, resolved: its variants' toggles and its tuning points."""

    name: str
    experiment: Experiment
    variants: dict[str, dict[str, Any]]  # variant name -> {path: value}
    points: list[dict[str, Any]] | None  # shared tuning points; None: tpe samples them
    base: RunConfig  # the workload, defaults filled in: what variants and points override
    #: The variants ``extend`` may add (:mod:`ablations.sweep.extend`): every value up to
    #: ``max_steps`` beyond each end of its axis, known in advance so that a study's parameters
    #: keep one set of choices (Optuna's RDB storages refuse a categorical that grows).
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def tuned(self) -> bool:
        return bool(self.experiment.tune)

    @property
    def all_variants(self) -> dict[str, dict[str, Any]]:
        """The file's variants, then the candidates ``extend`` may add."""
        return {**self.variants, **self.candidates}

    def config(self, variant: str, params: Mapping[str, Any], seed: int) -> RunConfig:
        """The run config of one trial: the workload with the variant's toggles, ``params``
        and ``seed`` set."""
        toggles = self.all_variants[variant]
        return with_overrides(self.base, {**toggles, **params, "seed": seed})

    def toggles(self, variant: str) -> dict[str, Any]:
        """Every toggle path of the experiment (the union over its variants) with the value
        ``variant`` runs: its own, or what its config resolves to (an optimizer knob left to the
        preset: the preset's, ``Preset.resolved``). What the study stores per trial."""
        paths = dict.fromkeys(p for toggles in self.variants.values() for p in toggles)
        own = self.all_variants[variant]
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
        out = {
            "name": self.name,
            "experiment": plain(self.experiment),
            "variants": self.variants,
            "points": self.points,
        }
        if self.candidates:  # only with extend: older sweep.json files stay equal
            out["candidates"] = self.candidates
        return out


def resolve_experiment(name: str, exp: Experiment) -> Plan:
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
    candidates = _candidates(exp, variants, f"{where}.extend")
    for variant, toggles in candidates.items():  # the values extend may add build too
        with_overrides(base, toggles, f"{where}.extend", variant)
    return Plan(name, exp, variants, points, base, candidates)


def _candidates(
    exp: Experiment, variants: dict[str, dict[str, Any]], where: str
) -> dict[str, dict[str, Any]]:
    """The variants ``extend`` may add: the grid with its axis continued ``max_steps`` values
    beyond each end (× or ÷ ``factor``; 6 significant digits, as tuning points), minus the
    file's own variants."""
    ext = exp.extend
    if ext is None:
        return {}
    grid = dict(exp.variants.grid or {})
    check(
        not exp.tune,
        f"{where}",
        "an experiment without 'tune' (extend continues a grid axis)",
        dict(exp.tune),
    )
    check(ext.axis in grid, f"{where}.axis", f"a path of variants.grid {sorted(grid)}", ext.axis)
    values = grid[ext.axis]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in values)
    check(numeric, f"{where}.axis", "a grid path whose values are numbers > 0", list(values))
    if ext.against is not None:
        named = sorted(exp.variants.named or {})
        check(ext.against in named, f"{where}.against", f"a named variant of {named}", ext.against)
        check(
            ext.max_seeds is not None and ext.max_seeds > exp.seeds,
            f"{where}.max_seeds",
            f"an integer > seeds={exp.seeds}",
            ext.max_seeds,
        )
    lo, hi = min(values), max(values)
    beyond = [float(f"{hi * ext.factor**k:.6g}") for k in range(1, ext.max_steps + 1)]
    beyond += [float(f"{lo / ext.factor**k:.6g}") for k in range(1, ext.max_steps + 1)]
    grid[ext.axis] = (*values, *beyond)
    every = _variants(Variants(grid=grid, named=exp.variants.named), "")
    return {name: toggles for name, toggles in every.items() if name not in variants}


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
        return qmc.Halton(d=dims, scramble=True, seed=seed).random(n).tolist()
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
