"""The sweep file (``sweep.yaml``): its top level, loaded and validated strictly before anything
runs.

The file names experiments (:mod:`ablations.sweep.experiment`: variants of a workload, an equal
tuning budget each, seeds) and says where they write, which storage their studies use, how local
workers run and how lost trials are retried. :func:`load_sweep` reads it, builds every block and
resolves every experiment (:mod:`ablations.sweep.plan`); every error is one line naming the key
path (``experiments.fig2.tune.phases.0.lr.low``) and what is allowed, raised before any file is
created or job submitted. A key given twice is refused by the YAML loader.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablations.config import ConfigError, build, check
from ablations.core.yamlio import load_yaml
from ablations.sweep.experiment import NAME, Experiment, SlurmConfig
from ablations.sweep.plan import Plan, resolve_experiment


@dataclass(frozen=True)
class LocalConfig:
    """Workers as local processes, where ``sbatch`` does not exist."""

    #: Worker processes started on this machine, each running one trial at a time of the
    #: experiments being run; one that dies while work is left is restarted.
    workers: int = 2
    #: CPU threads of each worker (``torch.set_num_threads`` and ``OMP_NUM_THREADS``); workers
    #: x threads should not exceed the cores.
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

    #: Retries of a lost trial (Optuna's ``max_retry``); a trial lost more often is given up
    #: and reported as lost (``make sweep SWEEP_FLAGS=--retry-lost`` grants another round).
    max_retry: int = 3
    #: Seconds between a worker's renewals of its trial's lease (Optuna's heartbeat interval).
    heartbeat_seconds: int = 10
    #: Seconds without a renewal after which a trial counts as lost (Optuna's grace period);
    #: also how long a worker waits for a reaped holder of the run directory to stop.
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
class Sweep:
    """The whole sweep file."""

    #: The experiments, by name (letters, digits, ``_``, ``-``, ``.``): each is run in
    #: ``<results>/<name>/``. ``make sweep`` runs those with ``default: true``;
    #: ``EXPERIMENT=name`` picks one.
    experiments: Mapping[str, Experiment]
    #: Experiments write to ``<results>/<experiment>/`` (a shared filesystem on a cluster).
    results: str = "results"
    #: ``journal`` (Optuna's journal file in the experiment's directory, no server) or a
    #: PostgreSQL/MySQL URL (Optuna's RDB storage, with heartbeats).
    storage: str = "journal"
    #: The workers where there is no SLURM (no ``sbatch``): processes on this machine.
    local: LocalConfig = field(default_factory=LocalConfig)
    #: How lost trials (a worker killed or preempted) are detected and retried.
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
        plans = {name: resolve_experiment(name, exp) for name, exp in self.experiments.items()}
        object.__setattr__(self, "plans", types.MappingProxyType(plans))
        _check_storage(self.storage)


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
