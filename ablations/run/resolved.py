"""What a run trains with: its config resolved once, and written into its run directory.

A run config says what to change: a preset, knob overrides, λ or null for the preset's. What the
run *trains with* is the resolution, computed here and nowhere else:

- every knob of each of NVIDIA's two parameter groups (``decay``: λ; ``no_decay``: biases and
  LayerNorm, λ = 0, :func:`lamb_variants.nvidia_param_groups`) after preset + overrides, exactly
  as :func:`lamb_variants.create` builds them (``Preset.resolved()`` then the overrides; a test
  compares them with the built optimizer's ``param_groups`` for every preset);
- λ per group (``optimizer.weight_decay``, or the preset's upstream λ when it is null; a
  ``factory`` gets NVIDIA's 0.01 unless it is set) and where it came from;
- when the model exists, the tensors of each group with their elements, and the data's identity
  (vocabulary size and the data module's own description of what it read).

Two configs are the same run when their :meth:`Resolved.identity` is equal: the config with every
default filled in, without display keys, and with the optimizer as its resolved groups instead of
preset + overrides. So ``preset: nvlamb`` and ``preset: nvlamb`` with ``overrides: {prenorm:
clip}`` (nvlamb's own value) are one run to the sweep's duplicate check, to reuse and to train's
resume check. Tensors and data follow from the config, so they are recorded, not compared.

``resolved.json`` is written when a run starts (:func:`write`); :func:`read` returns it, or, for
a run directory written before it existed, resolves its ``config.yaml`` once with today's presets
and says so (``Resolved.source == "config.yaml"``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml

import lamb_variants
from ablations.config import FACTORY_WEIGHT_DECAY, GROUP_NAMES, ConfigError, RunConfig, plain
from ablations.core.fileio import read_json, write_json
from ablations.run import writer
from ablations.run.model import BertPretraining

FILE = "resolved.json"
#: NVIDIA's two parameter groups, in :func:`lamb_variants.nvidia_param_groups`' order.
GROUPS = GROUP_NAMES
#: ``log`` keys that change what is shown, not the run: a run resumes under other values
#: (``progress_bar`` is their predecessor, still in the config.yaml of older run directories).
DISPLAY_KEYS = ("progress", "status_every_seconds", "progress_bar", "loggers")
_OVERRIDE = "optimizer.overrides."
_GROUP = "optimizer.groups."


@dataclass(frozen=True)
class Group:
    """One parameter group as the optimizer gets it."""

    name: str
    weight_decay: float
    #: Every knob but lr and weight_decay (``Preset.resolved()`` + overrides; lists, not
    #: tuples, as JSON holds them); None for a ``factory`` optimizer (its knobs are its own).
    knobs: Mapping[str, Any] | None
    #: Tensor name -> elements, in the group's order; empty until the model is known.
    tensors: Mapping[str, int] = field(default_factory=dict)
    #: The group's lr over the phase's scheduled lr: a number, or "c_t" (the bias-correction
    #: ratio, :data:`ablations.config.LR_SCALE_BIAS_CORRECTION`).
    lr_scale: float | str = 1.0


@dataclass(frozen=True)
class Resolved:
    """A run config resolved (see the module doc); :func:`resolve` builds it."""

    #: The run config as plain data, every default filled in, display keys removed.
    config: Mapping[str, Any]
    #: ``preset`` or ``factory`` (the other None), and ``phase2``.
    preset: str | None
    factory: str | None
    groups: tuple[Group, ...]
    #: Where the decayed group's λ came from: "workload" (set), "preset" or "factory default".
    weight_decay_from: str
    #: Per phase (``phase1``, ...): the vocabulary size and the data module's identity.
    data: Mapping[str, Any] = field(default_factory=dict)
    #: "run": written when the run started; "config.yaml": resolved on read, with today's
    #: presets, for a run directory older than ``resolved.json``.
    source: str = "run"

    def identity(self) -> dict[str, Any]:
        """What decides the run: two configs with equal identities train the same run."""
        config = json.loads(json.dumps(self.config))  # a deep copy of plain data
        optimizer = config["optimizer"]
        for key in ("preset", "overrides", "weight_decay", "groups"):  # replaced by the groups
            optimizer.pop(key, None)
        optimizer["groups"] = [_group_identity(g) for g in self.groups]
        return config

    def key(self) -> str:
        """A digest of :meth:`identity` (the reuse index's file name)."""
        text = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def value(self, path: str) -> Any:
        """What the dotted config ``path`` resolves to for this run.

        ``optimizer.overrides.<knob>``: the knob the groups train with (the ``decay`` group's
        when groups differ; None for a factory); ``optimizer.groups.<group>.<knob>``: that
        group's knob (or ``lr_scale``); ``optimizer.weight_decay``: the decayed group's λ; any
        other path: the config's value (list items by index), None if absent.
        """
        if path.startswith(_OVERRIDE):
            knobs = self.groups[0].knobs
            return None if knobs is None else knobs.get(path[len(_OVERRIDE) :])
        if path.startswith(_GROUP) and path.count(".") == 3:
            name, knob = path[len(_GROUP) :].split(".")
            group = next((g for g in self.groups if g.name == name), None)
            if group is None or knob == "lr_scale":
                return None if group is None else group.lr_scale
            return None if group.knobs is None else group.knobs.get(knob)
        if path == "optimizer.weight_decay":
            return self.groups[0].weight_decay
        node: Any = self.config
        for part in path.split("."):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, Mapping) and part in node:
                node = node[part]
            else:
                return None
        return node

    def with_tensors(self, param_groups: Sequence[Mapping[str, Any]]) -> Resolved:
        """The resolution with each group's tensors, from NVIDIA's groups of the built model
        (``params`` as (name, tensor) pairs, in :data:`GROUPS`' order)."""
        groups = tuple(
            replace(g, tensors={name: int(p.numel()) for name, p in pg["params"]})
            for g, pg in zip(self.groups, param_groups, strict=True)
        )
        return replace(self, groups=groups)

    def with_data(self, phase: int, identity: Mapping[str, Any]) -> Resolved:
        """The resolution with phase ``phase``'s data identity (1-based)."""
        return replace(self, data={**self.data, f"phase{phase}": dict(identity)})

    def check_built(self, param_groups: Sequence[Mapping[str, Any]]) -> None:
        """Raise ``RuntimeError`` unless the built optimizer's ``param_groups`` hold each group's
        λ and knobs: a resolution that disagreed with what ``lamb_variants.create`` built fails
        the run instead of mislabelling it. A factory's groups (knobs None) are its own."""
        for group, built in zip(self.groups, param_groups, strict=True):
            if group.knobs is None:
                continue  # a factory's groups are its own: λ and knobs as it builds them
            knobs = group.knobs
            differs = [k for k, v in knobs.items() if plain(built.get(k, v)) != v]
            if built.get("weight_decay") != group.weight_decay or differs:
                raise RuntimeError(
                    f"resolved.json: group {group.name} resolves to {knobs} with λ "
                    f"{group.weight_decay}, the optimizer has {built.get('weight_decay')} "
                    f"(knobs {differs} differ)"
                )

    def tensor_sizes(self) -> dict[str, int]:
        """Elements per tensor of the model (every group's)."""
        return {name: n for g in self.groups for name, n in g.tensors.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "optimizer": {
                "preset": self.preset,
                "factory": self.factory,
                "weight_decay_from": self.weight_decay_from,
                "groups": [plain(g) for g in self.groups],
            },
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "run") -> Resolved:
        opt = raw["optimizer"]
        groups = tuple(
            Group(
                g["name"],
                float(g["weight_decay"]),
                g["knobs"],
                dict(g.get("tensors") or {}),
                g.get("lr_scale", 1.0),
            )
            for g in opt["groups"]
        )
        return cls(
            config=raw["config"],
            preset=opt["preset"],
            factory=opt["factory"],
            groups=groups,
            weight_decay_from=opt["weight_decay_from"],
            data=raw.get("data") or {},
            source=source,
        )


