"""Command line: ``python -m ablations train --config run.yaml --run-dir DIR [key=value ...]``.

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
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError, RunConfig


class _Loader(yaml.SafeLoader):
    """YAML 1.2 numbers: ``1e-3`` is a float (PyYAML's YAML 1.1 resolver makes it a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[0-9][0-9_]*[eE][-+]?[0-9]+|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_config(path: Path | None, overrides: Sequence[str]) -> RunConfig:
    """The config of ``path`` (defaults if None) with ``key=value`` overrides applied.

    Raises:
        ConfigError: unreadable file, bad YAML, malformed override, unknown key or bad value.
    """
    raw: Any = {}
    if path is not None:
        try:
            raw = yaml.load(Path(path).read_text(), Loader=_Loader) or {}
        except OSError as e:
            raise ConfigError(f"--config: cannot read {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"--config: {path} is not valid YAML: {_one_line(e)}") from None
    base = RunConfig.from_dict(raw).to_dict()  # defaults filled in, so any key can be overridden
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item!r}: expected key=value")
        try:
            value = yaml.load(text, Loader=_Loader)
        except yaml.YAMLError as e:
            raise ConfigError(f"{key}: bad value {text!r}: {_one_line(e)}") from None
        _set(base, key, value)
    return RunConfig.from_dict(base)


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node: Any = raw
    where: list[str] = []
    for part in parents:
        node = _child(node, part, ".".join(where))
        where.append(part)
    if isinstance(node, list):
        node[_index(node, last, ".".join(where))] = value
    elif isinstance(node, dict):
        node[last] = value  # an unknown key is reported by RunConfig.from_dict
    else:
        raise ConfigError(f"{key}: {'.'.join(where)} is not a mapping or list")


def _child(node: Any, part: str, where: str) -> Any:
    key = f"{where}.{part}" if where else part
    if isinstance(node, list):
        return node[_index(node, part, where)]
    if isinstance(node, dict):
        if part not in node:
            raise ConfigError(f"{key}: unknown key; expected one of {sorted(node)}")
        return node[part]
    raise ConfigError(f"{key}: {where} is not a mapping or list")


def _index(node: list, part: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"{where}.{part}: expected an index below {len(node)}")
    return int(part)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


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
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config, args.overrides)
        factory = _import(args.datamodule) if args.datamodule else None
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    # the heavy imports (Lightning, transformers), once the arguments are known to be good
    from .data import DataError
    from .train import RunDirError, train

    try:
        result = train(config, args.run_dir, factory)
    except (RunDirError, DataError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
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
        raise ConfigError(f"--datamodule: cannot import {spec!r}: {_one_line(e)}") from None


def _is_rank_zero() -> bool:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


if __name__ == "__main__":
    sys.exit(main())
