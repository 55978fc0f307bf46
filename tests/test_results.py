"""Results collection, statistics and notebooks, on a tiny real experiment.

The experiment is real end to end: every trial is trained by ``ablations.run.train.train`` (a tiny
BERT on ``tests/synthetic.py``, two phases of a few steps), the study is a real Optuna journal
file holding the trials with the sweep driver's attributes, and the notebooks run in a real
Jupyter kernel. Layout (the sweep driver's contract, see ``ablations/results/collect.py``):

    trial 0-3  stage "seed": variants clip / none x seeds 0, 1; complete
    trial 4    stage "tune": variant none at lr 1e3; diverged (study value +inf)
    trial 5    stage "tune": variant clip; training raised (status.json "failed", study FAIL)
    trial 6    stage "tune": variant clip; preempted (study trial 6 FAIL), retried as study
               trial 7 (``system_attrs["failed_trial"] = 6``), which completed in directory 6
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import synthetic
from lightning.pytorch.callbacks import Callback

from ablations import results
from ablations.analysis import notebooks as figures
from ablations.analysis import stats
from ablations.config import RunConfig
from ablations.results.tables import time_to_target
from ablations.run.train import train

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "tiny"
PHASE = {"global_batch": 16, "micro_batch": 8, "seq_len": 32, "max_predictions": 5}
STEPS = (10, 6)
VARIANTS = {
    "clip": {"optimizer.overrides.prenorm": "clip"},
    "none": {"optimizer.overrides.prenorm": "none"},
}
TUNE = {"phases.0.lr": {"low": 1e-3, "high": 1e4, "log": True}}
ENTROPY = (3.5, 3.4)  # data.json's unigram entropy per phase (the synthetic data has none)


def _config(variant: str, seed: int, lr: float) -> RunConfig:
    return RunConfig.from_dict(
        {
            "model": {"size": "tiny"},
            "data": {"vocab_size": 512},
            "optimizer": {
                "overrides": {"prenorm": VARIANTS[variant]["optimizer.overrides.prenorm"]}
            },
            "phases": [
                {**PHASE, "steps": STEPS[0], "lr": lr, "warmup": 0.2},
                {**PHASE, "steps": STEPS[1], "lr": 1e-2, "warmup": 0.2},
            ],
            "seed": seed,
            "log": {"layer_every": 4, "val_every": 4, "val_batches": 2},
            "checkpoint_every": 100,
        }
    )


def _data(data, phase, seed):
    return synthetic.SyntheticData(data, phase, seed, num_train=96, num_val=16)


class _Boom(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 11:  # optimizer step 6: after the first validation
            raise RuntimeError("boom in training")


def _storage(path: Path) -> optuna.storages.JournalStorage:
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    return optuna.storages.JournalStorage(
        JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
    )


TRIALS = [
    # number, variant, stage, seed, lr, outcome
    (0, "clip", "seed", 0, 2e-2, "complete"),
    (1, "clip", "seed", 1, 2e-2, "complete"),
    (2, "none", "seed", 0, 2e-2, "complete"),
    (3, "none", "seed", 1, 2e-2, "complete"),
    (4, "none", "tune", 0, 1e3, "diverged"),
    (5, "clip", "tune", 0, 5e-3, "failed"),
    (6, "clip", "tune", 0, 1e-2, "complete"),
]


def _build(exp_dir: Path) -> None:
    """Train every trial, write trial.json / sweep.json / data.json and the study."""
    exp_dir.mkdir(parents=True)
    spec = {  # as the sweep driver writes it (ablations/sweep/plan.py: Plan.to_dict)
        "name": EXPERIMENT,
        "experiment": {"description": "tiny test sweep", "claim": "none", "tune": TUNE},
        "variants": VARIANTS,
        "points": None,
    }
    (exp_dir / "sweep.json").write_text(json.dumps(spec))
    entropy = {f"phase{i + 1}_unigram_entropy": e for i, e in enumerate(ENTROPY)}
    (exp_dir / "data.json").write_text(json.dumps({**entropy, "unigram_entropy": ENTROPY[0]}))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=EXPERIMENT, storage=_storage(exp_dir / "study.journal"), direction="minimize"
    )
    dist = {"phases.0.lr": optuna.distributions.FloatDistribution(1e-3, 1e4, log=True)}
    for number, variant, stage, seed, lr, outcome in TRIALS:
        run_dir = exp_dir / str(number)
        attrs = {"variant": variant, "stage": stage, "seed": seed, "slot": f"{variant}/{number}"}
        attempts = [number, 7] if number == 6 else [number]
        info = {
            "experiment": EXPERIMENT,
            "trial": number,
            "attempts": attempts,
            "variant": variant,
            **{k: attrs[k] for k in ("stage", "seed", "slot")},
            "toggles": VARIANTS[variant],
            "params": {"phases.0.lr": lr},
        }
        run_dir.mkdir()
        (run_dir / "trial.json").write_text(json.dumps(info))
        config = _config(variant, seed, lr)
        if outcome == "failed":
            with pytest.raises(RuntimeError, match="boom"):
                train(config, run_dir, _data, callbacks=[_Boom()])
            status = {"status": "failed", "error": "RuntimeError: boom in training"}
            trial = optuna.trial.create_trial(
                state=optuna.trial.TrialState.FAIL,
                params={"phases.0.lr": lr},
                distributions=dist,
                user_attrs={**attrs, **status},
            )
        else:
            result = train(config, run_dir, _data)
            assert result["status"] == outcome
            value = math.inf if outcome == "diverged" else result["val"]["val/mlm_loss"]
            trial = optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE,
                value=value,
                params={"phases.0.lr": lr},
                distributions=dist,
                user_attrs={**attrs, "status": outcome},
            )
        if number == 6:  # preempted first, then retried by study trial 7 in the same directory
            study.add_trial(
                optuna.trial.create_trial(
                    state=optuna.trial.TrialState.FAIL,
                    params={"phases.0.lr": lr},
                    distributions=dist,
                    user_attrs={**attrs, "status": "preempted"},
                )
            )
            trial = optuna.trial.create_trial(
                state=trial.state,
                value=trial.value,
                params=trial.params,
                distributions=dist,
                user_attrs=trial.user_attrs,
                system_attrs={"failed_trial": 6},
            )
        study.add_trial(trial)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """The tiny experiment, trained and collected once; tests copy it before changing it."""
    exp_dir = tmp_path_factory.mktemp("results") / EXPERIMENT
    _build(exp_dir)
    results.collect(exp_dir)
    return exp_dir


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _copy(exp_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "results" / EXPERIMENT
    shutil.copytree(exp_dir, target, ignore=shutil.ignore_patterns("checkpoints"))
    return target


# --- collect ------------------------------------------------------------------------------------


def test_tables_have_the_schema_and_one_row_per_line_and_trial(experiment):
    curves = results.load_curves(experiment)
    settings = ["optimizer.overrides.prenorm", "phases.0.lr"]
    assert list(curves.columns) == [
        *("experiment", "trial", "attempt", "variant", *settings, "seed", "stage"),
        *("phase", "step", "phase_step", "samples", "tokens", "wall_time", "metric", "value"),
    ]
    assert curves["value"].dtype == np.float64 and curves["step"].dtype == np.int64
    coords = {"phase", "step", "phase_step", "samples", "tokens", "wall_time"}
    for number, *_ in TRIALS:
        rows = curves[curves["trial"] == number]
        for kind in ("metrics", "val"):
            lines = _jsonl(experiment / str(number) / f"{kind}.jsonl")
            prefix = "val/" if kind == "val" else ("train/", "optim/")
            got = rows[rows["metric"].astype(str).str.startswith(prefix)]
            assert len(got) == sum(len(set(r) - coords) for r in lines), (number, kind)
        layers = _jsonl(experiment / str(number) / "layers.jsonl")
        assert (results.load_layers(experiment)["trial"] == number).sum() == sum(
            len(r["tensors"]) for r in layers
        )
    # a value reads back as written, non-finite (null) as NaN
    line = _jsonl(experiment / "2" / "val.jsonl")[-1]
    row = curves[(curves["trial"] == 2) & (curves["step"] == line["step"])]
    assert row.set_index("metric")["value"]["val/mlm_loss"] == line["val/mlm_loss"]

    layers = results.load_layers(experiment)
    assert {"tensor", "layer", "block", "trust_ratio", "weight_norm", "update_norm"} <= set(
        layers.columns
    )
    assert {"embeddings", "encoder.0", "encoder.1", "mlm_head"} <= set(layers["block"].astype(str))
    assert not list(experiment.glob(".*.tmp"))  # atomic writes leave no temporary file

    reference = results.reference_lines(experiment)
    assert reference["value"].tolist() == list(ENTROPY)
    assert reference["phase"].tolist() == [1, 2]


def test_runs_match_the_study_and_keep_diverged_and_failed_trials(experiment):
    study = optuna.load_study(study_name=EXPERIMENT, storage=_storage(experiment / "study.journal"))
    assert len(study.trials) == 8  # trial 6 was attempted twice (6, then 7)
    runs = results.load_runs(experiment).set_index("trial")
    assert sorted(runs.index) == [number for number, *_ in TRIALS]
    status = runs["status"].to_dict()
    assert status == dict(enumerate(["complete"] * 4 + ["diverged", "failed", "complete"]))
    assert runs.loc[6, "attempt"] == 7 and runs.loc[6, "attempts"] == 2
    assert runs.loc[4, "value"] == math.inf and "loss" in runs.loc[4, "reason"]
    assert (
        runs.loc[5, "reason"] == "RuntimeError: boom in training" and runs.loc[5, "state"] == "FAIL"
    )
    assert math.isnan(runs.loc[4, "final_val_mlm_loss"]) and math.isnan(
        runs.loc[5, "final_val_mlm_loss"]
    )
    assert 0 < runs.loc[4, "steps"] < sum(STEPS) and 0 < runs.loc[5, "steps"] < sum(STEPS)
    for number in (0, 1, 2, 3, 6):
        last = _jsonl(experiment / str(number) / "val.jsonl")[-1]
        assert runs.loc[number, "final_val_mlm_loss"] == last["val/mlm_loss"]
        assert runs.loc[number, "final_val_mlm_loss"] == runs.loc[number, "value"]  # the study's
        assert runs.loc[number, "steps"] == runs.loc[number, "total_steps"] == sum(STEPS)
    assert runs["optimizer.overrides.prenorm"].to_dict() == {
        n: VARIANTS[v]["optimizer.overrides.prenorm"] for n, v, *_ in TRIALS
    }
    assert runs["phases.0.lr"].to_dict() == {n: lr for n, _, _, _, lr, _ in TRIALS}
    assert list(runs["variant"].cat.categories) == list(VARIANTS)  # the spec's order

    curves = results.load_curves(experiment)
    diverged = curves[(curves["trial"] == 4) & (curves["metric"] == "train/loss")]
    assert len(diverged) == runs.loc[4, "steps"] and (curves["trial"] == 5).any()


def test_statistics_match_an_independent_computation(experiment):
    runs = results.load_runs(experiment)
    summary = stats.summarize(runs, "final_val_mlm_loss")
    t_975 = {1: 12.706204736, 4: 2.776445105}  # Student-t quantiles from a printed table
    for variant in VARIANTS:
        seeds = runs[(runs["variant"] == variant) & (runs["stage"] == "seed")]
        x = seeds["final_val_mlm_loss"].to_numpy()
        half = t_975[len(x) - 1] * x.std(ddof=1) / np.sqrt(len(x))
        row = summary.loc[variant]
        assert row["n"] == 2 and row["mean"] == pytest.approx(x.mean())
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((x.mean() - half, x.mean() + half))
    assert summary.loc["none", "divergence_rate"] == pytest.approx(1 / 3)  # 1 of 3 finished
    assert summary.loc["clip", "divergence_rate"] == 0 and summary.loc["clip", "failed"] == 1
    x = np.array([1.0, 2.0, 4.0, 3.0, 5.5])
    mean, low, high = stats.t_interval(x)
    assert high - mean == pytest.approx(t_975[4] * x.std(ddof=1) / np.sqrt(5))

    # time to target on the real curves: the first evaluation at or below the target
    curves = results.load_curves(experiment)
    target = runs.loc[runs["trial"] == 0, "best_val_mlm_loss"].item()
    times = time_to_target(curves, target, time="step").set_index("trial")
    val = _jsonl(experiment / "0" / "val.jsonl")
    assert times.loc[0, "time"] == next(r["step"] for r in val if r["val/mlm_loss"] <= target)
    assert times.loc[4, "time"] == math.inf and len(times) == len(TRIALS)

    # performance profile on a hand-made table (AlgoPerf: ratio to the fastest; > 4 is inf)
    times = pd.DataFrame(
        [
            ("a", 0, 10.0), ("b", 0, 20.0), ("c", 0, 50.0),
            ("a", 1, math.inf), ("b", 1, 30.0), ("c", 1, 45.0),
            ("a", 2, 8.0), ("a", 2, 5.0), ("b", 2, 5.0), ("c", 2, math.inf),
        ],
        columns=["variant", "seed", "time"],
    )  # fmt: skip
    ratios = stats.performance_ratios(times)
    expected = {"a": [1.0, math.inf, 1.0], "b": [2.0, 1.0, 1.0], "c": [math.inf, 1.5, math.inf]}
    for variant, values in expected.items():
        assert ratios[variant].tolist() == values  # c on seed 0: 5x the fastest -> inf
    profile = stats.performance_profile(times, taus=[1.0, 1.5, 2.0, 4.0]).pivot(
        index="tau", columns="variant", values="rho"
    )
    assert profile.loc[1.0].tolist() == pytest.approx([2 / 3, 2 / 3, 0])
    assert profile.loc[2.0].tolist() == pytest.approx([2 / 3, 1, 1 / 3])
    fine = stats.performance_profile(times, taus=np.linspace(1, 4, 30001))
    for variant, group in fine.groupby("variant"):
        numeric = np.trapezoid(group["rho"], group["tau"]) / 3
        assert stats.profile_scores(times)[variant] == pytest.approx(numeric, abs=1e-3)


def _half_finished(experiment: Path, tmp_path: Path) -> Path:
    """A copy of the experiment caught mid-sweep: trial 8 running (a directory without
    status.json), 9 queued (WAITING), 10 complete in the study with its directory gone, 11 a
    directory the study does not know (no status, no trial.json), and a torn last line in
    trial 1's metrics."""
    exp_dir = _copy(experiment, tmp_path)
    study = optuna.load_study(study_name=EXPERIMENT, storage=_storage(exp_dir / "study.journal"))
    attrs = {"variant": "none", "stage": "tune", "seed": 0, "slot": "none/8"}
    study.enqueue_trial({"phases.0.lr": 3e-2}, user_attrs=attrs)
    assert study.ask().number == 8  # a worker claimed it: RUNNING
    study.enqueue_trial({"phases.0.lr": 4e-2}, user_attrs={**attrs, "slot": "none/9"})
    shutil.copytree(exp_dir / "0", exp_dir / "8")
    info = json.loads((exp_dir / "0" / "trial.json").read_text())
    (exp_dir / "8" / "trial.json").write_text(json.dumps({**info, "trial": 8, "attempts": [8]}))
    (exp_dir / "8" / "status.json").unlink()
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=5.0))
    shutil.copytree(exp_dir / "3", exp_dir / "11")
    (exp_dir / "11" / "status.json").unlink()
    (exp_dir / "11" / "trial.json").unlink()
    with open(exp_dir / "1" / "metrics.jsonl", "a") as f:
        f.write('{"phase": 2, "step": 17, "train/lo')  # a crash mid-line
    return exp_dir


