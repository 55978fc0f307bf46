"""Verdicts that know their design (issue 20 item 2): each rule on synthetic tables, censored at
either end, unresolved with a minimum detectable effect checked against the noncentral t, fits
that disagree, and the README checker that compares prose citations with generated verdicts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from ablations.analysis import verdicts as v
from ablations.analysis.readme import citations
from ablations.studies.regime.edge import edge_markdown, edges
from ablations.studies.regime.edge import verdicts as h1_verdicts

A = v.Answer

PAIRED = {
    # differences, predicted, answer
    "lower_supported": ([-0.05, -0.06, -0.055], "lower", A.SUPPORTED),
    "lower_refuted": ([0.05, 0.06, 0.055], "lower", A.REFUTED),
    "lower_unresolved": ([-0.05, 0.04, -0.01], "lower", A.UNRESOLVED),
    "higher_supported": ([0.05, 0.06, 0.055], "higher", A.SUPPORTED),
    "none_supported": ([0.001, -0.001, 0.0005, 0.0], "none", A.SUPPORTED),
    "none_refuted": ([0.05, 0.06, 0.055], "none", A.REFUTED),
    "none_unresolved": ([0.02, -0.03, 0.01], "none", A.UNRESOLVED),  # wider than ±0.01
    "one_seed": ([-0.5], "lower", A.UNRESOLVED),
}


@pytest.mark.parametrize("case", list(PAIRED.values()), ids=list(PAIRED))
def test_paired_verdicts(case):
    diffs, predicted, answer = case
    got = v.paired("x", "claim", diffs, predicted)
    assert got.answer == answer, got
    if answer == A.UNRESOLVED and len(diffs) > 1:
        assert got.mde is not None and got.mde > 0 and got.extend


def test_the_mde_is_detected_with_80_percent_power():
    """At a true mean equal to the MDE, the two-sided 5% paired t-test rejects 80% of the time:
    checked by simulating the test (independent of the noncentral-t solution)."""
    rng = np.random.default_rng(0)
    for n in (3, 5, 10):
        x = rng.normal(0, 0.02, n)
        s, m = x.std(ddof=1), v.mde(x)
        draws = rng.normal(m, s, (40_000, n))
        t = draws.mean(1) / (draws.std(1, ddof=1) / math.sqrt(n))
        power = float(np.mean(np.abs(t) > scipy.stats.t.ppf(0.975, n - 1)))
        assert abs(power - 0.8) < 0.01, (n, power)


def test_unknown_prediction_is_an_error():
    with pytest.raises(ValueError, match="predicted"):
        v.paired("x", "c", [1.0, 2.0], "smaller")


@pytest.mark.parametrize(
    ("curve", "end"),
    [({1: 5.0, 2: 6.0, 4: 7.0}, "first"), ({1: 7.0, 2: 6.0, 4: 5.0}, "last")],
)
def test_an_optimum_at_either_end_is_censored(curve, end):
    got = v.optimum("o", "claim", curve)
    assert got is not None and got.answer == A.CENSORED and end in got.evidence
    assert ("down" if end == "first" else "up") in got.extend


def test_an_inside_optimum_is_not_censored():
    assert v.optimum("o", "claim", {1: 6.0, 2: 5.0, 4: 6.5}) is None


def _edge(trained, failed, edge="bracketed"):
    return {"max_trained_lr": trained, "first_failed_lr": failed, "edge": edge}


R = 2**0.25
EDGES = {
    # curve, reference, predicted, answer
    "lower_supported": (_edge(0.024, 0.024 * R), _edge(0.024 * R**2, 0.024 * R**3), "lower",
                        A.SUPPORTED),
    "lower_but_higher": (_edge(0.024 * R**2, 0.024 * R**3), _edge(0.024, 0.024 * R), "lower",
                         A.REFUTED),
    "same_at_finest": (_edge(0.024, 0.024 * R), _edge(0.024, 0.024 * R), "same", A.SUPPORTED),
    "lower_but_same_at_finest": (_edge(0.024, 0.024 * R), _edge(0.024, 0.024 * R), "lower",
                                 A.REFUTED),
    "same_but_apart": (_edge(0.024, 0.024 * R), _edge(0.024 * R, 0.024 * R**2), "same",
                       A.REFUTED),
    "coarse_grid": (_edge(0.024, 0.048), _edge(0.024, 0.048), "same", A.UNRESOLVED),
    "censored_above": (_edge(0.048, math.nan, "censored above"), _edge(0.024, 0.048), "lower",
                       A.CENSORED),
    "censored_below": (_edge(math.nan, 0.0015, "censored below"), _edge(0.024, 0.048), "lower",
                       A.CENSORED),
    "reference_censored": (_edge(0.024, 0.048), _edge(0.048, math.nan, "censored above"),
                           "same", A.CENSORED),
}  # fmt: skip


@pytest.mark.parametrize("case", list(EDGES.values()), ids=list(EDGES))
def test_edge_verdicts(case):
    curve, reference, predicted, answer = case
    got = v.edge_order("e", "claim", curve, reference, predicted)
    assert got.answer == answer, got
    if answer == A.CENSORED:
        assert ("up" in got.extend) == ("above" in got.evidence)
    if answer == A.UNRESOLVED:
        assert got.extend.startswith("lrs inside")


def test_fits_that_disagree_give_no_ordering():
    fits = {
        "absolute": {"nvlamb": 63.0, "adamw": 59.0},
        "relative": {"nvlamb": 120.0, "adamw": 50.0},
    }
    assert v.ordering("b", "c", fits, ["nvlamb", "adamw"]).answer == A.SUPPORTED
    fits["relative"] = {"nvlamb": 45.0, "adamw": 58.0}
    got = v.ordering("b", "c", fits, ["nvlamb", "adamw"])
    assert got.answer == A.DEPENDS_ON_FIT and "absolute: nvlamb > adamw" in got.evidence
    agree = {"absolute": {"nvlamb": 40.0, "adamw": 59.0}, "relative": {"nvlamb": 1, "adamw": 2}}
    assert v.ordering("b", "c", agree, ["nvlamb", "adamw"]).answer == A.REFUTED


def _points(first_failed: dict[tuple[str, str], float]) -> pd.DataFrame:
    """Synthetic pooled points: every curve on the same grid, each seed fails from the curve's
    first failing lr on."""
    grid = [0.012, 0.024, 0.024 * R, 0.024 * R**2, 0.024 * R**3, 0.048]
    rows = []
    for (mode, name), edge in first_failed.items():
        for lr in grid:
            for seed in range(3):
                bad = lr >= edge * (1 - 1e-9)
                rows.append(
                    {"mode": mode, "intervention": name, "lr": lr, "seed": seed,
                     "diverged": False, "failed": bad, "warned": False,
                     "loss": 7.0 if bad else 6.0}
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_h1_verdicts_from_pooled_outcomes():
    table = edges(
        _points(
            {
                ("apex", "baseline"): 0.024 * R**2,
                ("apex", "no_prenorm"): 0.024 * R,  # one step lower: supported
                ("apex", "no_bias_correction"): 0.024 * R**2,  # same: refuted
                ("nvlamb", "baseline"): 0.048,
                ("nvlamb", "no_prenorm"): 0.048,  # same: supported
                ("nvlamb", "no_bias_correction"): 0.024 * R**3,  # lower: refuted
            }
        )
    )
    got = {x.id: x.answer for x in h1_verdicts(table)}
    assert got == {
        "H1.apex.no_prenorm": A.SUPPORTED,
        "H1.apex.no_bias_correction": A.REFUTED,
        "H1.nvlamb.no_prenorm": A.SUPPORTED,
        "H1.nvlamb.no_bias_correction": A.REFUTED,
    }
    md = edge_markdown(table)
    assert "`H1.apex.no_prenorm: supported`" in md and "3/3" in md
    # a curve that never failed on the grid is censored, and says to extend lr up
    censored = edges(_points({("apex", "baseline"): 1.0, ("apex", "no_prenorm"): 0.024}))
    (only,) = h1_verdicts(censored)
    assert only.answer == A.CENSORED and "extend lr up" in only.extend


README = """Intro `H1.apex.no_prenorm: {prose}` and more.
<!-- generated by: python -m ablations.studies.regime edge x -->
| `H1.apex.no_prenorm: supported` |
| `H1.nvlamb.no_prenorm: refuted` |
<!-- end generated -->
"""


@pytest.mark.parametrize(
    ("prose", "problems"),
    [("supported", 0), ("refuted", 1), ("censored", 1)],
)
def test_the_readme_checker_compares_cited_verdicts(prose, problems):
    assert len(citations(README.format(prose=prose))) == problems


def test_a_cited_verdict_no_block_gives_is_a_problem():
    text = README.format(prose="supported") + "\nSee `H9.nothing: supported`.\n"
    (line,) = citations(text)
    assert "H9.nothing" in line


def test_the_batch_scaling_verdict_is_censored_where_the_tuning_hit_its_range_top():
    """The committed study: nvlamb's best lr at batch >= 64 and apex's at every batch are the
    largest tuning point tried, so no ordering against AdamW is stated; the fits are still shown,
    and dropping batch 128 reverses nvlamb vs AdamW (the ordering depends on the design)."""
    from ablations.studies import scaling, scaling_verdicts

    study = scaling.load("reproduction/batch_scaling")
    got = {x.id: x for x in scaling_verdicts.verdicts(study)}
    assert {k: x.answer for k, x in got.items()} == {
        "scaling.nvlamb_vs_adamw": A.CENSORED,
        "scaling.apex_vs_adamw": A.CENSORED,
    }
    evidence = got["scaling.nvlamb_vs_adamw"].evidence
    assert "nvlamb at batch 64" in evidence and "adamw at batch" not in evidence
    fits = scaling_verdicts.fits(study, ("nvlamb", "adamw"), min(study.targets))
    assert {"absolute", "relative"} <= set(fits)
    order = {k: v["nvlamb"] > v["adamw"] for k, v in fits.items()}
    assert len(set(order.values())) == 2  # the fits disagree: without censoring, "depends"


def test_the_fit_table_is_what_the_verdicts_order_recomputed_independently():
    """``--fits``: B_noise of the relative fit against scipy's least squares on (S - fit)/S, and
    the model-free ratio against the seed runs' mean steps, for each optimizer of the claim."""
    from scipy.optimize import least_squares

    from ablations.results.tables import target_column
    from ablations.studies import scaling, scaling_verdicts

    study = scaling.load("reproduction/batch_scaling")
    table = scaling_verdicts.fit_table(study).set_index("optimizer")
    target = min(study.targets)
    steps = target_column("steps", target)
    for opt in ("nvlamb", "apex", "adamw"):
        seeds = study.seeds[study.seeds["optimizer"] == opt]
        reached = seeds.groupby(scaling.BATCH)[steps].apply(lambda s: bool(s.notna().all()))
        mean = seeds.groupby(scaling.BATCH)[steps].mean()[reached]
        b, s = mean.index.to_numpy(dtype=float), mean.to_numpy(dtype=float)
        fit = least_squares(lambda p, b=b, s=s: (s - p[0] - p[1] / b) / s, x0=[s.min(), 1.0])
        assert table.loc[opt, "B_noise, relative"] == pytest.approx(fit.x[1] / fit.x[0], rel=1e-6)
        (ratio_col,) = [c for c in table.columns if c.startswith("S·B/(S₀·B₀) at ")]
        top = int(ratio_col.rsplit(" ", 1)[1])
        want = mean[top] * top / (mean[16] * 16)
        assert table.loc[opt, ratio_col] == pytest.approx(want, rel=1e-12)


