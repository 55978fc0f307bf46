"""The regime map: its sweep file can answer what issue 11 asks, and its analysis
(``ablations.studies.regime``) computes what it says, checked by hand on small tables."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lamb_variants
from ablations.studies import regime, selection
from ablations.sweep.reuse import run_key
from ablations.sweep.spec import load_sweep

REPO = Path(__file__).resolve().parents[1]
MAP = load_sweep(REPO / "sweeps" / "regime_map.yaml")


def _configs(name: str) -> dict[str, object]:
    p = MAP.plans[name]
    return {v: p.config(v, {}, 0) for v in p.variants}


def test_lr_sweep_spans_1_5_decades_with_6_values_for_every_curve_in_both_modes():
    curves: dict[tuple[str, str], set[float]] = {}
    plan = MAP.plans["lr_sensitivity"]
    for variant, config in _configs("lr_sensitivity").items():
        key = (config.optimizer.preset, regime.intervention(plan.toggles(variant)))
        curves.setdefault(key, set()).add(config.phases[0].lr)
    modes = {m for m, _ in curves}
    assert modes == {"apex", "nvlamb"}
    assert {i for _, i in curves} == {"baseline", "no_prenorm", "no_bias_correction"}
    for lrs in curves.values():
        assert len(lrs) >= 6 and math.log10(max(lrs) / min(lrs)) >= 1.5 - 1e-9
        assert regime.RECIPE_LR in lrs


def test_each_intervention_changes_only_its_knob():
    plan = MAP.plans["lr_sensitivity"]
    for variant, config in _configs("lr_sensitivity").items():
        overrides = config.optimizer.overrides
        name = regime.intervention(plan.toggles(variant))
        assert overrides["prenorm"] == ("none" if name == "no_prenorm" else "clip")
        assert overrides["bias_correction"] is (name != "no_bias_correction")


def test_warmup_by_bias_correction_grid_is_in_apex_mode():
    configs = _configs("warmup_bias_correction")
    assert {c.optimizer.preset for c in configs.values()} == {"apex"}
    grid = {
        (c.phases[0].warmup, c.optimizer.overrides["bias_correction"]) for c in configs.values()
    }
    assert grid == {(w, b) for w in (0.0, 0.03, 0.2843) for b in (True, False)}


def test_decay_variants_have_the_mass_the_file_says():
    """degree_1.0_equal_mass has degree 0.5's Σlr, degree_0.5_equal_mass degree 1.0's (to 1e-4),
    and at equal peak degree 0.5 has > 30% more: the confound removed is real."""
    mass = {}
    for variant, config in _configs("decay_equal_mass").items():
        phase = config.phases[0]
        schedule = lamb_variants.PolyWarmup.from_proportion(
            phase.steps, phase.warmup, decay_power=phase.decay_power
        )
        mass[variant] = phase.lr * sum(schedule(t) for t in range(1, phase.steps + 1))
    assert mass["degree_1.0_equal_mass"] == pytest.approx(mass["degree_0.5"], rel=1e-4)
    assert mass["degree_0.5_equal_mass"] == pytest.approx(mass["degree_1.0"], rel=1e-4)
    assert mass["degree_0.5"] / mass["degree_1.0"] > 1.3


def test_identical_configurations_are_shared_between_experiments():
    """The map's hub runs (the recipe lr in both modes) are the same configs in the other
    experiments, so the worker trains them once (ablations.sweep.reuse)."""
    owners: dict[str, set[str]] = {}
    for name, p in MAP.plans.items():
        for variant in p.variants:
            for seed in range(p.experiment.seeds):
                owners.setdefault(run_key(p.config(variant, {}, seed)), set()).add(name)
    shared = [o for o in owners.values() if len(o) > 1]
    assert len(shared) >= 10
    assert any(o >= {"lr_sensitivity", "warmup_bias_correction"} for o in shared)
    assert {"lr_sensitivity", "eps_calibrated"} in shared
    # the recipe and bias correction off at 6e-3: trained once for three experiments
    assert any(
        o == {"lr_sensitivity", "warmup_bias_correction", "bias_correction_cause"} for o in shared
    )


def test_every_regime_row_picks_one_variant_of_its_experiment_on_each_side():
    for row in regime.ROWS:
        plan = MAP.plans[row.experiment]
        toggles = pd.DataFrame([{"variant": v, **plan.toggles(v)} for v in plan.variants])
        a, b = selection.variant_with(toggles, row.a), selection.variant_with(toggles, row.b)
        assert a is not None and b is not None and a != b, row


def _points() -> pd.DataFrame:
    rows = []
    losses = {  # (intervention, seed) -> loss per lr; None: diverged
        ("baseline", 0): [6.5, 6.2, 6.1, 6.3],
        ("baseline", 1): [6.6, 6.1, 6.0, 6.4],
        ("no_bc", 0): [6.4, 6.3, 7.0, None],
        ("no_bc", 1): [6.5, 6.2, None, None],
    }
    for (name, seed), values in losses.items():
        for lr, loss in zip((1e-3, 2e-3, 4e-3, 8e-3), values, strict=True):
            rows.append(
                {
                    "mode": "apex",
                    "intervention": name,
                    "lr": lr,
                    "seed": seed,
                    "diverged": loss is None,
                    "failed": loss is not None and loss >= 7.0,  # above this data's entropy
                    "warned": False,
                    "loss": math.nan if loss is None else loss,
                }
            )
    return pd.DataFrame(rows)


def test_lr_sensitivity_by_hand():
    """Wortsman's statistic: per seed, mean over the grid of min(ℓ, ℓ0) - min ℓ, a divergence
    counting as ℓ0; best loss of the seed-mean curve; the stability edge from failures and
    divergences (censored above for a curve that never fails)."""
    loss0 = 6.9
    table = regime.lr_sensitivity(_points(), loss0).set_index("intervention")
    base_seeds = [
        np.mean(np.array(x) - min(x)) for x in ([6.5, 6.2, 6.1, 6.3], [6.6, 6.1, 6.0, 6.4])
    ]
    capped = ([6.4, 6.3, 6.9, 6.9], [6.5, 6.2, 6.9, 6.9])
    nobc_seeds = [np.mean(np.array(x) - min(x)) for x in capped]
    assert table.loc["baseline", "sensitivity"] == pytest.approx(np.mean(base_seeds))
    assert table.loc["no_bc", "sensitivity"] == pytest.approx(np.mean(nobc_seeds))
    assert table.loc["baseline", "best_loss"] == pytest.approx(6.05)
    assert table.loc["baseline", "best_lr"] == 4e-3
    assert table.loc["no_bc", "best_lr"] == 2e-3
    assert table.loc["baseline", "max_trained_lr"] == 8e-3
    assert table.loc["baseline", "edge"] == "censored above"
    assert math.isnan(table.loc["baseline", "first_failed_lr"])
    assert table.loc["no_bc", "max_trained_lr"] == 2e-3
    assert table.loc["no_bc", "first_failed_lr"] == 4e-3
    assert table.loc["no_bc", "edge"] == "bracketed"
    assert table.loc["no_bc", "diverged"] == 3 and table.loc["no_bc", "failed"] == 1
    d = np.array(nobc_seeds) - np.array(base_seeds)
    assert table.loc["no_bc", "delta_sensitivity"] == pytest.approx(d.mean())
    half = 12.706204736 * d.std(ddof=1) / math.sqrt(2)  # t(0.975, 1 df)
    assert table.loc["no_bc", "delta_high"] == pytest.approx(d.mean() + half, rel=1e-6)
    assert math.isnan(table.loc["baseline", "delta_sensitivity"])


def test_the_default_sweep_tests_each_claim_where_the_map_shows_it_can_act():
    """sweep.yaml: Figure 2 and bias correction in apex mode (where the toggles do not cancel),
    Figure 3 at equal lr mass, the ε mechanism in nvlamb mode; small enough for 45 minutes on 2
    cores (at most 40 distinct 700-step trials: shared runs train once)."""
    sweep = load_sweep(REPO / "sweep.yaml")
    defaults = [n for n, e in sweep.experiments.items() if e.default]
    assert defaults == [
        "prenorm_apex",
        "bias_correction_warmup",
        "decay_equal_mass",
        "eps_bias_correction",
    ]
    keys = set()
    for name in defaults:
        p = sweep.plans[name]
        for variant in p.variants:
            for seed in range(p.experiment.seeds):
                config = p.config(variant, {}, seed)
                keys.add(run_key(config))
                assert config.phases[0].steps == 700 and len(config.phases) == 1
                mode = config.optimizer.preset
                assert mode == ("apex" if name in defaults[:2] else "nvlamb"), (name, mode)
    assert len(keys) <= 40
    decay = sweep.plans["decay_equal_mass"]
    mass = {}
    for variant in decay.variants:
        phase = decay.config(variant, {}, 0).phases[0]
        schedule = lamb_variants.PolyWarmup.from_proportion(
            phase.steps, phase.warmup, decay_power=phase.decay_power
        )
        mass[variant] = phase.lr * sum(schedule(t) for t in range(1, phase.steps + 1))
    assert mass["degree_1.0_equal_mass"] == pytest.approx(mass["degree_0.5"], rel=1e-4)


def test_the_eps_dominated_share_weights_tensors_by_their_elements():
    """A 100-element tensor 10% dominated and a 10-element one wholly: 20 of 110 elements;
    steps and seeds averaged after weighting."""
    rows = []
    for trial, (big, small) in enumerate([(0.1, 1.0), (0.3, 0.0)]):
        for tensor, value in (("w", big), ("b", small)):
            rows.append(
                {
                    "variant": "v",
                    "trial": trial,
                    "step": 50,
                    "tensor": tensor,
                    "eps_dominated": value,
                }
            )
    share = regime.eps_dominated_share(pd.DataFrame(rows), {"w": 100, "b": 10})
    assert share["v"] == pytest.approx(((10 + 10) / 110 + 30 / 110) / 2)


# --- the committed map --------------------------------------------------------------------------

COMMITTED = REPO / "reproduction" / "regime_map"


def test_the_committed_map_holds_what_the_issue_asks():
    """Both modes, an LR sweep of >= 6 values over >= 1.5 decades per curve, the warmup x bias
    correction grid, the ε-dominance statistic in the layer tables, and the regime table's
    rows computed from them."""
    from ablations import results

    runs = results.load_runs(COMMITTED / "lr_sensitivity")
    points = regime.lr_points(runs)
    assert set(points["mode"]) == {"apex", "nvlamb"}
    for _, g in points.groupby(["mode", "intervention"]):
        lrs = sorted(g["lr"].unique())
        assert len(lrs) >= 6 and math.log10(lrs[-1] / lrs[0]) >= 1.5 - 1e-9
        assert (g.groupby("lr")["seed"].nunique() >= 2).all()
    grid = results.load_runs(COMMITTED / "warmup_bias_correction")
    assert len(grid[grid["status"] == "complete"]) == 18
    layers = results.load_layers(COMMITTED / "lr_sensitivity")
    assert layers["eps_dominated"].notna().all() and layers["relative_update"].notna().all()
    decay = results.load_runs(COMMITTED / "decay_equal_mass")
    assert set(decay["variant"].astype(str)) >= {"degree_0.5", "degree_1.0_equal_mass"}
    calibration = regime._calibration(COMMITTED / "calibration.json", None, 0)
    assert calibration["share_at"][str(calibration["matched_eps"])] < 0.01
    eps = results.load_runs(COMMITTED / "eps_calibrated")
    assert len(eps[eps["status"] == "complete"]) == 32  # 4 ε x prenorm x bias correction x 2
    assert set(eps["optimizer.overrides.eps"]) == {1e-6, 1.8e-5, 1e-4, 1e-3}
    free = results.load_runs(COMMITTED / "eps_free")
    assert len(free[free["status"] == "complete"]) == 8
    table = regime.regime_table(COMMITTED)
    assert len(table) >= 20 and table["n"].min() >= 2
    eps_rows = table[table["regime"].str.contains("ε")]
    assert len(eps_rows) == 10  # 2 claims x (4 ε + the ε-free control)


@pytest.mark.slow
def test_the_regime_notebook_draws_every_figure_from_the_committed_map(tmp_path):
    from ablations.analysis import notebooks as figures

    out = tmp_path / "figures"
    figures.execute(figures.Job("regime_map", "lr_sensitivity"), COMMITTED, out)
    names = {p.name for p in (out / "lr_sensitivity").glob("regime_map_*.png")}
    expected = {"lr_sensitivity", "forest", "nodecay_update", "decay", "eps_dominated"}
    assert {f"regime_map_{n}.png" for n in expected} <= names