def test_a_half_finished_experiment_is_read_and_what_is_missing_is_reported(experiment, tmp_path):
    exp_dir = _half_finished(experiment, tmp_path)
    assert results.is_stale(exp_dir)
    with pytest.warns(UserWarning, match="WAITING"):
        runs = results.load_runs(exp_dir).set_index("trial")
    report = results.load_report(exp_dir)
    assert runs["status"].to_dict() == {
        **dict(enumerate(["complete"] * 4 + ["diverged", "failed", "complete"])),
        8: "running",
        9: "waiting",
        10: "complete",
        11: "missing",
    }
    # a directory without trial.json is never written by the harness: its variant is not guessed
    assert not runs.loc[10, "has_dir"] and runs.loc[11, "variant"] == "unknown"
    missing = "\n".join(report.missing)
    for text in (
        "trial 8: directory without status.json",
        "WAITING in the study (not started): trials 9",
        "trial 10: study trial (COMPLETE) has no directory",
        "trial 11: no trial.json",
        "trial 11: directory without status.json",
    ):
        assert text in missing
    assert report.torn == ["trial 1: metrics.jsonl torn last line 17 dropped"]
    curves = results.load_curves(exp_dir)
    before = results.load_curves(experiment)
    assert (curves["trial"] == 1).sum() == (before["trial"] == 1).sum()
    assert not results.is_stale(exp_dir)


