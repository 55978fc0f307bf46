"""The run's Lightning loggers (``log.loggers``): checked at the start, built per phase, ended.

The JSONL curves (:mod:`ablations.run.curves`) are the source of truth; the loggers get copies
of their numbers (``PretrainingModule._to_loggers``) for the usual dashboards: ``csv``,
``tensorboard``, ``wandb`` (offline) and ``mlflow``, all writing under ``<run_dir>/logs/``.

- :func:`check_loggers`: a logger whose package is missing is a one-line config error at a run's
  (or a sweep's) start, not a traceback from inside Lightning once training has begun.
- :func:`lightning_loggers`: the loggers of one phase and attempt, given the run's settings
  (:func:`tracker_settings`) as hyperparameters: W&B config, MLflow params, TensorBoard HParams,
  CSV ``hparams.yaml``.
- :func:`end_tracker_runs`: ends the W&B run of a training run.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger

from ablations.config import ConfigError, RunConfig
from ablations.core.fileio import flocked, read_json
from ablations.run.resolved import resolve

#: The module each of ``log.loggers`` needs, and what installs it.
_LOGGER_MODULES = {
    "tensorboard": ("tensorboard", "the harness's dependencies"),
    "wandb": ("wandb", "the `trackers` extra (make setup; pip install -e '.[trackers]')"),
    "mlflow": ("mlflow", "the `trackers` extra (make setup; pip install -e '.[trackers]')"),
}

_PROJECT = "ablations"  # W&B's project and MLflow's experiment


def check_loggers(config: RunConfig) -> None:
    """Raise a one-line :class:`ConfigError` naming ``log.loggers`` when a logger's package is
    not importable: at a run's start (and a sweep's, before any trial), not as a traceback from
    inside Lightning once training has begun."""
    for name in config.log.loggers:
        module, source = _LOGGER_MODULES.get(name, (None, ""))
        if module is None:
            continue
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(
                f"log.loggers: {name!r} needs the {module!r} package, which is not installed; "
                f"it comes with {source}"
            ) from None


#: Sweep keys of a trial (``trial.json``) that go to the trackers as they are.
_TRIAL_KEYS = ("experiment", "trial", "variant", "stage", "seed")


def tracker_settings(
    config: RunConfig, run_dir: Path, trial: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a tracker should know of a run, flat (dotted keys, scalar values), so that runs can
    be filtered and grouped by any of it: the resolved config (:func:`resolve`: every config
    key, the preset, where λ came from and, per param group, its λ, lr scale and every knob as
    the optimizer reads it, e.g. ``optimizer.no_decay.bias_correction``); in a sweep, the
    trial's experiment, trial, variant, stage and seed and each of its toggles as
    ``toggle.<path>`` (``trial.json``). Lists of numbers become one string (``[0.9, 0.999]``).
    Nothing from the environment or the sweep file (a storage URL) is in a run's config, so
    nothing that can hold a credential reaches a tracker from here."""
    resolved = resolve(config).to_dict()
    out = _flat(resolved["config"])
    opt = resolved["optimizer"]
    out.update(
        {
            "optimizer.preset": opt["preset"],
            "optimizer.factory": opt["factory"],
            "optimizer.weight_decay_from": opt["weight_decay_from"],
        }
    )
    for group in opt["groups"]:
        extra = {k: v for k, v in group.items() if k not in ("name", "knobs", "tensors")}
        out.update(_flat({**extra, **(group.get("knobs") or {})}, f"optimizer.{group['name']}."))
    trial = _trial(run_dir) if trial is None else trial
    out.update({k: trial[k] for k in _TRIAL_KEYS if k in trial})
    out.update(_flat(trial.get("toggles") or {}, "toggle."))
    return out


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists of dicts as dotted keys; scalars as they are, other lists as text."""
    if isinstance(data, dict):
        return {
            k: v for key, value in data.items() for k, v in _flat(value, f"{prefix}{key}.").items()
        }
    if isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        return {k: v for i, x in enumerate(data) for k, v in _flat(x, f"{prefix}{i}.").items()}
    key = prefix.rstrip(".")
    if isinstance(data, list | tuple):
        return {key: str(list(data))}
    return {key: data}


def lightning_loggers(config: RunConfig, run_dir: Path, phase_index: int) -> list[Any]:
    """Lightning's own loggers for ``log.loggers``, writing under ``<run_dir>/logs/``.

    Each phase and each attempt (a resume) writes a folder of its own (``csv/phase1``,
    ``csv/phase1.1``, ...), so that a logger never truncates what an earlier attempt wrote (the
    CSV logger rewrites its file); TensorBoard reads the folders together. W&B runs offline
    (``logs/wandb/offline-run-*``, one W&B run per training run, ``wandb sync`` uploads it)
    unless ``WANDB_MODE`` or ``WANDB_API_KEY`` is set (then as W&B's own settings say), grouped
    by the sweep's experiment;
    MLflow writes one MLflow run per phase, tagged with the trial's experiment, variant and stage,
    into one store per sweep (:func:`_mlflow_store`). Both are named
    ``<experiment>/<trial>`` in a sweep (the run directory's last two parts).
    """
    out: list[Any] = []
    trial = _trial(run_dir)  # read once: the W&B group, MLflow store and tags, the settings
    root = run_dir / "logs"
    title = "/".join(run_dir.resolve().parts[-2:])
    for name in config.log.loggers:
        version = _version(root / name, f"phase{phase_index + 1}")
        if name == "csv":
            out.append(CSVLogger(root, name="csv", version=version))
        elif name == "tensorboard":  # its HParams come with the phase's final metrics
            logger = TensorBoardLogger(
                root, name="tensorboard", version=version, default_hp_metric=False
            )
            out.append(logger)
        elif name == "wandb":
            # offline unless the user configured W&B through its own variables (then its mode);
            # a sweep's runs are grouped by experiment
            configured = any(v in os.environ for v in ("WANDB_MODE", "WANDB_API_KEY"))
            group = trial.get("experiment")
            out.append(
                WandbLogger(
                    name=title,
                    save_dir=str(root),
                    offline=not configured,
                    project=os.environ.get("WANDB_PROJECT", _PROJECT),
                    group=group,
                )
            )
        elif name == "mlflow":
            uri, experiment = _mlflow_store(run_dir, trial)
            run_name = f"{title} phase{phase_index + 1}"
            tags = {k: str(trial[k]) for k in ("experiment", "variant", "stage") if k in trial}
            out.append(
                MLFlowLogger(experiment, run_name=run_name, tracking_uri=uri, tags=tags or None)
            )
    if out:
        settings = tracker_settings(config, run_dir, trial)
        for logger in out:  # W&B config, MLflow params, CSV hparams.yaml
            if not isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(settings)
    return out


#: The final metrics TensorBoard's HParams view shows beside the settings (from the last
#: validation of a phase).
_FINAL = ("val/mlm_loss", "val/loss", "val/mlm_acc")


def log_final(loggers: list[Any], config: RunConfig, run_dir: Path, last_val: Any) -> None:
    """At the end of a phase: TensorBoard's HParams (toggles as hparams, the final validation
    metrics as its metrics, ``final/<metric>``), so its table compares runs by toggle."""
    metrics = {f"final/{k}": float(last_val[k]) for k in _FINAL if last_val and k in last_val}
    boards = [logger for logger in loggers if isinstance(logger, TensorBoardLogger)]
    if boards:
        settings = tracker_settings(config, run_dir)
        for logger in boards:
            logger.log_hyperparams(settings, metrics=metrics)


def _mlflow_store(run_dir: Path, trial: dict[str, Any]) -> tuple[str, str]:
    """MLflow's tracking URI and experiment for a run: the user's ``MLFLOW_TRACKING_URI`` if set,
    else one SQLite store for the whole sweep, ``<results>/mlflow.db`` (a run outside a sweep:
    its own ``logs/mlflow.db``; MLflow 3 refuses new file stores, hence SQLite); in a sweep the
    MLflow experiment is the sweep's experiment, else ``ablations``. The store and the
    experiment are created under a lock, so parallel workers never race to create either."""
    from mlflow import MlflowClient  # noqa: PLC0415 (optional: the trackers extra)

    experiment = trial.get("experiment", _PROJECT)
    folder = run_dir.resolve().parent.parent if "experiment" in trial else run_dir / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{folder / 'mlflow.db'}"
    with flocked(folder / ".mlflow.lock"):
        client = MlflowClient(uri)
        if client.get_experiment_by_name(experiment) is None:
            client.create_experiment(experiment)
    return uri, experiment


def end_tracker_runs(config: RunConfig, failed: bool) -> None:
    """W&B keeps one run per process (Lightning's ``WandbLogger`` reuses an active one, so the
    phases of a run share it): end it with the run, so that a sweep worker's next trial gets a
    run of its own. MLflow's logger ends its run itself."""
    if "wandb" in config.log.loggers:
        # Imported here: wandb is optional (the `trackers` extra), and a run that names it has
        # passed check_loggers, so only such a run needs it installed.
        import wandb  # noqa: PLC0415 (optional: the trackers extra)

        wandb.finish(exit_code=1 if failed else 0)


def _version(folder: Path, base: str) -> str:
    """``base``, or ``base.1``, ``base.2``, ... : the first that ``folder`` does not hold."""
    n, version = 0, base
    while (folder / version).exists():
        n += 1
        version = f"{base}.{n}"
    return version


def _trial(run_dir: Path) -> dict[str, Any]:
    """The sweep trial a run directory belongs to (``trial.json``); empty for a lone run."""
    return read_json(run_dir / "trial.json") or {}
