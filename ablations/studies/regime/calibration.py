"""The ε calibration of the regime map: which ε puts this small model where BERT-large is.

From a finished phase-1 run's optimizer state, √v̂ of every element with a gradient: its
quantiles, its RMS over all elements, the share at or below candidate ε values, and the matched
ε (:func:`calibrate`). ``make reproduce-map`` saves the numbers as ``calibration.json`` (the
checkpoint is not committed) and the README quotes them (:func:`calibration_text`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ablations.run import resolved

#: BERT-large (NVIDIA's recipe): parameters, ε, and the clipped global gradient norm.
LARGE_PARAMS = 3.35e8
LARGE_EPS = 1e-6
LARGE_GRAD_NORM = 1.0
#: A run directory's checkpoint the calibration reads.
CHECKPOINT = Path("checkpoints") / "phase1" / "end.ckpt"


def calibrate(run_dir: Path | str) -> dict[str, Any]:
    """√v̂ of every element with a gradient, from the run's phase-1 end checkpoint (v̂: the
    second moment divided by bias correction's factor when the run corrected, with the β2 it
    trained with, both from its resolution, :mod:`ablations.run.resolved`): its quantiles, its
    RMS over all elements, the share at or below candidate ε values, and the ε that puts this
    model where BERT-large is: ε_large·√N_large/G_large is ε over BERT-large's per-element RMS
    gradient; assuming the distribution of √v̂/RMS has the same shape here, the matched ε is
    that ratio times this model's RMS, and the share it leaves ε-dominated is the estimate of
    BERT-large's.

    Raises:
        ValueError: no end checkpoint, or no resolution of a preset optimizer in ``run_dir``.
    """
    run_dir = Path(run_dir)
    checkpoint = run_dir / CHECKPOINT
    if not checkpoint.exists():
        raise ValueError(f"{checkpoint}: expected the end checkpoint of a finished phase-1 run")
    plan = resolved.read(run_dir)
    knobs = plan.groups[0].knobs if plan is not None else None
    if knobs is None:
        raise ValueError(f"{run_dir}: expected the resolved.json or config.yaml of a preset run")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = state["optimizer_states"][0]
    step = state["param_groups"][0]["step"]
    bc2 = 1 - float(knobs["betas"][1]) ** step if knobs["bias_correction"] else 1.0
    v = torch.cat([s["exp_avg_sq"].flatten().double() for s in state["state"].values()]) / bc2
    rms = float(v.mean().sqrt())
    seen = np.sort(v[v > 0].sqrt().numpy())
    ratio = LARGE_EPS * math.sqrt(LARGE_PARAMS) / LARGE_GRAD_NORM
    matched = ratio * rms
    candidates = (1e-6, matched, 1e-4, 3e-4, 1e-3)
    return {
        "step": int(step),
        "elements": int(v.numel()),
        "with_gradient": int(seen.size),
        "rms_sqrt_v": rms,
        "quantiles": {q: float(np.quantile(seen, q)) for q in (0.01, 0.1, 0.25, 0.5, 0.75, 0.9)},
        "large_eps_over_rms": ratio,
        "matched_eps": matched,
        "share_at": {e: float(np.mean(seen <= e)) for e in candidates},
    }


def load_calibration(source: Path, variant: str | None = None, seed: int = 0) -> dict[str, Any]:
    """:func:`calibrate` of a run directory, or of the run of ``variant`` (the name the user
    gives, as in trial.json) and ``seed`` in an experiment directory, or the numbers saved from
    one (a ``.json`` file: ``make reproduce-map`` commits them, the checkpoint is not).

    Raises:
        ValueError: no such trial, or no end checkpoint (:func:`calibrate`).
    """
    if source.is_file():
        return json.loads(source.read_text())
    if variant is not None:
        runs = [
            d.parent
            for d in sorted(source.glob("*/trial.json"))
            if (info := json.loads(d.read_text())).get("variant") == variant
            and info.get("seed") == seed
        ]
        if not runs:
            raise ValueError(f"{source}: no trial of variant {variant!r} with seed {seed}")
        source = runs[0]
    return {"run": str(source), **calibrate(source)}


def calibration_text(out: dict[str, Any]) -> str:
    """The calibration as the README quotes it."""
    quantiles = ", ".join(f"{100 * float(q):g}% {x:.3g}" for q, x in out["quantiles"].items())
    shares = ", ".join(f"{float(e):.3g}: {100 * v:.3g}%" for e, v in out["share_at"].items())
    return "\n".join(
        [
            f"step {out['step']}: {out['with_gradient']} of {out['elements']} elements had a "
            f"gradient; RMS of sqrt(v_hat) over all elements {out['rms_sqrt_v']:.3g}",
            f"quantiles of sqrt(v_hat) over those elements: {quantiles}",
            f"BERT-large: eps / per-element RMS gradient = {out['large_eps_over_rms']:.4f}, so "
            f"the matched eps here is {out['matched_eps']:.3g}",
            f"share of elements eps-dominated at eps = {shares}",
        ]
    )