def test_committed_tables_are_read_without_their_trial_directories(experiment, tmp_path):
    exp_dir = tmp_path / EXPERIMENT
    exp_dir.mkdir()
    for name in (results.CURVES, results.RUNS, results.LAYERS, results.REFERENCE, "sweep.json"):
        shutil.copy(experiment / name, exp_dir / name)
    assert not results.is_stale(exp_dir)
    pd.testing.assert_frame_equal(results.load_runs(exp_dir), results.load_runs(experiment))
    assert len(results.load_curves(exp_dir)) == len(results.load_curves(experiment))
    (exp_dir / results.LAYERS).unlink()  # never "collected" into empty tables
    with pytest.raises(results.ResultsError, match="layers.parquet: missing, and no trial"):
        results.load_layers(exp_dir)
    assert len(results.load_curves(exp_dir)) == len(results.load_curves(experiment))


def test_collect_cli_errors_name_the_path(tmp_path, capsys):
    assert results.main(["collect", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope'}: no such experiment directory\n"
    (tmp_path / "empty").mkdir()
    assert results.main(["collect", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: {tmp_path / 'empty'}: not an experiment") and err.count("\n") == 1
    )


@pytest.mark.slow
def test_collect_command_line(experiment, tmp_path):
    exp_dir = _copy(experiment, tmp_path)
    for name in (results.CURVES, results.RUNS):
        (exp_dir / name).unlink()
    done = subprocess.run(
        [sys.executable, "-m", "ablations.results", "collect", str(exp_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "7 trials (5 complete, 1 diverged, 1 failed)" in done.stdout
    assert len(pd.read_parquet(exp_dir / results.RUNS)) == 7


# --- notebooks ----------------------------------------------------------------------------------


def test_committed_notebooks_have_parameters_and_no_outputs():
    import nbformat

    for name in (*figures.CLAIM_NOTEBOOKS, *figures.MAP_NOTEBOOKS, *figures.EVERY_EXPERIMENT):
        nb = nbformat.read(figures.NOTEBOOKS / f"{name}.ipynb", as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, name
        for key in ("experiment =", "results_dir =", "figures_dir ="):
            assert key in tagged[0].source, (name, key)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), name
        source = "".join(c.source for c in code)
        assert "from ablations import results\n" in source, name  # the tables' one reader
        assert re.search(r"from ablations\.analysis import (\w+, )*figures", source), name
        assert "read_parquet" not in source and ".jsonl" not in source  # only ablations.results


def test_plan_runs_each_notebook_on_its_experiment_and_skips_absent_ones(experiment, tmp_path):
    jobs, skipped = figures.plan(experiment.parent)
    assert jobs == [figures.Job("compare_variants", EXPERIMENT)]
    assert [s.split(":")[0] for s in skipped] == [f"{n}.ipynb" for n in figures.CLAIM_NOTEBOOKS]
    for name in figures.CLAIM_NOTEBOOKS:
        (tmp_path / name).mkdir()
        (tmp_path / name / "sweep.json").write_text("{}")
    jobs, skipped = figures.plan(tmp_path, only=["figure3_decay", "absent"])
    assert jobs == [
        figures.Job("figure3_decay", "figure3_decay"),
        figures.Job("compare_variants", "figure3_decay"),
    ]
    assert skipped == [f"--experiment absent: no experiment directory in {tmp_path}"]
    assert figures.main(["run", "--results", str(tmp_path / "nope")]) == 2


@pytest.mark.slow
def test_every_notebook_runs_in_a_real_kernel_and_writes_its_figures(experiment, tmp_path):
    import nbformat

    out, executed = tmp_path / "figures", tmp_path / "executed"
    messages: list[str] = []
    assert figures.run(experiment.parent, out, executed_dir=executed, log=messages.append) == 0
    assert any(m.startswith("figure2_prenorm.ipynb: skipped") for m in messages)
    for name in figures.CLAIM_NOTEBOOKS:  # the claim notebooks, pointed at the tiny experiment
        figures.execute(
            figures.Job(name, EXPERIMENT), experiment.parent, out, executed_dir=executed
        )
    pngs = {p.name: p.stat().st_size for p in (out / EXPERIMENT).glob("*.png")}
    expected = {
        "figure2_prenorm.png",
        "figure3_decay.png",
        "figure3_decay_lr.png",
        "bias_correction.png",
        "bias_correction_divergence.png",
        *(f"compare_variants_{p}.png" for p in ("loss", "final", "divergence", "trust_ratio")),
        "compare_variants_profile.png",
    }
    assert set(pngs) == expected and min(pngs.values()) > 10_000
    for path in executed.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], path.name
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert f'experiment = "{EXPERIMENT}"' in injected[0].source


@pytest.mark.slow
def test_the_comparison_notebook_runs_on_a_half_finished_experiment(experiment, tmp_path):
    exp_dir = _half_finished(experiment, tmp_path)
    figures.execute(figures.Job("compare_variants", EXPERIMENT), exp_dir.parent, tmp_path / "out")
    assert len(list((tmp_path / "out" / EXPERIMENT).glob("compare_variants_*.png"))) == 5


def test_difference_is_welchs_interval():
    a, b = np.array([6.10, 6.12, 6.09, 6.15]), np.array([6.20, 6.31, 6.25])
    delta, low, high, p = stats.difference(a, b)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    from scipy.stats import t

    half = t.ppf(0.975, dof) * math.sqrt(va + vb)
    assert delta == pytest.approx(a.mean() - b.mean())
    assert (low, high) == pytest.approx((delta - half, delta + half))
    assert p == pytest.approx(2 * t.sf(abs(delta) / math.sqrt(va + vb), dof))
    assert math.isnan(stats.difference([1.0], b)[1])


def test_paired_difference_pairs_by_seed():
    runs = pd.DataFrame(
        {
            "variant": ["a", "a", "a", "b", "b", "b", "b"],
            "seed": [1, 2, 3, 1, 2, 3, 4],
            "stage": ["seed"] * 7,
            "status": ["complete"] * 6 + ["complete"],
            "final_val_mlm_loss": [6.0, 6.2, 5.9, 6.1, 6.25, 6.02, 9.0],
        }
    )
    d = np.array([6.0 - 6.1, 6.2 - 6.25, 5.9 - 6.02])  # seed 4 has no partner
    got = stats.paired_difference(runs, "a", "b")
    half = 4.302652729911275 * d.std(ddof=1) / math.sqrt(3)  # t(0.975, 2 dof)
    assert got["n"] == 3
    assert got["mean"] == pytest.approx(d.mean())
    assert (got["low"], got["high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert stats.paired_difference(runs, "a", "zzz")["n"] == 0


@pytest.mark.slow
def test_committed_figure2_regenerates_from_the_committed_tables(tmp_path):
    """The committed tables of the default sweep (no trial directories) still feed the notebook
    that draws NVIDIA's Figure 2, in a real kernel."""
    committed = REPO / "reproduction" / "figure2_prenorm"
    exp_dir = tmp_path / "results" / "figure2_prenorm"
    exp_dir.mkdir(parents=True)
    for path in committed.iterdir():
        if path.is_file():
            shutil.copy(path, exp_dir / path.name)
    out = tmp_path / "figures"
    figures.execute(figures.Job("figure2_prenorm", "figure2_prenorm"), exp_dir.parent, out)
    png = out / "figure2_prenorm" / "figure2_prenorm.png"
    assert png.stat().st_size > 20_000
    runs = results.load_runs(exp_dir)
    assert len(runs) == 6 and set(runs["status"]) == {"complete"}


# --- the report command -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "baseline"),
    [
        ("reproduction/figure2_prenorm", None),
        ("reproduction/eps_regime", "prenorm=clip,bias_correction=true,eps=1e-06"),
    ],
)
def test_report_latex_compiles_with_pdflatex(folder, baseline, tmp_path, capsys):
    """``report --format latex`` of committed studies whose headers and variants hold ``_``,
    ``%``, ``=`` and Unicode minus signs: a booktabs tabular that a real pdfLaTeX compiles (the
    unescaped table of before did not: ``%`` commented out the rest of each header row). Without
    pdflatex on the machine the TeX-level check still runs: no unescaped special character and
    nothing outside ASCII."""
    from ablations.__main__ import main as cli

    args = ["report", folder, "--format", "latex"]
    assert cli([*args, *(["--baseline", baseline] if baseline else [])]) == 0
    tex = capsys.readouterr().out
    assert "\\toprule" in tex and "\\bottomrule" in tex
    body = re.sub(r"\\[a-z]+(\{[^}]*\})?", "", tex)  # drop control words like \toprule{..}
    assert not re.search(r"(?<!\\)[_%#^~]", body), tex
    rows = [line for line in tex.splitlines() if line.endswith("\\\\")]
    assert len(rows) >= 3 and {len(re.split(r"(?<!\\)&", r)) for r in rows} == {5}, tex
    assert tex.isascii(), tex
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed (.ci/run installs texlive-latex-recommended)")
    doc = tmp_path / "table.tex"
    doc.write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[landscape]{geometry}\n"
        f"\\begin{{document}}\n{tex}\n\\end{{document}}\n"
    )
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "table.pdf").stat().st_size > 0


def test_report_prints_the_stats_functions_numbers(experiment, capsys):
    """``python -m ablations report``: per variant the summary of ``stats.summarize`` and the
    paired difference of ``stats.paired_difference`` against the baseline, in three formats."""
    import io

    from ablations.__main__ import main as cli

    runs = results.load_runs(experiment)
    assert cli(["report", str(experiment), "--baseline", "none", "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("variant")
    summary = stats.summarize(runs, "final_val_mlm_loss")
    for variant in summary.index:
        row, s = table.loc[str(variant)], summary.loc[variant]
        for col in ("runs", "complete", "diverged"):
            assert row[col] == s[col], (variant, col)
        assert row["seeds"] == s["n"]
        assert row["mean"] == pytest.approx(s["mean"], nan_ok=True)
        assert row["ci_low"] == pytest.approx(s["ci_low"], nan_ok=True)
        d = stats.paired_difference(runs, str(variant), "none")
        if str(variant) == "none":
            assert math.isnan(row["delta"]) and row["pairs"] == 0
        else:
            assert row["pairs"] == d["n"] >= 1
            assert (row["delta"], row["delta_low"], row["delta_high"]) == pytest.approx(
                (d["mean"], d["low"], d["high"]), nan_ok=True
            )
    assert cli(["report", str(experiment), "--baseline", "none"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("| variant") and "− none (paired)" in md
    assert f"{summary.loc['clip', 'mean']:.4f}" in md
    assert cli(["report", str(experiment), "--format", "latex"]) == 0
    assert "\\begin{tabular}" in capsys.readouterr().out
    for bad, key in (
        (["--baseline", "nope"], "--baseline 'nope'"),
        (["--metric", "x"], "--metric"),
    ):
        assert cli(["report", str(experiment), *bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {key}"), err