def test_the_claim_table_gathers_every_studys_verdicts_once():
    """``python -m ablations.studies.claims``: each verdict of the regime table, the edge table
    and the batch-scaling pairs, once, with the answer its own study gives."""
    from ablations.studies import claims, scaling, scaling_verdicts
    from ablations.studies.regime.edge import edges, pooled_points
    from ablations.studies.regime.edge import verdicts as edge_verdicts
    from ablations.studies.regime.effects import regime_table

    got = claims.claims("reproduction")
    ids = [v.id for v in got]
    assert len(ids) == len(set(ids))
    own = [v for v in regime_table("reproduction/regime_map")["verdict"] if v is not None]
    own += edge_verdicts(edges(pooled_points("reproduction/regime_map")))
    for folder, prefix in claims.SCALING.items():
        if Path("reproduction", folder).is_dir():
            name = scaling_verdicts.verdict_name(prefix)
            own += scaling_verdicts.verdicts(
                scaling.load(Path("reproduction", folder), prefix), name=name
            )
    assert {v.id: v.answer for v in got} == {v.id: v.answer for v in own}
    assert (
        ids.index("H1.apex.no_prenorm")
        < ids.index("H5.a.lr6e-3")
        < ids.index("scaling.apex_vs_adamw")
    )


def _scaling_study(b_noise: dict[str, float], spread: float) -> object:
    """A synthetic batch-scaling study: per optimizer and batch three seed runs whose steps to
    6.2 are S_min (1 + B_noise/B) times (1 - spread, 1, 1 + spread) (seed order flipped for the
    second optimizer, so pairing cannot cancel the spread): the seed means lie on the model."""
    from ablations.studies import scaling

    rows = []
    for k, (opt, bn) in enumerate(b_noise.items()):
        for batch in (16, 32, 64, 128, 256):
            s = 100.0 * (1 + bn / batch)
            for seed, f in enumerate((1 - spread, 1.0, 1 + spread)[:: 1 - 2 * k]):
                rows.append(
                    {"optimizer": opt, scaling.BATCH: batch, "seed": seed, "phases.0.lr": 0.01,
                     "steps_to_6.2": s * f, "best_val_mlm_loss": 6.1}
                )  # fmt: skip
    seeds = pd.DataFrame(rows)
    return scaling.Study(seeds=seeds, tuning=seeds, curves=pd.DataFrame(), targets=(6.2,))


