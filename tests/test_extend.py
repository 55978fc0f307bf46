"""The self-extending design (``extend:``, ``ablations.sweep.extend``; issue 20 item 3).

The rule on synthetic outcomes, as a table: an optimum or a first failing value at an end of a
curve adds the next value beyond it (for that curve only, every seed, with its reason), an
interior one adds nothing, a pending curve waits, the budget ends it, and seeds go to paired
comparisons wider than the target. Decisions are a function of the results (order-free). The
strict config errors. Outcomes read back from Optuna trials. And a real local sweep that
extends itself once, records why, and adds nothing more when run again.
"""

from __future__ import annotations

import math
import random

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from sweep_files import TINY, python, study, workload, write_sweep

from ablations.config import ConfigError, build
from ablations.core.status import Status
from ablations.results.outcomes import DIVERGED, FAILED_TO_TRAIN, TRAINED
from ablations.sweep import extend
from ablations.sweep.experiment import Experiment
from ablations.sweep.extend import Result, decide, results_of
from ablations.sweep.plan import resolve_experiment

LR = "phases.0.lr"


def make_plan(seeds: int = 2, **ext):
    raw = {
        "workload": TINY,
        "variants": {
            "named": {"base": {}, "off": {"optimizer.overrides.bias_correction": False}},
            "grid": {LR: [1e-3, 2e-3, 4e-3]},
        },
        "seeds": seeds,
        "extend": {"axis": LR, "factor": 2.0, "max_steps": 2, **ext},
    }
    return resolve_experiment("e", build(Experiment, raw, "experiments.e"))


def states(plan, variants, seeds=2, state="done"):
    return {f"{v}/seed/{s}": state for v in variants for s in range(seeds)}


def base_slots(plan, seeds=2):
    return states(plan, plan.variants, seeds)


def curve(name, scores, outcomes=None, seeds=2):
    """Results of variant ``name`` at each lr: {lr: score} (every seed the same score, or a
    list per seed)."""
    out = []
    for lr, score in scores.items():
        values = score if isinstance(score, list) else [score] * seeds
        for s, v in enumerate(values):
            outcome = (outcomes or {}).get(lr, TRAINED)
            out.append(Result(f"{name},lr={lr:g}", s, v, outcome))
    return out


FLAT = {0.001: 6.3, 0.002: 6.2, 0.004: 6.25}


@pytest.mark.parametrize(
    ("bracket", "base", "off", "added"),
    [
        # optimum inside both curves: nothing to add
        (["optimum"], FLAT, FLAT, set()),
        # optimum at the top of base's curve only: base gets lr 0.008, off nothing
        (["optimum"], {0.001: 6.3, 0.002: 6.2, 0.004: 6.1}, FLAT, {"base,lr=0.008"}),
        # at the bottom: the next value down
        (["optimum"], FLAT, {0.001: 6.0, 0.002: 6.2, 0.004: 6.3}, {"off,lr=0.0005"}),
        # a diverged seed scores inf: the top's mean is not the optimum
        (["optimum"], {0.001: 6.3, 0.002: 6.2, 0.004: [6.0, math.inf]}, FLAT, set()),
        # failure: no failing value on either curve, so both look above their top
        (["failure"], FLAT, FLAT, {"base,lr=0.008", "off,lr=0.008"}),
    ],
    ids=["inside", "top", "bottom", "diverged-top", "no-failure"],
)
def test_an_edge_adds_the_next_value_beyond_it_for_that_curve_only(bracket, base, off, added):
    plan = make_plan(bracket=bracket)
    results = curve("base", base) + curve("off", off)
    got = decide(plan, results, base_slots(plan))
    assert {slot.variant for slot, _ in got} == added
    for variant in added:  # every seed of the added value, each with its reason
        mine = [(slot, why) for slot, why in got if slot.variant == variant]
        assert sorted(slot.seed for slot, _ in mine) == [0, 1]
        assert all(why and LR in why for _, why in mine)


def test_the_first_failing_value_brackets_the_edge_or_moves_it_down():
    plan = make_plan(bracket=["failure"])
    failed_top = {0.004: FAILED_TO_TRAIN}
    all_fail = {0.001: DIVERGED, 0.002: DIVERGED, 0.004: DIVERGED}
    results = curve("base", FLAT, failed_top) + curve("off", FLAT, all_fail)
    got = decide(plan, results, base_slots(plan))
    assert {slot.variant for slot, _ in got} == {"off,lr=0.0005"}  # base is bracketed
    (why,) = {why for _, why in got}
    assert "first failing value at the bottom" in why