def _group_identity(group: Group) -> dict[str, Any]:
    """A group as :meth:`Resolved.identity` compares it; ``lr_scale`` only when it is not 1, so
    that runs resolved before per-group lr existed keep their identity (and reuse key)."""
    out = {"name": group.name, "weight_decay": group.weight_decay, "knobs": group.knobs}
    if group.lr_scale != 1.0:
        out["lr_scale"] = group.lr_scale
    return out


def resolve(config: RunConfig) -> Resolved:
    """The resolution of ``config`` without a model (groups' knobs and λ; no tensors yet)."""
    opt = config.optimizer
    knobs: dict[str, Any] = {name: None for name in GROUPS}
    if opt.factory is not None:
        decay, source = FACTORY_WEIGHT_DECAY, "factory default"
    else:
        resolved = {**lamb_variants.PRESETS[opt.preset].resolved(), **dict(opt.overrides)}
        decay, source = float(resolved.pop("weight_decay")), "preset"
        for name in GROUPS:  # tuples as lists, as JSON and YAML overrides hold them
            knobs[name] = plain({**resolved, **opt.groups.knobs(name)})
    if opt.weight_decay is not None:  # the one place for λ: set, or the preset's upstream λ
        decay, source = opt.weight_decay, "workload"
    raw = config.to_dict()
    raw["log"] = {k: v for k, v in raw["log"].items() if k not in DISPLAY_KEYS}
    return Resolved(
        config=raw,
        preset=opt.preset if opt.factory is None else None,
        factory=opt.factory,
        groups=tuple(
            Group(name, wd, knobs[name], lr_scale=opt.groups.lr_scale(name))
            for name, wd in zip(GROUPS, (decay, 0.0), strict=True)
        ),
        weight_decay_from=source,
    )


