"""Each run's outcome beyond NaN: trained, failed to train, or diverged, with its reason; and the
warning signs seen in its telemetry, reported beside the outcome and never mixed into it.

A run that ends with a finite loss has not necessarily trained. The thresholds, in one place:

- ``diverged``: the harness stopped it (a non-finite loss, or one above ``divergence_factor`` ×
  the first step's; ``runs.status == "diverged"``).
- ``failed to train``: it finished, but its final validation MLM loss is above the data's
  reference line (:data:`ABOVE_REFERENCE`: the unigram entropy of the masked tokens, the loss of
  predicting every masked token from its frequency alone, so a model above it has learnt nothing
  from context), or it rose by more than :data:`RISE_MARGIN` nats from its own best validation.
- ``trained``: finished, and neither of those.

Runs that did not finish (pruned, failed, interrupted, running, waiting, missing) have no
outcome (null). Warning signs (:data:`TRUST_RATIO_BOUND`, :data:`GRAD_SPIKE_FACTOR`): the
largest per-tensor trust ratio of the run, and the largest gradient norm over the run's median
one; ``warning`` names the signs over their bound.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ablations.core.status import Status

TRAINED, FAILED_TO_TRAIN, DIVERGED = "trained", "failed to train", "diverged"
OUTCOMES = (TRAINED, FAILED_TO_TRAIN, DIVERGED)
#: A finished run whose final validation MLM loss is above reference + this failed to train.
ABOVE_REFERENCE = 0.0
#: A finished run whose final validation MLM loss is this many nats above its best failed.
RISE_MARGIN = 0.05
#: Warning: a per-tensor trust ratio above this (NVLAMB's ratios are O(1)-O(100) in a healthy run).
TRUST_RATIO_BOUND = 1e3
#: Warning: a gradient norm above this multiple of the run's median one.
GRAD_SPIKE_FACTOR = 10.0
#: The columns :func:`with_outcomes` adds to ``runs``.
COLUMNS = ("outcome", "outcome_reason", "peak_trust_ratio", "grad_norm_spike", "warning")

_METRIC = "val/mlm_loss"


def with_outcomes(
    runs: pd.DataFrame, curves: pd.DataFrame, reference: pd.DataFrame
) -> pd.DataFrame:
    """``runs`` with :data:`COLUMNS` (see the module doc), from its curves and reference lines."""
    out = runs.copy()
    val = curves[curves["metric"] == _METRIC]
    finals = val.sort_values("step").groupby("trial")[["value", "phase"]].last()
    best = val.groupby("trial")["value"].min()
    lines = reference[reference["name"] == "unigram_entropy"]
    per_phase = dict(zip(lines["phase"].astype("Int64"), lines["value"], strict=True))
    outcomes, reasons = [], []
    for trial, status in zip(out["trial"], out["status"].astype(str), strict=True):
        if status == Status.DIVERGED:
            outcomes.append(DIVERGED)
            reasons.append(None)
            continue
        if status != Status.COMPLETE or trial not in finals.index:
            outcomes.append(None)
            reasons.append(None)
            continue
        final, phase = float(finals.at[trial, "value"]), finals.at[trial, "phase"]
        line = per_phase.get(phase, per_phase.get(1, math.nan))
        outcome, reason = finished_outcome(final, float(best[trial]), line)
        outcomes.append(outcome)
        reasons.append(reason)
    out["outcome"] = pd.Series(outcomes, index=out.index, dtype="object")
    out["outcome_reason"] = pd.Series(reasons, index=out.index, dtype="object")
    trust = _per_trial(curves, "optim/trust_ratio_max", "max")
    grad = curves[curves["metric"] == "optim/grad_norm"].groupby("trial")["value"]
    spike = (grad.max() / grad.median()).replace([np.inf, -np.inf], np.nan)
    out["peak_trust_ratio"] = out["trial"].map(trust).astype("float64")
    out["grad_norm_spike"] = out["trial"].map(spike).astype("float64")
    signs = [
        _warning(t, g) for t, g in zip(out["peak_trust_ratio"], out["grad_norm_spike"], strict=True)
    ]
    out["warning"] = pd.Series(signs, index=out.index, dtype="object")
    return out


def finished_outcome(final: float, best: float, line: float) -> tuple[str, str | None]:
    """The outcome of a run that finished (not diverged) with validation MLM loss ``final`` at
    its end and ``best`` at its lowest, against the reference ``line`` (NaN: none): trained or
    failed to train, with the reason. The thresholds' one home (:func:`with_outcomes` and the
    sweep's ``extend`` rule use it)."""
    if math.isfinite(line) and final > line + ABOVE_REFERENCE:
        return (
            FAILED_TO_TRAIN,
            f"final val MLM loss {final:.3f} above the unigram entropy {line:.3f}",
        )
    rise = final - best
    if rise > RISE_MARGIN:
        return FAILED_TO_TRAIN, f"final val MLM loss {final:.3f} rose {rise:.3f} from its best"
    return TRAINED, None


def _per_trial(curves: pd.DataFrame, metric: str, how: str) -> pd.Series:
    return curves[curves["metric"] == metric].groupby("trial")["value"].agg(how)


def _warning(trust: float, spike: float) -> str | None:
    signs = []
    if trust > TRUST_RATIO_BOUND:
        signs.append(f"trust ratio up to {trust:.3g} (> {TRUST_RATIO_BOUND:g})")
    if spike > GRAD_SPIKE_FACTOR:
        signs.append(f"gradient norm {spike:.3g}x its median (> {GRAD_SPIKE_FACTOR:g}x)")
    return "; ".join(signs) or None
