"""Optimizers as a user of the harness writes them (``optimizer.factory``), for the tests."""

from __future__ import annotations

import torch


def adamw(param_groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """torch's AdamW with its defaults on NVIDIA's groups (names dropped: torch wants tensors):
    the algorithm of lamb_variants' ``adamw`` preset."""
    groups = [{**g, "params": [p for _, p in g["params"]]} for g in param_groups]
    return torch.optim.AdamW(groups, lr=lr)


def not_an_optimizer(param_groups: list[dict], lr: float) -> object:
    return object()
