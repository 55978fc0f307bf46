"""Steps and samples to a target loss (issue 12): the runs table's columns on synthetic curves,
and ``stop_at`` ending a real run at its first validation under the target."""

from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest
import synthetic
import yaml
from test_results import experiment  # noqa: F401 (the tiny experiment fixture)
from test_sweep_spec import VALID, _load
from test_train import PHASE, config, lines

from ablations.config import ConfigError, RunConfig
from ablations.results import tables
from ablations.run.train import train
from ablations.sweep.spec import load_sweep, plan


def _curves(trajectories: dict[int, list[float]], every: int = 10, batch: int = 32) -> pd.DataFrame:
    rows = []
    for trial, losses in trajectories.items():
        for i, loss in enumerate(losses, start=1):
            rows.append(
                {
                    "trial": trial,
                    "variant": "v",
                    "seed": trial,
                    "stage": "seed",
                    "step": i * every,
                    "samples": i * every * batch,
                    "wall_time": float(i),
                    "metric": "val/mlm_loss",
                    "value": loss,
                }
            )
    return pd.DataFrame(rows)


def test_steps_and_samples_to_target_reached_not_reached_and_reached_then_lost():
    curves = _curves(
        {
            0: [6.5, 6.3, 6.08, 6.0],  # reaches 6.1 at step 30, 6.0 at step 40
            1: [6.5, 6.4, 6.3, 6.2],  # reaches neither
            2: [6.4, 6.05, 6.3, 6.6],  # reaches 6.1 at step 20, then loses it
        }
    )
    runs = pd.DataFrame({"trial": [0, 1, 2, 3]})  # trial 3: no curve at all
    out = tables.with_targets(runs, curves, (6.1, 6.0), "val/mlm_loss")
    steps, samples = out["steps_to_6.1"], out["samples_to_6.1"]
    assert (steps[0], samples[0]) == (30.0, 30 * 32)
    assert math.isnan(steps[1]) and math.isnan(samples[1])
    assert (steps[2], samples[2]) == (20.0, 20 * 32)  # the first reach counts
    assert math.isnan(steps[3]) and math.isnan(samples[3])
    assert out["steps_to_6"].tolist()[0] == 40.0
    assert all(math.isnan(x) for x in out["steps_to_6"].tolist()[1:])
    # an experiment with no curves yet (every trial waiting): columns of NaN, no error
    empty = tables.with_targets(runs.copy(), curves.iloc[:0], (6.1,), "val/mlm_loss")
    assert empty["steps_to_6.1"].isna().all() and empty["samples_to_6.1"].dtype == "float64"


def test_targets_are_validated_and_reach_sweep_json(tmp_path):
    raw = copy.deepcopy(VALID)
    raw["experiments"]["e"]["targets"] = [6.2, 6.0]
    assert plan(_load(raw), "e").to_dict()["experiment"]["targets"] == [6.2, 6.0]
    for bad, message in (([6.0, 6.0], r"targets: expected distinct"), ([-1.0], r"targets\[0\]")):
        raw["experiments"]["e"]["targets"] = bad
        (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError, match=rf"^experiments\.e\.{message}"):
            load_sweep(tmp_path / "sweep.yaml")


def test_stop_at_ends_the_run_at_the_first_validation_under_it(tmp_path):
    """A two-phase run with stop_at above every loss: it ends at its first validation (step 4)
    as complete, says why, and never starts phase 2; training it again returns the same."""
    phases = [
        {**PHASE, "steps": 12, "lr": 1e-2, "warmup": 0.25},
        {**PHASE, "steps": 6, "lr": 1e-2, "warmup": 0.25},
    ]
    cfg = RunConfig.from_dict({**config(phases=phases).to_dict(), "stop_at": 50.0})
    result = train(cfg, tmp_path, synthetic.make)
    assert result["status"] == "complete" and result["step"] == 4
    assert result["reason"] == "reached stop_at: val/mlm_loss <= 50.0 at step 4"
    assert [r["step"] for r in lines(tmp_path)] == [1, 2, 3, 4]
    assert [r["step"] for r in lines(tmp_path, "val")] == [4]
    assert not (tmp_path / "checkpoints" / "phase2").exists()
    assert train(cfg, tmp_path, synthetic.make)["step"] == 4
    (tmp_path / "status.json").unlink()  # as if it crashed before writing its status
    again = train(cfg, tmp_path, synthetic.make)
    assert (again["status"], again["step"], again["reason"]) == (
        "complete",
        4,
        result["reason"],
    )
    assert not (tmp_path / "checkpoints" / "phase2").exists()
    with pytest.raises(ConfigError, match=r"^stop_at: expected null or a loss > 0"):
        RunConfig.from_dict({**cfg.to_dict(), "stop_at": -1.0})


