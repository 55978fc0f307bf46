"""YAML in, dotted-path overrides: shared by the run CLI and the sweep file.

``load_yaml`` reads YAML 1.2 numbers (``1e-3`` is a float; PyYAML's YAML 1.1 resolver makes it
a string). ``set_path`` writes ``value`` at a dotted path (``phases.0.lr``) of a plain config
dict, list items by index, with a one-line :class:`~ablations.config.ConfigError` naming the
path when it does not exist.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError


class Loader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 floats."""


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[0-9][0-9_]*[eE][-+]?[0-9]+|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def load_yaml(path: Path, what: str) -> Any:
    """The YAML document in ``path``; ``what`` names the file in errors (``--config``)."""
    try:
        return yaml.load(Path(path).read_text(), Loader=Loader)
    except OSError as e:
        raise ConfigError(f"{what}: cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what}: {path} is not valid YAML: {one_line(e)}") from None


def parse_value(key: str, text: str) -> Any:
    """A command-line override's value, parsed as YAML."""
    try:
        return yaml.load(text, Loader=Loader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{key}: bad value {text!r}: {one_line(e)}") from None


def set_path(raw: dict[str, Any], key: str, value: Any, where: str = "") -> None:
    """Set ``raw[key]`` for a dotted ``key``; an unknown last key is left to the config check.

    ``where`` prefixes the key path in errors (e.g. ``experiments.fig2.variants``).
    """
    *parents, last = key.split(".")
    node: Any = raw
    path: list[str] = [where] if where else []
    for part in parents:
        node = _child(node, part, ".".join(path))
        path.append(part)
    if isinstance(node, list):
        node[_index(node, last, ".".join(path))] = value
    elif isinstance(node, dict):
        node[last] = value  # an unknown key is reported by RunConfig.from_dict
    else:
        raise ConfigError(f"{key}: {'.'.join(path)} is not a mapping or list")


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
