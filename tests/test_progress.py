"""What ``train`` shows while it runs (``log.progress``): status lines in log files, Lightning's
progress bar in a terminal, nothing on request; and the values they show are the run's.

Real training of the tiny BERT on ``tests/synthetic.py`` (as ``test_train.py``); the terminal is a
real pseudo-terminal. Tests that start processes are marked ``slow``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import synthetic
import yaml
from terminal import on_terminal

from ablations.__main__ import main
from ablations.config import RunConfig
from ablations.run.curves import Curves
from ablations.run.progress import duration
from ablations.run.train import train

REPO = Path(__file__).resolve().parents[1]
PHASE = {"global_batch": 16, "micro_batch": 8, "seq_len": 32, "max_predictions": 5}
#: ``phase 1 step 3/10 (30%) loss 6.754 lr 1.4e-02 12.5 steps/s eta 1s``
STATUS = re.compile(
    r"^phase (\d) step (\d+)/(\d+) \((\d+)%\) loss (\S+) lr (\S+) (\S+) steps/s eta (\w+)$"
)


def config(**log) -> RunConfig:
    """Two phases (6 + 4 steps; accumulation 2 in phase 1) with ``log`` settings."""
    return RunConfig.from_dict(
        {
            "model": {"size": "tiny"},
            "data": {"vocab_size": 512},
            "phases": [
                {**PHASE, "steps": 6, "lr": 2e-2, "warmup": 0.25},
                {**PHASE, "micro_batch": 16, "steps": 4, "lr": 1e-2, "warmup": 0.25},
            ],
            "log": {"layer_every": 3, "val_every": 4, "val_batches": 2, **log},
            "checkpoint_every": 3,
        }
    )


def status_lines(err: str) -> list[re.Match]:
    found = [STATUS.match(line) for line in err.splitlines() if line.startswith("phase ")]
    assert all(found), err
    return found


def _command(cfg: RunConfig, tmp_path: Path) -> list[str]:
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.to_dict()))
    return [
        *(sys.executable, "-m", "ablations", "train", "--config", str(cfg_path)),
        *("--run-dir", str(tmp_path / "run"), "--datamodule", "synthetic:make"),
    ]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}",
        "OMP_NUM_THREADS": "1",
    }


@pytest.mark.slow
def test_a_log_file_gets_status_lines_with_the_run_s_numbers(tmp_path):
    """``auto`` with stderr a pipe (a SLURM or worker log): one line per step at interval 0,
    with the step, loss and lr of that step's ``metrics.jsonl`` line; stdout is the result."""
    cfg = config(status_every_seconds=0)
    assert cfg.log.progress == "auto"
    proc = subprocess.run(
        _command(cfg, tmp_path), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["status"] == "complete"  # nothing else on stdout
    assert "\r" not in proc.stderr and "it/s" not in proc.stderr  # no bar in a log file

    metrics = Curves(tmp_path / "run").read("metrics")
    shown = status_lines(proc.stderr)
    assert [int(m[2]) for m in shown] == [r["step"] for r in metrics] == list(range(1, 11))
    for m, record in zip(shown, metrics, strict=True):
        phase, step, total, percent, loss, lr, rate, eta = m.groups()
        assert int(phase) == record["phase"] and int(total) == 10
        assert int(percent) == 100 * record["step"] // 10
        assert float(loss) == pytest.approx(record["train/loss"], rel=1e-3)
        assert lr == f"{record['optim/lr']:.1e}"
        assert float(rate) > 0 and re.fullmatch(r"\d+s|\d+m\d\ds|\d+h\d\dm", eta)


def test_status_lines_at_the_first_step_every_interval_and_the_phase_end(tmp_path, capsys):
    cfg = config(progress="lines", status_every_seconds=3600)
    assert train(cfg, tmp_path, synthetic.make)["status"] == "complete"
    shown = status_lines(capsys.readouterr().err)
    assert [(int(m[1]), int(m[2])) for m in shown] == [(1, 1), (1, 6), (2, 7), (2, 10)]


def test_progress_none_shows_nothing(tmp_path, capsys):
    cfg = config(progress="none", status_every_seconds=0)
    assert train(cfg, tmp_path, synthetic.make)["status"] == "complete"
    err = capsys.readouterr().err
    assert not re.search(r"^phase \d", err, re.MULTILINE) and "steps/s" not in err, err


def test_a_run_resumes_under_other_display_settings(tmp_path):
    """``log.progress`` and ``status_every_seconds`` are display, not part of the run (nor is
    the former ``log.progress_bar`` in an older run directory's config.yaml)."""
    first = train(config(progress="none"), tmp_path, synthetic.make)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    saved["log"]["progress_bar"] = False
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    again = train(config(progress="bar", status_every_seconds=5), tmp_path, synthetic.make)
    assert again == first


BAD = [
    ("log.progress=fancy", "error: log.progress: expected one of ['auto', 'bar', 'lines', 'none']"),
    ("log.progress=true", "error: log.progress: expected one of"),
    ("log.status_every_seconds=-1", "error: log.status_every_seconds: expected a number >= 0"),
    ("log.status_every_seconds=.inf", "error: log.status_every_seconds: expected a number >= 0"),
    ("log.status_every_seconds=soon", "error: log.status_every_seconds: expected a number"),
    ("log.progress_bar=true", "error: log.progress_bar: unknown key"),
]


@pytest.mark.parametrize(("override", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_progress_setting_is_one_line_and_exit_2(tmp_path, capsys, override, message):
    run_dir = tmp_path / "run"
    assert main(["train", "--run-dir", str(run_dir), override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not run_dir.exists()


@pytest.mark.slow
def test_a_terminal_gets_lightning_s_progress_bar(tmp_path):
    """stderr on a real pseudo-terminal (160 columns): Lightning's tqdm bar over each phase's
    steps with step, loss and lr; no status lines; stdout (a pipe) is only the result."""
    cfg = config(status_every_seconds=0)
    code, out, text = on_terminal(_command(cfg, tmp_path), cwd=REPO, env=_env())
    assert code == 0, text[-3000:]
    assert json.loads(out)["status"] == "complete"

    final = [m.group(0) for m in re.finditer(r"phase (\d): 100%\|█+\| (\d+)/\2 [^\r\n]*", text)]
    assert final, text
    assert any(s.startswith("phase 1: 100%|") and "6/6" in s for s in final), final
    assert any(s.startswith("phase 2: 100%|") and "4/4" in s for s in final), final
    last = Curves(tmp_path / "run").read("metrics")[-1]
    assert re.search(rf"steps/s, step=10, loss={last['train/loss']:.4g}, lr=0\.00e\+00\]", text)
    assert not STATUS.search(text) and "phase 1 step" not in text


def test_durations_are_short():
    assert [duration(s) for s in (0.4, 45, 121, 3599.6, 11220)] == [
        "0s",
        "45s",
        "2m01s",
        "1h00m",
        "3h07m",
    ]
