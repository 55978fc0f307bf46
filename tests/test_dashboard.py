"""``make dashboard`` (issue 21, item 2): a results folder alone is enough (a committed study
needs no guessed sweep file), no experiment named lists them, and a write the dashboard tries is
answered 403 with one log line while the journal stays byte for byte as it was."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
from sweep_files import REPO, wait_for

from ablations.core.journal import open_journal


def _make(*args: str) -> list[str]:
    return [
        "make",
        "-s",
        "--no-print-directory",
        "-C",
        str(REPO),
        "-o",
        "setup",
        "dashboard",
        *args,
    ]


def _study(results: Path, name: str) -> Path:
    exp_dir = results / name
    exp_dir.mkdir(parents=True)
    study = optuna.create_study(study_name=name, storage=open_journal(exp_dir))
    for lr in (1e-3, 3e-3):
        trial = study.ask({"phases.0.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2)})
        trial.report(7.0, 10)
        study.tell(trial, 6.0 + lr)
    return exp_dir / "study.journal"


def test_a_folder_alone_lists_its_experiments_and_the_committed_ones_too(tmp_path):
    _study(tmp_path, "b_exp")
    _study(tmp_path, "a_exp")
    out = subprocess.run(_make(f"RESULTS={tmp_path}"), capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[1:] == ["  a_exp", "  b_exp"]
    committed = subprocess.run(
        _make("RESULTS=reproduction/regime_map"), capture_output=True, text=True, check=True
    )
    assert "  lr_sensitivity" in committed.stdout.splitlines()
    bad = subprocess.run(
        _make(f"RESULTS={tmp_path}", "EXPERIMENT=nope"), capture_output=True, text=True
    )
    assert bad.returncode != 0
    assert [x for x in bad.stderr.splitlines() if x.startswith("error: ")] == [
        "error: --experiment nope: expected one of ['a_exp', 'b_exp']"
    ]


@pytest.mark.slow
def test_a_refused_write_is_403_and_one_log_line_and_the_journal_is_untouched(tmp_path):
    journal = _study(tmp_path, "exp")
    before = journal.read_bytes()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        _make(f"RESULTS={tmp_path}", "EXPERIMENT=exp", f"PORT={port}"),
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def listed():
            try:
                with urllib.request.urlopen(f"{url}/api/studies") as r:
                    return json.loads(r.read())
            except OSError:
                return None

        summaries = wait_for(listed, 90, "optuna-dashboard to answer")["study_summaries"]
        assert [s["study_name"] for s in summaries] == ["exp"]
        with urllib.request.urlopen(f"{url}/api/studies/0") as r:
            trials = json.loads(r.read())["trials"]
        assert [t["intermediate_values"][0]["step"] for t in trials] == [10, 10]
        codes = []
        for method, path in (("POST", "/api/studies"), ("DELETE", "/api/studies/0")):
            body = json.dumps({"study_name": "x", "directions": ["minimize"]}).encode()
            request = urllib.request.Request(
                f"{url}{path}",
                data=body,
                method=method,
                headers={"Content-Type": "application/json"},
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request)
            codes.append(refused.value.code)
            assert "read-only" in json.loads(refused.value.read())["reason"]
        assert codes == [403, 403]
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    refusals = [x for x in err.splitlines() if x.startswith("dashboard: refused")]
    assert refusals == [
        "dashboard: refused create_new_study: the study is read-only here",
        "dashboard: refused delete_study: the study is read-only here",
    ]
    assert "Traceback" not in err and "Exception" not in err
    assert journal.read_bytes() == before


def test_a_committed_journal_without_toggles_is_shown_with_them_and_its_curves():
    """``lr_sensitivity``'s journal predates toggles as parameters: the dashboard's view gives
    every trial its toggles (as ``runs.parquet`` has them) and its validation curve (as
    ``curves.parquet`` has it) as intermediate values, and reads the journal without writing."""
    import pandas as pd

    from ablations.sweep.dashboard import derived

    exp_dir = REPO / "reproduction" / "regime_map" / "lr_sensitivity"
    before = (exp_dir / "study.journal").read_bytes()
    journal = optuna.load_study(study_name=exp_dir.name, storage=open_journal(exp_dir))
    assert all(set(t.params) == {"variant"} for t in journal.trials)  # what it lacked
    view = optuna.load_study(study_name=exp_dir.name, storage=derived(exp_dir))
    runs = pd.read_parquet(exp_dir / "runs.parquet").set_index("trial")
    curves = pd.read_parquet(exp_dir / "curves.parquet")
    curves = curves[curves["metric"].astype(str) == "val/mlm_loss"]
    assert len(view.trials) == len(journal.trials) == len(runs)
    for t in view.trials:
        row = runs.loc[t.number]
        assert t.params["optimizer.preset"] == row["optimizer.preset"]
        assert t.params["phases.0.lr"] == row["phases.0.lr"]
        mine = curves[curves["trial"] == t.number]
        assert t.intermediate_values == dict(zip(mine["step"], mine["value"], strict=True))
        assert t.value == journal.trials[t.number].value
    assert (exp_dir / "study.journal").read_bytes() == before


def test_a_journal_that_has_its_toggles_is_served_live(tmp_path):
    _study(tmp_path, "exp")
    from ablations.sweep.dashboard import derived

    assert derived(tmp_path / "exp") is None  # no sweep.json variants: nothing to re-derive


def test_the_served_trials_credit_toggles_not_the_variant_that_names_them():
    """Parameter importance in the dashboard: the variant is a function of its toggles, so the
    served trials carry the toggles without it (it stays a user attribute), and importance goes
    to the toggles alone."""
    from ablations.sweep.dashboard import DashboardStorage, derived

    exp_dir = REPO / "reproduction" / "regime_map" / "lr_sensitivity"
    served = optuna.load_study(study_name=exp_dir.name, storage=DashboardStorage(derived(exp_dir)))
    trials = served.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert all("variant" not in t.params and t.user_attrs["variant"] for t in trials)
    importance = optuna.importance.get_param_importances(served, target=lambda t: t.value)
    toggles = {k for t in trials for k in t.params}
    assert {"optimizer.preset", "phases.0.lr"} <= set(importance) == toggles
    assert "variant" not in importance
