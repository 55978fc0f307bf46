"""A frozen dataclass built strictly from plain data, and plain data set by dotted path.

Generic (nothing here knows runs or sweeps): :func:`build` turns YAML/JSON data into a frozen
dataclass, rejecting unknown keys, missing required keys and wrong types with a one-line
:class:`~ablations.core.errors.ConfigError` naming the key path (``phases[1].seq_len``);
:func:`set_path` sets a dotted path (``phases.0.lr``) of plain data; :func:`check_key` checks that
a dotted path can name a value of a dataclass before any data exists. The run config
(:mod:`ablations.config.run`) and the sweep file (:mod:`ablations.sweep.spec`) are built here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from ablations.core.errors import ConfigError


def check(ok: bool, key: str, expected: str, got: Any) -> None:
    """Raise the one-line :class:`ConfigError` of a bad value unless ``ok``: one helper for the
    run config and the sweep file, so that every message reads ``key: expected X, got Y``."""
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {got!r}")


def build(cls: type, raw: Any, path: str = "") -> Any:
    """A frozen dataclass ``cls`` from plain data, strictly (as :meth:`RunConfig.from_dict`):
    unknown keys, missing required keys (fields without a default) and wrong types are a
    one-line :class:`ConfigError` naming the key path under ``path``."""
    return _build(cls, raw, path)


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
        parent = ".".join(path)
        raise ConfigError(f"{parent}.{last}: unknown key; {parent} is not a mapping or list")


def _child(node: Any, part: str, where: str) -> Any:
    key = f"{where}.{part}" if where else part
    if isinstance(node, list):
        return node[_index(node, part, where)]
    if isinstance(node, dict):
        if part not in node:
            raise ConfigError(f"{key}: unknown key; expected one of {sorted(node)}")
        return node[part]
    raise ConfigError(f"{key}: unknown key; {where} is not a mapping or list")


def _index(node: list, part: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"{where}.{part}: expected an index below {len(node)}")
    return int(part)


def plain(obj: Any) -> Any:
    """Plain data (dicts, lists, scalars) of a config dataclass."""
    return _plain(obj)


def _build(cls: type, raw: Any, path: str) -> Any:
    where = path or "config"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # not derived ones
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(f"{key}: unknown key; expected one of {sorted(fields)}")
    missing = [name for name, f in fields.items() if name not in raw and _required(f)]
    if missing:  # before construction: the dataclass would raise a multi-line TypeError
        key = f"{path}.{missing[0]}" if path else missing[0]
        raise ConfigError(f"{key}: required key missing")
    kwargs = {}
    for name, value in raw.items():
        key = f"{path}.{name}" if path else name
        kwargs[name] = _coerce(hints[name], value, key)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        msg = str(e)
        if path and not msg.startswith(path):
            msg = f"{path}.{msg}"
        raise ConfigError(msg) from None


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def check_key(cls: type, key: str, where: str = "") -> None:
    """Raise :class:`ConfigError` unless the dotted ``key`` (``phases.0.lr``) can name a value of
    the dataclass ``cls``, by its field types alone.

    For keys checked before any config exists (the sweep's variant and ``tune`` paths): the
    error names the key as written, under ``where`` (``experiments.e.tune.phases.0.lrr``),
    where a misspelt last key would otherwise only show when the whole config is rebuilt, in
    that config's own notation (``phases[0].lrr``). List indices are checked to be numbers
    only (their bound needs the data: :func:`with_overrides`); a free mapping
    (``optimizer.overrides``) takes any key, its values being checked by its dataclass.
    """
    tp: Any = cls
    parts = key.split(".")
    for i, part in enumerate(parts):
        here = ".".join([where, *parts[: i + 1]] if where else parts[: i + 1])
        if not part:
            raise ConfigError(f"{here}: expected a dotted path of keys, got {key!r}")
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (types.UnionType, typing.Union):  # Optional[X]: as X
            tp = next(a for a in args if a is not type(None))
            origin, args = typing.get_origin(tp), typing.get_args(tp)
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            names = sorted(f.name for f in dataclasses.fields(tp))
            if part not in names:
                raise ConfigError(f"{here}: unknown key; expected one of {names}")
            tp = hints[part]
        elif origin is tuple and args and args[-1] is Ellipsis:
            if not part.isdigit():
                raise ConfigError(f"{here}: expected a list index, got {part!r}")
            tp = args[0]
        elif isinstance(origin, type) and issubclass(origin, Mapping):
            tp = args[1] if len(args) == 2 else Any
        elif tp is Any:
            return
        else:
            parent = ".".join(parts[:i])
            raise ConfigError(f"{here}: unknown key; {parent} is not a mapping or list")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is tuple and args and args[-1] is Ellipsis:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is not None and issubclass(origin, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        if len(args) == 2 and args[1] is not Any:  # typed values: checked like fields
            return {str(k): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp in (int, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
        return value
    return value


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, tuple | list):
        return [_plain(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    return obj