def test_collect_writes_the_declared_targets_columns(experiment, tmp_path):  # noqa: F811
    """The targets of sweep.json reach runs.parquet through a real collect."""
    import json
    import shutil

    from ablations import results

    exp = tmp_path / experiment.name
    shutil.copytree(experiment, exp)
    spec = json.loads((exp / "sweep.json").read_text())
    curves = results.load_curves(exp)
    val = curves[curves["metric"] == "val/mlm_loss"]["value"]
    target = float(val.median())  # reached by some evaluations, not by all
    spec["experiment"]["targets"] = [target]
    (exp / "sweep.json").write_text(json.dumps(spec))
    results.collect(exp, force=True)
    runs = results.load_runs(exp)
    column = tables.target_column("steps", target)
    assert column in runs and tables.target_column("samples", target) in runs
    expected = tables.with_targets(runs[["trial"]].copy(), curves, [target], "val/mlm_loss")
    pd.testing.assert_series_equal(runs[column], expected[column], check_names=False)
    assert runs[column].notna().any()


def test_the_batch_scaling_sweep_is_designed_as_issue_12_asks():
    """sweeps/batch_scaling.yaml: >= 4 batch sizes over >= 16x, >= 4 optimizers with adamw and
    lars (one experiment each), the same tuning points and the same samples for every
    (optimizer, batch), targets declared and the runs stopped at the lowest, the noise scale
    measured wherever a batch has more than one micro-batch; LARS's lr on LAMB's scale."""
    from pathlib import Path

    sweep = load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / "batch_scaling.yaml")
    run = [name for name, e in sweep.experiments.items() if e.default]
    assert run == ["batch_nvlamb", "batch_adamw", "batch_apex", "batch_lars", "batch_bert_adam"]
    batches, presets, samples, points = set(), set(), set(), set()
    for name in run:
        p = plan(sweep, name)
        assert p.experiment.targets == (6.4, 6.3, 6.2) and p.experiment.seeds == 2
        assert p.experiment.rank == "first_target"
        points.add(json.dumps(p.points, sort_keys=True))
        for variant in p.variants:
            config = p.config(variant, p.points[0], 0)
            phase = config.phases[0]
            batches.add(phase.global_batch)
            presets.add(config.optimizer.preset)
            samples.add(phase.steps * phase.global_batch)
            assert config.log.noise_scale == (phase.micro_batch < phase.global_batch)
            assert config.stop_at == min(p.experiment.targets)
            assert config.optimizer.overrides["prenorm"] == "clip"
            assert config.optimizer.weight_decay == 0.01
            if config.optimizer.preset == "lars":
                assert config.optimizer.overrides["trust_coeff"] == 1.0
                assert config.optimizer.overrides["momentum"] == 0.9
    assert len(points) == 1 and len(json.loads(points.pop())) == 4  # one budget for all
    assert len(batches) >= 4 and max(batches) / min(batches) >= 16
    assert {"adamw", "lars"} <= presets and len(presets) == 5
    assert len(samples) == 1  # every run sees the same number of examples


def test_the_scaling_fit_recovers_a_known_trade_off():
    """Steps to target generated from S = S_min (1 + B_noise/B) (McCandlish et al.) with seed
    noise: the fit recovers S_min and B_noise, E_min = S_min·B_noise, the 20%-overhead critical
    batch 1.2·B0 + 0.2·B_noise, and the bootstrap interval covers the truth."""
    import numpy as np

    from ablations.studies import scaling

    s_min, b_noise = 400.0, 96.0
    batches = np.array([16, 32, 64, 128, 256], dtype=float)
    exact = scaling.fit(batches, s_min * (1 + b_noise / batches))
    assert (exact.s_min, exact.b_noise) == pytest.approx((s_min, b_noise))
    assert exact.e_min == pytest.approx(s_min * b_noise)
    assert exact.b_crit == pytest.approx(1.2 * 16 + 0.2 * b_noise)
    # the definition itself: at B_crit the steps are 1.2x perfect scaling from B0 = 16
    s = lambda b: s_min * (1 + b_noise / b)  # noqa: E731
    assert s(exact.b_crit) * exact.b_crit == pytest.approx(1.2 * s(16) * 16)

    rng = np.random.default_rng(3)
    rows = [
        {"phases.0.global_batch": b, "seed": k, "steps_to_6.1": s(b) * rng.normal(1, 0.03)}
        for b in batches
        for k in range(4)
    ]
    rows.append({"phases.0.global_batch": 256.0, "seed": 9, "steps_to_6.1": float("nan")})
    table = scaling.bootstrap(pd.DataFrame(rows), "steps_to_6.1", draws=300)
    for name, truth in (("s_min", s_min), ("b_noise", b_noise)):
        row = table.loc[name]
        assert row["low"] <= truth <= row["high"], (name, row.to_dict())
        assert row["estimate"] == pytest.approx(truth, rel=0.15)
    assert math.isnan(scaling.fit(np.array([32.0]), np.array([10.0])).s_min)


