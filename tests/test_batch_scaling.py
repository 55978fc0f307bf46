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
def test_the_batch_scaling_notebook_draws_its_figures_from_the_committed_study(tmp_path):
    from ablations.analysis import notebooks as figures

    out = tmp_path / "figures"
    figures.execute(figures.Job("batch_scaling", "batch_nvlamb"), COMMITTED, out)
    names = {p.name for p in (out / "batch_nvlamb").glob("batch_scaling_*.png")}
    assert {"batch_scaling_6.2.png", "batch_scaling_6.4.png", "batch_scaling_noise.png"} <= names
