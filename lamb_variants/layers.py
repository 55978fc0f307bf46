"""Which tensors form one trust-ratio "layer", and NVIDIA's weight-decay parameter groups."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

#: Substrings that put a parameter in NVIDIA's no-decay group (DeepLearningExamples
#: PyTorch/LanguageModeling/BERT/run_pretraining.py: ``no_decay = ['bias', 'gamma', 'beta',
#: 'LayerNorm']``, substring match on ``named_parameters()`` names).
NVIDIA_NO_DECAY: tuple[str, ...] = ("bias", "gamma", "beta", "LayerNorm")


def module_key(name: str) -> str:
    """The module prefix of a parameter name: ``"encoder.layer.0.dense.weight" -> "...dense"``.

    Tensors with the same key (a dense weight and its bias) form one layer under
    ``layer_split="module"``; a top-level name (no dot) is its own layer.
    """
    return name.rsplit(".", 1)[0] if "." in name else name


def layer_index(names: Sequence[str], split: Sequence[str]) -> tuple[list[int], list[str]]:
    """Map each tensor to a layer id.

    Args:
        names: one name per tensor, in step order.
        split: the ``layer_split`` knob of each tensor's group (``"tensor"`` or ``"module"``).

    Returns:
        ``(layer_of, layer_names)``: the layer id of every tensor and each layer's name.
    """
    ids: dict[str, int] = {}
    layer_of: list[int] = []
    for name, how in zip(names, split, strict=True):
        key = module_key(name) if how == "module" else f"{name}\x00tensor"
        layer_of.append(ids.setdefault(key, len(ids)))
    layer_names = [k.removesuffix("\x00tensor") for k in ids]
    return layer_of, layer_names


def nvidia_param_groups(
    named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
    weight_decay: float = 0.01,
    no_decay: Sequence[str] = NVIDIA_NO_DECAY,
) -> list[dict]:
    """NVIDIA BERT's two parameter groups, keeping the names (needed for ``layer_split="module"``).

    Group 0: names containing none of ``no_decay``, with ``weight_decay``; group 1: the others,
    with weight decay 0. Parameters with ``requires_grad=False`` are left out.
    """
    decay: list[tuple[str, torch.nn.Parameter]] = []
    rest: list[tuple[str, torch.nn.Parameter]] = []
    for name, p in named_parameters:
        if not p.requires_grad:
            continue
        (rest if any(s in name for s in no_decay) else decay).append((name, p))
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