def resolve_raw(raw: Mapping[str, Any]) -> Resolved:
    """:func:`resolve` of plain config data (a ``config.yaml``), with display keys newer or
    older than this harness dropped first (a run resumes under other display values).

    Raises:
        ConfigError: the data is not a valid run config.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: expected a mapping, got {type(raw).__name__}")
    data = dict(raw)
    if isinstance(data.get("log"), Mapping):
        data["log"] = {k: v for k, v in data["log"].items() if k not in DISPLAY_KEYS}
    return resolve(RunConfig.from_dict(data))


def same_run(a: Mapping[str, Any], b: RunConfig) -> bool:
    """Whether the plain config ``a`` (a saved ``config.yaml``) and ``b`` are the same run; a
    saved config that no longer builds is another run."""
    try:
        return resolve_raw(a).identity() == resolve(b).identity()
    except ConfigError:
        return False


def write(run_dir: Path, resolved: Resolved) -> None:
    """Write ``<run_dir>/resolved.json`` atomically."""
    writer.check()
    write_json(run_dir / FILE, resolved.to_dict())


def read(run_dir: Path) -> Resolved | None:
    """The run's resolution: ``resolved.json``, else its ``config.yaml`` resolved now (source
    ``"config.yaml"``); None when the directory has neither (or an unreadable config)."""
    raw = read_json(run_dir / FILE, tolerant=True)
    if raw is not None:
        return Resolved.from_dict(raw)
    path = run_dir / "config.yaml"
    if not path.exists():
        return None
    try:
        return replace(resolve_raw(yaml.safe_load(path.read_text())), source="config.yaml")
    except (ConfigError, yaml.YAMLError):
        return None


def with_model(config: RunConfig, vocab_size: int) -> Resolved:
    """:func:`resolve` of ``config`` with the tensors of its model for ``vocab_size``: for
    results that hold no run directory (the committed studies), the same groups the run built.
    The model is built on the meta device: no memory, and no draw from the global RNG."""
    with torch.device("meta"):
        model = BertPretraining(config.model, vocab_size)
    plan = resolve(config)
    groups = lamb_variants.nvidia_param_groups(
        model.named_parameters(), plan.groups[0].weight_decay
    )
    return plan.with_tensors(groups)