def test_a_curve_with_a_pending_slot_waits_and_the_budget_ends_the_extension():
    plan = make_plan()
    top = {0.001: 6.3, 0.002: 6.2, 0.004: 6.1}
    slots = base_slots(plan)
    slots["base,lr=0.004/seed/1"] = "pending"
    assert decide(plan, curve("base", top) + curve("off", FLAT), slots) == []
    slots["base,lr=0.004/seed/1"] = "retry"  # preempted, retry not yet queued: unfinished
    assert decide(plan, curve("base", top) + curve("off", FLAT), slots) == []
    # both steps up active already and the optimum still at the top: max_steps reached
    slots = {**base_slots(plan), **states(plan, ["base,lr=0.008", "base,lr=0.016"])}
    steep = {**top, 0.008: 6.0, 0.016: 5.9}
    assert decide(plan, curve("base", steep) + curve("off", FLAT), slots) == []
    # one step up active: the second is next
    slots = {**base_slots(plan), **states(plan, ["base,lr=0.008"])}
    got = decide(plan, curve("base", {**top, 0.008: 6.0}) + curve("off", FLAT), slots)
    assert {slot.variant for slot, _ in got} == {"base,lr=0.016"}


def test_a_settled_optimum_gets_best_seeds_at_its_best_value_only():
    plan = make_plan(seeds=1, best_seeds=3)
    top = {0.001: 6.3, 0.002: 6.2, 0.004: 6.1}
    slots = base_slots(plan, seeds=1)
    got = decide(plan, curve("base", FLAT, seeds=1) + curve("off", top, seeds=1), slots)
    # base's optimum is inside: seeds 1 and 2 at lr 0.002; off's is at the top: a new value
    assert {slot.key for slot, _ in got} == {
        "base,lr=0.002/seed/1",
        "base,lr=0.002/seed/2",
        "off,lr=0.008/seed/0",
    }
    best = [why for slot, why in got if slot.variant == "base,lr=0.002"]
    assert all("best value of base" in why and "seeds up to 3" in why for why in best)
    slots.update({"base,lr=0.002/seed/1": "done", "base,lr=0.002/seed/2": "done"})
    slots["off,lr=0.008/seed/0"] = "pending"
    results = curve("base", FLAT, seeds=1) + curve("off", top, seeds=1)
    results += [Result("base,lr=0.002", s, 6.2, TRAINED) for s in (1, 2)]
    assert decide(plan, results, slots) == []  # base settled, off waits for its new value
    assert decide(plan, [], base_slots(plan, seeds=1)) == []  # nothing finished: no optimum


def test_decisions_are_a_function_of_the_results_not_their_order():
    plan = make_plan(bracket=["optimum", "failure"])
    results = curve("base", {0.001: 6.3, 0.002: 6.2, 0.004: 6.1}) + curve(
        "off", {0.001: 6.0, 0.002: 6.2, 0.004: 6.3}, {0.004: DIVERGED}
    )
    want = decide(plan, results, base_slots(plan))
    assert want  # something to decide
    for seed in range(5):
        shuffled = results[:]
        random.Random(seed).shuffle(shuffled)
        slots = list(base_slots(plan).items())
        random.Random(seed).shuffle(slots)
        assert decide(plan, shuffled, dict(slots)) == want


@pytest.mark.parametrize(
    ("off_scores", "seeds_taken", "added"),
    [
        ([6.20, 6.30], 2, {"off,lr=0.002/seed/2", "base,lr=0.002/seed/2"}),  # wide: a seed
        ([6.201, 6.202], 2, set()),  # differences nearly equal: narrow enough
        ([6.20, 6.30, 6.15, 6.35], 4, set()),  # wide, but max_seeds reached
    ],
    ids=["wide", "narrow", "at-max"],
)
def test_seeds_go_to_paired_comparisons_wider_than_the_target(off_scores, seeds_taken, added):
    plan = make_plan(bracket=[], against="base", half_width=0.02, max_seeds=4)
    n = len(off_scores)
    base = {0.001: 6.3, 0.002: [6.2] * n, 0.004: 6.25}
    off = {0.001: 6.3, 0.002: off_scores, 0.004: 6.25}
    slots = {**base_slots(plan), **states(plan, ["base,lr=0.002", "off,lr=0.002"], seeds_taken)}
    results = curve("base", base) + curve("off", off)
    results = [r for r in results if r.variant.endswith("0.002") or r.seed < 2]
    got = decide(plan, results, slots)
    assert {slot.key for slot, _ in got} == added
    for _, why in got:
        assert "95% half-width" in why and "off,lr=0.002 - base,lr=0.002" in why
    half = extend.paired_half_width([o - 6.2 for o in off_scores])
    assert (half > 0.02) == (off_scores != [6.201, 6.202])


