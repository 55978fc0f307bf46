"""The committed batch-scaling study (reproduction/batch_scaling, sweeps/batch_scaling.yaml):
what it holds, that its seed runs rerun the point the ranking picked, and its notebook."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablations.studies import scaling

COMMITTED = Path(__file__).resolve().parents[1] / "reproduction" / "batch_scaling"


def test_the_committed_study_has_every_batch_two_seeds_and_the_ranked_best_point():
    study = scaling.load(COMMITTED)
    assert study.targets == (6.4, 6.3, 6.2)
    committed = set(study.seeds["optimizer"])  # >= 4 optimizers with adamw and lars (issue 12)
    assert (
        {"nvlamb", "apex", "adamw", "lars"}
        <= committed
        <= {
            "nvlamb",
            "apex",
            "adamw",
            "lars",
            "bert_adam",
        }
    )
    for _, g in study.seeds.groupby("optimizer"):
        assert sorted(g[scaling.BATCH].unique()) == [16, 32, 64, 128, 256]
        assert (g.groupby(scaling.BATCH)["seed"].nunique() == 2).all()
        assert (g["status"] == "complete").all()
    for (opt, batch), g in study.tuning.groupby(["optimizer", scaling.BATCH]):
        best = g.loc[g["value"].idxmin()]  # fewest steps to 6.2 (pruned: outpaced, never best)
        seeds = study.seeds[
            (study.seeds["optimizer"] == opt) & (study.seeds[scaling.BATCH] == batch)
        ]
        assert (seeds["phases.0.lr"] == best["phases.0.lr"]).all(), (opt, batch)
        assert (seeds["phases.0.warmup"] == best["phases.0.warmup"]).all(), (opt, batch)
    table = scaling.steps_table(study)
    assert len(table) == 5 * study.seeds["optimizer"].nunique()
    samples = table["samples to 6.2"] / (table["steps to 6.2"] * table["batch"])
    assert samples.dropna().to_numpy() == pytest.approx(1.0)  # samples = batch x steps
    # a batch whose every seed reached 6.2 saw a loss <= 6.2; one where none did, only above it
    assert (table.loc[table["reached 6.2"] == "2/2", "lowest loss"] <= 6.2).all()
    assert (table.loc[table["reached 6.2"] == "0/2", "lowest loss"] > 6.2).all()


@pytest.mark.slow
@pytest.mark.parametrize(
    "hub, folder", [("batch_nvlamb", "batch_scaling"), ("resolved_nvlamb", "batch_resolved")]
)
def test_the_batch_scaling_notebook_draws_its_figures_from_each_committed_design(
    tmp_path, hub, folder
):
    """Both designs of the question (the tuned one and the lr grid) are drawn by the one
    notebook, each read through its own prefix; the runner plans it for either hub."""
    from ablations.analysis import notebooks as figures

    committed = COMMITTED.parent / folder
    jobs, _ = figures.plan(committed)
    assert figures.Job("batch_scaling", hub) in jobs
    out = tmp_path / "figures"
    figures.execute(figures.Job("batch_scaling", hub), committed, out)
    names = {p.name for p in (out / hub).glob("batch_scaling_*.png")}
    assert {"batch_scaling_6.2.png", "batch_scaling_6.4.png", "batch_scaling_noise.png"} <= names


def test_an_lr_grid_design_keeps_the_best_lrs_runs_as_seeds():
    """``sweeps/batch_resolved.yaml`` has no tuning stage: per (optimizer, batch) the lr whose
    runs all reach the lowest target in the fewest mean steps is the point, a missed target
    ranks after, and ties go to the smaller lr (as ``extend`` ranks)."""
    import pandas as pd

    from ablations.results.tables import target_column
    from ablations.studies.scaling import BATCH, best_grid_runs

    steps = target_column("steps", 6.2)
    rows = [
        # batch 16: 0.006 (two seeds, mean 500) beats 0.008 (one seed missed; its other 300)
        ("nvlamb", 16, 0.006, 480.0, 6.18),
        ("nvlamb", 16, 0.006, 520.0, 6.18),
        ("nvlamb", 16, 0.008, 300.0, 6.17),
        ("nvlamb", 16, 0.008, float("nan"), 6.25),
        # batch 32: a tie at 300 steps goes to the smaller lr
        ("nvlamb", 32, 0.012, 300.0, 6.18),
        ("nvlamb", 32, 0.008, 300.0, 6.19),
        # batch 64: nothing reaches the target: the lowest loss wins
        ("nvlamb", 64, 0.012, float("nan"), 6.22),
        ("nvlamb", 64, 0.017, float("nan"), 6.21),
    ]
    runs = pd.DataFrame(
        rows, columns=["optimizer", BATCH, "phases.0.lr", steps, "best_val_mlm_loss"]
    )
    best = best_grid_runs(runs, 6.2)
    got = best.groupby(BATCH)["phases.0.lr"].agg(["first", "size"]).to_dict("index")
    assert got == {
        16: {"first": 0.006, "size": 2},
        32: {"first": 0.008, "size": 1},
        64: {"first": 0.017, "size": 1},
    }