SEEDED = {
    # B_noise per optimizer, relative spread of the seeds, answer
    "precise_supported": ({"nvlamb": 100.0, "adamw": 50.0}, 0.02, A.SUPPORTED),
    "precise_refuted": ({"nvlamb": 30.0, "adamw": 60.0}, 0.02, A.REFUTED),
    "noisy_unresolved": ({"nvlamb": 100.0, "adamw": 50.0}, 0.45, A.UNRESOLVED),
}


@pytest.mark.parametrize("case", list(SEEDED.values()), ids=list(SEEDED))
def test_the_scaling_ordering_needs_seeds_that_resolve_it(case):
    """Every reading orders the pair alike (the seed means lie on the model), so the answer is
    set by the paired bootstrap interval of the B_noise difference: it excludes 0 when the seeds
    agree, and holds it when they spread by ±45%."""
    from ablations.studies import scaling_verdicts

    b_noise, spread, answer = case
    study = _scaling_study(b_noise, spread)
    (got,) = scaling_verdicts.verdicts(study)
    assert got.answer == answer, got.evidence
    est, low, high = scaling_verdicts.paired_difference(study, ("nvlamb", "adamw"), 6.2)
    assert est == pytest.approx(b_noise["nvlamb"] - b_noise["adamw"], rel=1e-9)
    assert (low > 0 or high < 0) == (answer != A.UNRESOLVED)
    assert f"absolute {est:+.1f} [{low:+.1f}, {high:+.1f}]" in got.evidence
    if answer == A.UNRESOLVED:
        assert got.extend == "more seeds at each batch's best lr"


