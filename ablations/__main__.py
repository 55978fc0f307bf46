"""Command line: ``python -m ablations train --config run.yaml --run-dir DIR [key=value ...]``.

The other commands: ``sweep`` and its siblings (:mod:`ablations.sweep.cli`), ``report``
(:mod:`ablations.analysis.report`), ``gpu-check`` (:mod:`ablations.bench.gpu_check`).

Overrides are dotted paths into the config (list items by index) with YAML values::

    python -m ablations train --config run.yaml --run-dir runs/a phases.0.lr=1e-3 \\
        optimizer.overrides.prenorm=none devices=2

A bad config, override or key exits with status 2 and a one-line message on stderr, before
anything is created. A finished run prints its ``status.json`` on stdout and exits 0 (diverged
included: a divergence is a result); a failure exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only

from ablations.analysis import report
from ablations.bench import gpu_check
from ablations.config import ConfigError, RunConfig, with_overrides
from ablations.core.errors import fail, one_line
from ablations.core.yamlio import load_yaml, parse_value
from ablations.data import DataError
from ablations.run.train import RunDirError, train
from ablations.sweep import cli as sweep_cli


def load_config(path: Path | None, overrides: Sequence[str]) -> RunConfig:
    """The config of ``path`` (defaults if None) with ``key=value`` overrides applied.

    Raises:
        ConfigError: unreadable file, bad YAML, malformed override, unknown key or bad value.
    """
    raw: Any = {}
    if path is not None:
        raw = load_yaml(path, "--config") or {}
    base = RunConfig.from_dict(raw)  # the file's own errors first, as it is read first
    values: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item!r}: expected key=value")
        # A repeated key moves to its last place: each key once, in that order, ends where
        # applying every item as typed would (``a.b=1 a={} a.b=2`` sets a.b after a).
        values.pop(key, None)
        values[key] = parse_value(key, text)
    return with_overrides(base, values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ablations")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one run (resumes if run-dir has a checkpoint)")
    p.add_argument("--config", type=Path, help="run config YAML (default: all defaults)")
    p.add_argument("--run-dir", type=Path, required=True, help="the run's directory")
    p.add_argument(
        "--datamodule",
        metavar="MODULE:FACTORY",
        help="data module factory f(data, phase, seed) instead of BertDataModule",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value")
    sweep_cli.add_commands(sub)
    report.add_command(sub)
    gpu_check.add_command(sub)
    args = parser.parse_args(argv)
    if args.command == "report":
        return report.run(args)
    if args.command == "gpu-check":
        return gpu_check.run(args)
    if args.command != "train":
        return sweep_cli.run(args)

    try:
        config = load_config(args.config, args.overrides)
        factory = _import(args.datamodule) if args.datamodule else None
    except ConfigError as e:
        return fail(e)

    try:
        result = train(config, args.run_dir, factory)
    except (ConfigError, RunDirError, DataError) as e:
        return fail(e)
    if _is_rank_zero():
        print(json.dumps(result, indent=1))
    return 0


def _import(spec: str) -> Any:
    module, sep, name = spec.partition(":")
    if not sep:
        raise ConfigError(f"--datamodule: expected MODULE:FACTORY, got {spec!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        why = one_line(e, typed=False)
        raise ConfigError(f"--datamodule: cannot import {spec!r}: {why}") from None


def _is_rank_zero() -> bool:
    return getattr(rank_zero_only, "rank", 0) == 0


def _piped_main() -> int:
    """``main``, quiet when stdout is a pipe its reader closed early (``sweep-status | head``),
    as Python's documentation recommends for SIGPIPE."""
    try:
        return main()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports it


if __name__ == "__main__":
    sys.exit(_piped_main())
