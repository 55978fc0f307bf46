"""The shared vocabulary and helpers: one status enum whose values are the strings on disk, one
stopping exception, one error-line helper, one JSON reader/writer pair."""

from __future__ import annotations

import json
import pickle

import pandas as pd
import pytest
from sweep_files import REPO

from ablations.core import fileio
from ablations.core.errors import one_line
from ablations.core.status import COLLECTED, RETRIED, STOPPED, Status, StopRun


def test_statuses_are_the_strings_on_disk_of_the_committed_results():
    for report in sorted((REPO / "reproduction").glob("*/collect.json")):
        said = list(json.loads(report.read_text())["statuses"])
        assert said == list(COLLECTED)[: len(said)] and len(said) >= len(COLLECTED) - 1, report
        runs = pd.read_parquet(report.parent / "runs.parquet")
        assert set(runs["status"]) <= set(COLLECTED)
    assert json.dumps({"status": Status.LOST}) == '{"status": "lost"}'
    assert RETRIED < STOPPED and Status.INTERRUPTED in STOPPED


def test_stop_run_carries_its_status_through_pickling():
    stop = pickle.loads(pickle.dumps(StopRun("pruned at step 3", Status.PRUNED)))
    assert stop.status == Status.PRUNED and str(stop) == "pruned at step 3"
    assert StopRun("signal 10 at step 7").status == Status.INTERRUPTED


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "RuntimeError: head detail with tabs last"),
        ({"line": "first"}, "RuntimeError: head"),
        ({"line": "last"}, "RuntimeError: last"),
        ({"typed": False}, "head detail with tabs last"),
        ({"limit": 6}, "RuntimeError: head d"),
    ],
)
def test_one_line(kwargs, expected):
    assert one_line(RuntimeError("head\n\n  detail\twith   tabs\nlast\n"), **kwargs) == expected
    empty = "" if kwargs.get("typed") is False else "RuntimeError"
    assert one_line(RuntimeError(""), **kwargs) == empty


def test_json_pair_writes_strict_json_and_reads_torn_files_only_when_tolerant(tmp_path):
    path = tmp_path / "a.json"
    assert fileio.read_json(path) is None
    fileio.write_json(path, {"loss": float("nan"), "b": [1, float("inf")]})
    assert fileio.read_json(path) == {"loss": None, "b": [1, None]}
    path.write_text('{"status": "comp')  # torn
    assert fileio.read_json(path, tolerant=True) is None
    with pytest.raises(json.JSONDecodeError):
        fileio.read_json(path)
