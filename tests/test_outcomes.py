"""Run outcomes beyond NaN (``ablations.results.outcomes``) and the stability edge built on
them (``ablations.studies.regime.lr``), on synthetic tables whose answer is known, and on the
committed LR study, where the runs at lr 0.048 finished without training."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ablations import results
from ablations.results import outcomes
from ablations.studies.regime.lr import stability_edge

ENTROPY = 6.5


def curves(trial: int, val: list[float], grad: list[float], trust: list[float]) -> list[dict]:
    rows = [
        {"trial": trial, "metric": "val/mlm_loss", "step": 10 * (i + 1), "phase": 1, "value": v}
        for i, v in enumerate(val)
    ]
    rows += [
        {"trial": trial, "metric": "optim/grad_norm", "step": i + 1, "phase": 1, "value": g}
        for i, g in enumerate(grad)
    ]
    rows += [
        {"trial": trial, "metric": "optim/trust_ratio_max", "step": i + 1, "phase": 1, "value": t}
        for i, t in enumerate(trust)
    ]
    return rows


CASES = {  # trial: (status, val curve, gradient norms, trust ratios, outcome, warning words)
    0: ("complete", [7.0, 6.3, 6.1], [1, 1, 1], [2, 3], "trained", None),
    1: ("complete", [7.0, 6.6, 6.55], [1, 1, 1], [2, 3], "failed to train", None),  # > entropy
    2: ("complete", [7.0, 6.0, 6.2], [1, 1, 1], [2, 3], "failed to train", None),  # rose 0.2
    3: ("complete", [7.0, 6.0, 6.04], [1, 1, 30], [2, 5e9], "trained", ("trust", "gradient")),
    4: ("diverged", [7.0], [1, 1e6], [2], "diverged", None),
    5: ("interrupted", [7.0, 6.3], [1, 1], [2], None, None),
}


def test_each_run_gets_its_outcome_reason_and_warning_signs():
    runs = pd.DataFrame({"trial": list(CASES), "status": [c[0] for c in CASES.values()]})
    curve = pd.DataFrame([r for t, c in CASES.items() for r in curves(t, c[1], c[2], c[3])])
    reference = pd.DataFrame(
        {"name": ["unigram_entropy"], "phase": pd.array([1], dtype="Int64"), "value": [ENTROPY]}
    )
    out = outcomes.with_outcomes(runs, curve, reference).set_index("trial")
    for trial, (*_, outcome, words) in CASES.items():
        assert out.at[trial, "outcome"] == outcome, trial
        warning = out.at[trial, "warning"]
        if words is None:
            assert warning is None, (trial, warning)
        else:
            assert all(w in warning for w in words), (trial, warning)
    assert "above the unigram entropy 6.500" in out.at[1, "outcome_reason"]
    assert "rose 0.200 from its best" in out.at[2, "outcome_reason"]
    assert out.at[0, "outcome_reason"] is None
    assert out.at[3, "peak_trust_ratio"] == 5e9 and out.at[3, "grad_norm_spike"] == 30.0


@pytest.mark.parametrize(
    ("bad", "edge", "trained", "failed"),
    [
        ({1e-3: 0, 2e-3: 0, 4e-3: 1, 8e-3: 2}, "bracketed", 2e-3, 4e-3),
        ({1e-3: 0, 2e-3: 0, 4e-3: 0}, "censored above", 4e-3, math.nan),
        ({1e-3: 1, 2e-3: 2}, "censored below", math.nan, 1e-3),
        ({1e-3: 0, 2e-3: 1, 4e-3: 0}, "bracketed", 1e-3, 2e-3),  # a clean lr past the edge
    ],
    ids=["bracketed", "censored_above", "censored_below", "not_monotone"],
)
def test_the_stability_edge_knows_when_the_grid_censors_it(bad, edge, trained, failed):
    got = stability_edge(pd.Series(bad))
    assert got["edge"] == edge
    for key, want in (("max_trained_lr", trained), ("first_failed_lr", failed)):
        assert got[key] == want or (math.isnan(got[key]) and math.isnan(want)), key


def test_committed_lr_study_runs_at_the_grid_top_failed_to_train():
    """The committed tables predate outcomes: ``load_runs`` derives them from their curves."""
    runs = results.load_runs("reproduction/regime_map/lr_sensitivity")
    done = runs[runs["status"] == "complete"]
    top = done["phases.0.lr"] == done["phases.0.lr"].max()
    assert (done.loc[top, "outcome"] == "failed to train").all()
    assert (done.loc[~top, "outcome"] == "trained").all()