def test_the_resolved_batch_scaling_verdicts_from_the_committed_study():
    """``reproduction/batch_resolved``: apex's B_noise exceeds AdamW's under every reading and
    the paired interval of the difference excludes 0 (supported); nvlamb's ordering against
    AdamW flips when batch 128 is dropped (depends on the fit); AdamW reaching 6.2 at no seed
    at batch 256 is stated. The paired estimates equal an independent fit (scipy) on the
    common batches' seed means."""
    from scipy.optimize import least_squares

    from ablations.studies import scaling, scaling_verdicts

    study = scaling.load("reproduction/batch_resolved", "resolved_")
    name = scaling_verdicts.verdict_name("resolved_")
    got = {x.id: x for x in scaling_verdicts.verdicts(study, name=name)}
    assert {k: x.answer for k, x in got.items()} == {
        "scaling_resolved.nvlamb_vs_adamw": A.DEPENDS_ON_FIT,
        "scaling_resolved.apex_vs_adamw": A.SUPPORTED,
    }
    for x in got.values():
        assert "adamw misses 6.2 at batch 256 (0/3 seeds" in x.evidence
    steps = "steps_to_6.2"
    means = {}
    for opt in ("apex", "adamw"):
        seeds = study.seeds[study.seeds["optimizer"] == opt]
        ok = seeds.groupby(scaling.BATCH)[steps].apply(lambda s: bool(s.notna().all()))
        means[opt] = seeds.groupby(scaling.BATCH)[steps].mean()[ok]
    common = means["apex"].index.intersection(means["adamw"].index)

    def b_noise(mean: pd.Series) -> float:
        b, s = common.to_numpy(dtype=float), mean[common].to_numpy(dtype=float)
        fit = least_squares(lambda p: s - p[0] - p[1] / b, x0=[s.min(), 1.0])
        return fit.x[1] / fit.x[0]

    est, low, high = scaling_verdicts.paired_difference(study, ("apex", "adamw"), 6.2)
    assert est == pytest.approx(b_noise(means["apex"]) - b_noise(means["adamw"]), rel=1e-6)
    assert 0 < low < est < high