def test_first_target_rank_orders_reached_runs_by_step_and_the_others_after_them():
    from ablations.sweep.worker import first_target_rank

    raw = copy.deepcopy(VALID)
    raw["experiments"]["e"].update(targets=[6.3, 6.1], rank="first_target")
    p = plan(_load(raw), "e")
    cfg = p.config(next(iter(p.variants)), p.points[0], 0)
    steps = cfg.phases[0].steps

    def val(*losses):
        return [{"step": (i + 1) * steps // 4, "val/mlm_loss": x} for i, x in enumerate(losses)]

    early, late = val(6.5, 6.05, 6.4), val(6.5, 6.2, 6.1)
    missed_close, missed_far = val(6.5, 6.2, 6.15), val(6.5, 6.4, 6.3)
    ranks = [
        first_target_rank(v, p.experiment, cfg) for v in (early, late, missed_close, missed_far)
    ]
    # the lowest target (6.1), its first reach counting even if lost after
    assert ranks[:2] == [steps // 2, 3 * steps // 4]
    assert ranks[2] == pytest.approx(steps * 1.05) and ranks[3] == pytest.approx(steps * 1.2)
    assert ranks == sorted(ranks) and ranks[2] > steps  # every miss after every reach
    assert math.isinf(first_target_rank([], p.experiment, cfg))


def test_rank_first_target_needs_targets_and_no_pruner(tmp_path):
    for extra, message in (
        ({"rank": "first_target"}, r"rank: expected 'final' unless targets"),
        (
            {"rank": "first_target", "targets": [6.0], "pruner": {"type": "median"}},
            r"rank: expected 'final' with a pruner",
        ),
        ({"rank": "fastest"}, r"rank: expected one of"),
    ):
        raw = copy.deepcopy(VALID)
        raw["experiments"]["e"].update(extra)
        (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError, match=rf"^experiments\.e\.{message}"):
            load_sweep(tmp_path / "sweep.yaml")


@pytest.mark.slow
def test_a_first_target_sweep_reruns_the_point_that_reached_the_target_first(
    tmp_path, embedded_cache
):
    """A real local sweep ranked by first_target: every finished tuning trial's Optuna value is
    its rank recomputed here from its val.jsonl, a tuning trial that had not reached the target
    by the best reach so far stopped there ("outpaced"), and the seed reruns take the
    best-ranked point."""
    from optuna.trial import TrialState
    from sweep_files import python, study, workload, write_sweep

    cache, _ = embedded_cache
    file = write_sweep(
        tmp_path,
        {
            "fast": {
                "workload": workload(cache, steps=12),
                "variants": {"named": {"only": {}}},
                "tune": {"phases.0.lr": {"low": 1e-3, "high": 0.1, "log": True}},
                "search": {"method": "qmc", "budget": 3, "seed": 0},
                "seeds": 2,
                "targets": [6.2],
                "rank": "first_target",
            }
        },
        local={"workers": 1, "threads_per_worker": 1},
    )
    out = python("sweep", "--file", str(file), "--local", cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    exp_dir = tmp_path / "results" / "fast"
    trials = study(exp_dir).get_trials()
    tune = sorted((t for t in trials if t.user_attrs["stage"] == "tune"), key=lambda t: t.number)
    first_reach = math.inf  # one worker: the tuning trials ran one after the other
    for t in tune:
        text = (exp_dir / str(t.number) / "val.jsonl").read_text()
        val = [json.loads(line) for line in text.splitlines()]
        reached = [r["step"] for r in val if r["val/mlm_loss"] <= 6.2]
        if t.state == TrialState.PRUNED:  # outpaced: stopped at the best reach so far, unreached
            assert t.user_attrs["reason"].startswith("outpaced at step")
            assert not reached and val[-1]["step"] == min(s for s in (4, 8, 12) if s >= first_reach)
            continue
        assert t.state == TrialState.COMPLETE
        assert first_reach == math.inf or reached and reached[0] <= first_reach  # else outpaced
        expected = reached[0] if reached else 12 * (1 + val[-1]["val/mlm_loss"] - 6.2)
        assert t.value == pytest.approx(expected), (t.number, val)
        first_reach = min(first_reach, reached[0] if reached else math.inf)
    best = min((t for t in tune if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    seeds = [t for t in trials if t.user_attrs["stage"] == "seed"]
    assert len(seeds) == 2 and all(t.params == best.params for t in seeds)


def _study(rows: list[dict], targets=(6.2,)):
    from ablations.studies import scaling

    seeds = pd.DataFrame(rows)
    for t in targets:
        seeds[tables.target_column("samples", t)] = (
            seeds[tables.target_column("steps", t)] * seeds[scaling.BATCH]
        )
    return scaling.Study(seeds, seeds.iloc[:0], pd.DataFrame(), tuple(targets))


def test_the_steps_table_and_the_linear_scaling_limit_on_a_known_trade_off():
    """Steps to target from S = S_min (1 + B_noise/B): with B_noise = 96 from batch 16, perfect
    scaling holds within 20% up to (B + 96)/(16 + 96) <= 1.2, i.e. B = 32 on the grid; an
    optimizer that misses the target at 64 with one seed stops there; means are over the seeds
    that reached it."""
    from ablations.studies import scaling

    s = lambda b, s_min, b_noise: s_min * (1 + b_noise / b)  # noqa: E731
    rows = []
    for opt, b_noise in (("wide", 400.0), ("narrow", 96.0)):
        for b in (16, 32, 64, 128, 256):
            for seed in (0, 1):
                steps = s(b, 400.0, b_noise)
                if opt == "narrow" and b == 64 and seed == 1:
                    steps = math.nan
                rows.append(
                    {
                        "optimizer": opt,
                        scaling.BATCH: b,
                        "seed": seed,
                        "phases.0.lr": 1e-3,
                        "phases.0.warmup": 0.1,
                        "steps_to_6.2": steps,
                        "best_val_mlm_loss": 6.3 if math.isnan(steps) else 6.2 - 0.01 * seed,
                    }
                )
    study = _study(rows)
    table = scaling.steps_table(study)
    narrow64 = table[(table["optimizer"] == "narrow") & (table["batch"] == 64)].iloc[0]
    assert narrow64["reached 6.2"] == "1/2"
    assert narrow64["steps to 6.2"] == pytest.approx(s(64, 400.0, 96.0))
    assert narrow64["samples to 6.2"] == pytest.approx(64 * s(64, 400.0, 96.0))
    assert narrow64["lowest loss"] == pytest.approx((6.2 + 6.3) / 2)  # the miss at 6.3
    wide16 = table[(table["optimizer"] == "wide") & (table["batch"] == 16)].iloc[0]
    assert wide16["lowest loss"] == pytest.approx(6.195)
    limits = scaling.linear_scaling_limit(table, 6.2)
    # wide: (B + 400)/(416) <= 1.2 up to B = 99.2 -> 64; narrow: 32 (and 64 is half-missed)
    assert limits.to_dict() == {"narrow": 32.0, "wide": 64.0}
    fits = scaling.fit_table(study, 6.2, draws=50).set_index("optimizer")
    assert fits.loc["wide", "B_noise"].startswith("400")
    assert fits.loc["wide", "batches fitted"] == 5


def test_the_limits_table_fits_each_target_on_its_own():
    """Two targets whose trade-offs differ (B_noise 400 at 6.4, 96 at 6.2 for the same
    optimizer): the limits table gives each target its own limit and critical batch,
    B_crit = 1.2 * 16 + 0.2 * B_noise (99.2 and 38.4)."""
    from ablations.studies import scaling

    rows = []
    for b in (16, 32, 64, 128, 256):
        for seed in (0, 1):
            rows.append(
                {
                    "optimizer": "adam",
                    scaling.BATCH: b,
                    "seed": seed,
                    "phases.0.lr": 1e-3,
                    "phases.0.warmup": 0.1,
                    "steps_to_6.4": 100.0 * (1 + 400.0 / b),
                    "steps_to_6.2": 400.0 * (1 + 96.0 / b),
                    "best_val_mlm_loss": 6.2,
                }
            )
    study = _study(rows, targets=(6.4, 6.2))
    limits = scaling.limits_table(study, draws=20).set_index("optimizer")
    assert limits.loc["adam", "limit at 6.4"] == 64.0 and limits.loc["adam", "limit at 6.2"] == 32.0
    assert limits.loc["adam", "B_crit at 6.4"].startswith("99.2")
    assert limits.loc["adam", "B_crit at 6.2"].startswith("38.4")
    assert list(limits.columns) == [
        "limit at 6.4",
        "B_crit at 6.4",
        "limit at 6.2",
        "B_crit at 6.2",
    ]