@pytest.mark.parametrize(
    ("ext", "message"),
    [
        ({"axis": "phases.0.warmup"}, "experiments.e.extend.axis: expected a path of"),
        ({"factor": 1.0}, "experiments.e.extend.factor: expected a number > 1"),
        ({"against": "nobody", "half_width": 0.01, "max_seeds": 4}, "extend.against: expected"),
        ({"against": "base", "half_width": 0.01, "max_seeds": 2}, "extend.max_seeds: expected"),
        ({"against": "base"}, "experiments.e.extend.against: expected 'against', 'half_width'"),
        ({"bracket": ["edge"]}, "experiments.e.extend.bracket[0]: expected one of"),
    ],
    ids=["axis", "factor", "against", "max_seeds", "partial", "bracket"],
)
def test_a_bad_extend_block_is_one_line_naming_its_key(ext, message):
    with pytest.raises(ConfigError) as e:
        make_plan(**ext)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_candidates_continue_the_axis_beyond_each_end():
    plan = make_plan()
    lrs = sorted({float(v[LR]) for v in plan.candidates.values()})
    assert lrs == [0.00025, 0.0005, 0.008, 0.016]
    assert set(plan.variants).isdisjoint(plan.candidates)
    assert "off,lr=0.016" in plan.candidates
    assert plan.config("off,lr=0.016", {}, 0).phases[0].lr == 0.016


def test_outcomes_are_read_from_the_trials():
    plan = make_plan()
    dist = optuna.distributions.FloatDistribution(0, 1)

    def trial(final, values, status=Status.COMPLETE, state=TrialState.COMPLETE):
        attrs = {"variant": "base,lr=0.001", "seed": 0, "stage": "seed", "status": status}
        if final is not None:
            attrs["final"] = final
        return optuna.trial.create_trial(
            state=state,
            value=final if state == TrialState.COMPLETE else None,
            params={"x": 0.5},
            distributions={"x": dist},
            user_attrs=attrs,
            intermediate_values=values,
        )

    got = results_of(
        [
            trial(6.2, {10: 6.5, 20: 6.2}),  # trained
            trial(6.6, {10: 6.5, 20: 6.6}),  # above the line 6.51: failed to train
            trial(6.4, {10: 6.3, 20: 6.4}),  # rose 0.1 from its best: failed to train
            trial(None, {10: 6.5}, Status.DIVERGED, TrialState.FAIL),
            trial(None, {10: 6.5}, Status.PREEMPTED, TrialState.FAIL),  # not finished
        ],
        plan,
        6.51,
    )
    assert [r.outcome for r in got] == [TRAINED, FAILED_TO_TRAIN, FAILED_TO_TRAIN, DIVERGED]
    assert got[-1].value == math.inf


@pytest.mark.slow
def test_a_real_sweep_extends_itself_once_and_records_why(tmp_path, embedded_cache):
    """Eight steps at lr 1e-4 and 1e-3: the larger is better, so the optimum is at the top;
    one step ×10 (max_steps 1) adds lr 0.01 and the budget then ends it."""
    cache, _ = embedded_cache
    exp = {
        "workload": workload(cache),
        "variants": {"grid": {LR: [1e-4, 1e-3]}},
        "seeds": 1,
        "extend": {"axis": LR, "factor": 10.0, "max_steps": 1},
    }
    file = write_sweep(tmp_path, {"edge": exp}, local={"workers": 1})
    done = python("sweep", "--file", str(file), "--local", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    s = study(tmp_path / "results" / "edge")
    trials = {t.user_attrs["variant"]: t for t in s.get_trials()}
    assert set(trials) == {"lr=0.0001", "lr=0.001", "lr=0.01"}
    assert all(t.state == TrialState.COMPLETE for t in trials.values())
    assert trials["lr=0.001"].value < trials["lr=0.0001"].value  # the premise: top is best
    why = trials["lr=0.01"].user_attrs["added_by"]
    assert "optimum at the top" in why and "next phases.0.lr=0.01" in why
    assert s.user_attrs[extend.RECORD] == [{"slot": "lr=0.01/seed/0", "reason": why}]
    again = python("sweep", "--file", str(file), "--local", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(study(tmp_path / "results" / "edge").get_trials()) == 3  # budget: nothing more
    runs = tmp_path / "results" / "edge" / "runs.parquet"
    if runs.exists():  # collected by the sweep: the added trial is a row like the others
        import pandas as pd

        assert len(pd.read_parquet(runs)) == 3
    summary = yaml.safe_load((tmp_path / "results" / "edge" / "sweep.json").read_text())
    assert summary["experiment"]["extend"]["factor"] == 10.0
