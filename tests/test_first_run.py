"""A newcomer's first run: ``make sweep`` on a fresh clone trains for real and leaves every
tracked file as it was; the committed reproduction is refused as an output; files respect the
umask; ``collect`` never shrinks a table without ``--force``; the sweep's progress and ETA."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from sweep_files import REPO, TINY, workload
from terminal import interrupt_on_terminal, on_terminal

from ablations import results as tidy
from ablations.core import fileio
from ablations.sweep import progress
from ablations.sweep.spec import load_sweep

VENV = Path(sys.executable).parent.parent


def _clean_env() -> dict[str, str]:
    """No SLURM world and no harness path from the test process: the clone runs its own code."""
    drop = ("SLURM_", "PYTHONPATH", "SLURM_CONF")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def _run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", 'umask 022 && exec "$@"', "bash", *cmd],
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _tracked_changes(clone: Path) -> list[str]:
    out = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=clone,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if not line.startswith("?? ")]


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory, embedded_cache):
    """``git clone`` of this repository, and ``make sweep`` run in it on a tiny sweep file (two
    variants, one seed, 12 steps) with the test environment's venv (``make -o`` keeps make from
    reinstalling it): the clone, the sweep's output and the tracked files' digests before."""
    cache, _ = embedded_cache
    clone = tmp_path_factory.mktemp("fresh") / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    before = _digests(clone / "reproduction")
    sweep = {
        "local": {"workers": 2, "threads_per_worker": 1},
        "retry": {"heartbeat_seconds": 1, "grace_seconds": 30},
        "experiments": {
            "first": {
                "workload": workload(cache, steps=12),
                "variants": {
                    "named": {
                        "clip": {"optimizer.overrides.prenorm": "clip"},
                        "none": {"optimizer.overrides.prenorm": "none"},
                    }
                },
                "seeds": 1,
            }
        },
    }
    (clone / "tiny.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    make = ["make", "-o", f"{VENV}/.stamp", f"VENV={VENV}", "sweep", "SWEEP=tiny.yaml"]
    out = _run([*make, "SWEEP_FLAGS=--local"], clone)
    return clone, out, before


@pytest.mark.slow
def test_make_sweep_on_a_fresh_clone_trains_and_modifies_no_tracked_file(fresh_clone):
    clone, out, before = fresh_clone
    assert out.returncode == 0, out.stdout + out.stderr
    exp = clone / "results" / "first"
    curves = pd.read_parquet(exp / "curves.parquet")
    train = curves[curves["metric"] == "train/loss"]
    assert sorted(train["variant"].astype(str).unique()) == ["clip", "none"]
    for _, steps in train.groupby("trial")["step"]:
        assert sorted(steps) == list(range(1, 13))  # it trained, every step
    # progress: a running trial with its step, then everything done (whether both trials are
    # ever seen running at once depends on the machine's load: 12 steps are short)
    assert re.search(r"first: [01]/2 done, [12] running \[#[01] \d+/12", out.stdout), out.stdout
    assert "first: 2/2 done" in out.stdout
    # nothing tracked changed; the committed reproduction is byte for byte what it was
    assert _tracked_changes(clone) == []
    assert _digests(clone / "reproduction") == before
    # under umask 022 everything the sweep wrote is readable by group and others
    unreadable = [
        str(p.relative_to(clone))
        for p in (clone / "results").rglob("*")
        if p.is_file() and p.stat().st_mode & 0o044 != 0o044
    ]
    assert unreadable == []
    assert (exp / "curves.parquet").stat().st_mode & 0o777 == 0o644


@pytest.mark.slow
def test_commands_on_the_committed_reproduction_are_refused_in_one_line(fresh_clone):
    clone, _, before = fresh_clone
    py = str(VENV / "bin" / "python")
    attempts = [
        [py, "-m", "ablations", "sweep", "--file", "sweeps/nvlamb_cpu.yaml", "--local"]
        + ["--results", "reproduction", "--experiment", "figure2_prenorm"],
        [py, "-m", "ablations", "sweep", "--file", "sweeps/regime_map.yaml", "--local"]
        + ["--results", "reproduction/regime_map", "--experiment", "eps_free"],
        [py, "-m", "ablations.results", "collect", "reproduction/figure2_prenorm"],
        [py, "-m", "ablations.results", "collect", "--force", "reproduction/figure2_prenorm"],
        [py, "-m", "ablations.analysis.compare", "reproduction/figure2_prenorm"]
        + ["--out", "reproduction/figures"],
        [py, "-m", "ablations.analysis.figures", "run", "--results", "reproduction"]
        + ["--out", "reproduction/figures"],
    ]
    for cmd in attempts:
        out = _run(cmd, clone)
        assert out.returncode == 2, (cmd, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (cmd, out.stderr)
        assert "make reproduce" in lines[0]
    assert _tracked_changes(clone) == []
    assert _digests(clone / "reproduction") == before


@pytest.mark.slow
def test_collect_refuses_to_shrink_a_table_and_force_replaces_it(fresh_clone, tmp_path):
    clone, _, _ = fresh_clone
    exp = tmp_path / "first"
    shutil.copytree(clone / "results" / "first", exp)
    runs, curves = (pd.read_parquet(exp / n) for n in ("runs.parquet", "curves.parquet"))
    tables = _digests(exp)
    shutil.rmtree(exp / "1")  # a trial's directory is lost: its curves would be gone
    cmd = [sys.executable, "-m", "ablations.results", "collect", str(exp)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1
    assert re.match(
        rf"error: .*curves.parquet: collect would replace {len(curves)} rows with \d+ .*--force",
        out.stderr,
    ), out.stderr
    assert {k: v for k, v in _digests(exp).items() if not k.startswith("0/")} == {
        k: v for k, v in tables.items() if not k.startswith(("0/", "1/"))
    }
    out = subprocess.run([*cmd, "--force"], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    shrunk = pd.read_parquet(exp / "curves.parquet")
    assert 0 < len(shrunk) < len(curves)
    assert set(shrunk["trial"]) == {0}
    assert len(pd.read_parquet(exp / "runs.parquet")) == len(runs)  # the study still has both


# --- fast ---------------------------------------------------------------------------------------


def test_the_committed_reproduction_is_marked_and_the_default_sweep_writes_elsewhere():
    assert (REPO / "reproduction" / fileio.FROZEN).is_file()
    for name in ("figure2_prenorm", "figure3_decay", "bias_correction", "eps_regime"):
        assert (REPO / "reproduction" / name / "runs.parquet").is_file()
    for file in (REPO / "sweep.yaml", *sorted((REPO / "sweeps").glob("*.yaml"))):
        results = (file.parent / load_sweep(file).results).resolve()
        assert results == (REPO / "results").resolve()
        fileio.check_writable(results / "any")  # not frozen
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "results/x/curves.parquet"], cwd=REPO, check=False
    )
    assert ignored.returncode == 0


def test_frozen_folders_refuse_writes_at_any_depth(tmp_path):
    (tmp_path / "committed").mkdir()
    (tmp_path / "committed" / fileio.FROZEN).write_text("x")
    for path in ("committed", "committed/exp", "committed/exp/3/metrics.jsonl"):
        with pytest.raises(fileio.FrozenError, match="committed.*make reproduce"):
            fileio.check_writable(tmp_path / path)
    fileio.check_writable(tmp_path / "elsewhere" / "exp")


def test_sweep_into_a_frozen_folder_is_one_line_and_creates_nothing(tmp_path, capsys):
    from ablations.__main__ import main

    frozen = tmp_path / "shipped"
    frozen.mkdir()
    (frozen / fileio.FROZEN).write_text("x")
    file = tmp_path / "sweep.yaml"
    experiment = {"workload": TINY, "variants": {"named": {"a": {}}}, "seeds": 1}
    file.write_text(yaml.safe_dump({"experiments": {"e": experiment}}))
    assert main(["sweep", "--file", str(file), "--local", "--results", str(frozen)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {frozen}"), err
    assert sorted(p.name for p in frozen.iterdir()) == [fileio.FROZEN]


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_writes_respect_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        fileio.write_atomic(tmp_path / "a.json", "{}")
        with fileio.replacing(tmp_path / "b.parquet") as tmp:
            pd.DataFrame({"x": [1]}).to_parquet(tmp)
        plain = tmp_path / "c.txt"
        plain.write_text("as any tool writes it")
    finally:
        os.umask(old)
    expected = plain.stat().st_mode & 0o777
    assert expected == 0o666 & ~mask
    for name in ("a.json", "b.parquet"):
        assert (tmp_path / name).stat().st_mode & 0o777 == expected
    assert fileio.current_umask() == old


def test_collect_into_a_frozen_experiment_is_refused(tmp_path):
    shutil.copytree(REPO / "reproduction" / "figure2_prenorm", tmp_path / "f2")
    (tmp_path / fileio.FROZEN).write_text("x")
    before = _digests(tmp_path)
    assert tidy.main(["collect", str(tmp_path / "f2")]) == 2
    assert _digests(tmp_path) == before
    runs = tidy.load_runs(tmp_path / "f2")  # reading is fine
    assert len(runs) == 6


# --- progress -----------------------------------------------------------------------------------


def _snap(done=0, total=4, running=(), durations=()):
    return progress.Snapshot("e", total, done, {}, list(running), list(durations))


def test_eta_from_finished_trials_counts_the_running_trials_remaining_steps():
    half = progress.Running(trial=2, variant="a", step=50, total=100, elapsed=30.0)
    s = _snap(done=1, total=4, running=[half], durations=[10.0, 20.0])
    assert s.left == 2 and s.work_left() == pytest.approx(2.5)
    assert progress.eta_seconds([s], workers=2) == pytest.approx(2.5 * 15.0 / 2)
    # before any trial finished, the running trials' own projections stand in
    early = _snap(running=[half])
    assert early.trial_seconds() == pytest.approx(60.0)
    barely = progress.Running(trial=3, variant="a", step=1, total=100, elapsed=5.0)
    assert _snap(running=[barely]).trial_seconds() is None  # under 5%: no guess
    assert progress.eta_seconds([_snap(running=[barely])], 2) is None
    assert progress.eta_seconds([_snap(done=4)], 2) == 0.0
    line = progress.describe(s, workers=2)
    assert line.startswith("1/4 done, 1 running [#2 50/100], 2 left")
    assert line.endswith(f"eta {progress.clock(2.5 * 15.0 / 2)}")  # 3 trials to run: 2 workers
    one_left = _snap(done=3, total=4, durations=[10.0])
    assert progress.describe(one_left, workers=2).endswith("eta 10s")  # one trial: one worker


def test_last_line_reads_the_tail_and_skips_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert progress.last_line(path) is None
    lines = [json.dumps({"step": i, "pad": "x" * 100}) for i in range(1, 200)]
    path.write_text("\n".join(lines) + '\n{"step": 200, "tor')
    assert progress.last_line(path)["step"] == 199
    assert progress.clock(3725) == "1h02m" and progress.clock(65) == "1m05s"


_BARS = """
import sys
from ablations.sweep.progress import Display, Running, Snapshot
d = Display(["figure2_prenorm", "eps"], workers=2)
half = Running(trial=3, variant="clip", step=350, total=700, elapsed=60.0)
d.update([Snapshot("figure2_prenorm", 6, 2, {}, [half], [120.0, 120.0]),
          Snapshot("eps", 24, 0, {"diverged": 0}, [], [])])
d.close()
print("plain", file=sys.stdout)
"""


def test_a_terminal_gets_one_tqdm_bar_per_experiment(tmp_path):
    """On a real pseudo-terminal (stderr), tqdm bars: per experiment the count done, the running
    trials' steps, what is left and the ETA; nothing on stdout but the script's own line."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code, out, text = on_terminal([sys.executable, "-c", _BARS], env=env)
    assert code == 0 and out.decode() == "plain\n"
    # 2 of 6 done (█ fills a third of 20 cells); 3.5 trials of 120 s left on 2 workers
    eta = progress.clock(3.5 * 120 / 2)
    bar = rf"figure2_prenorm █{{6}}\S* +2/6 done, 1 running \[#3 350/700\], 3 left, eta {eta}"
    assert re.search(bar, text), text
    assert re.search(r"eps +\s+0/24 done, 24 left, eta \?", text), text


@pytest.mark.slow
def test_publish_copies_a_finished_staging_sweep_and_refuses_an_unfinished_one(
    fresh_clone, tmp_path, capsys
):
    """``make reproduce``'s last step: the only writer of the committed folder."""
    from ablations.analysis import reproduction

    clone, _, _ = fresh_clone
    staging, target = tmp_path / "staging", tmp_path / "committed"
    shutil.copytree(clone / "results" / "first", staging / "first")
    (staging / "figures" / "first").mkdir(parents=True)
    (staging / "figures" / "first" / "new.png").write_bytes(b"png")
    (target / "figures" / "first").mkdir(parents=True)
    (target / "figures" / "first" / "gone.png").write_bytes(b"old")
    (target / fileio.FROZEN).write_text("x")
    (target / "other").mkdir()
    (target / "other" / "runs.parquet").write_bytes(b"kept")

    report = json.loads((staging / "first" / "collect.json").read_text())
    unfinished = {**report, "statuses": {**report["statuses"], "running": 1}}
    (staging / "first" / "collect.json").write_text(json.dumps(unfinished))
    before = _digests(target)
    assert reproduction.main(["publish", str(staging), str(target)]) == 2
    assert _digests(target) == before
    # the error line names the command that continues the experiment (the Makefile passes it)
    args = ["publish", str(staging), str(target), "--rerun", "`make reproduce-scaling`"]
    assert reproduction.main(args) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unfinished ({'running': 1}); `make reproduce-scaling` continues it" in line, line
    assert _digests(target) == before
    # a sweep run in parts: --finished-only publishes the finished ones and names the rest
    shutil.copytree(staging / "first", staging / "done")
    (staging / "done" / "collect.json").write_text(json.dumps(report))
    args = ["publish", str(staging), str(target), "--finished-only"]
    assert reproduction.main(args) == 0
    assert (target / "done" / "runs.parquet").read_bytes() == (
        staging / "done" / "runs.parquet"
    ).read_bytes()
    assert not (target / "first").exists()
    shutil.rmtree(staging / "done")
    shutil.rmtree(target / "done")
    (staging / "first" / "collect.json").write_text(json.dumps(report))

    assert reproduction.main(["publish", str(staging), str(target)]) == 0
    for name in reproduction.FILES:
        assert (target / "first" / name).read_bytes() == (staging / "first" / name).read_bytes()
    assert not (target / "first" / "0").exists()  # trial directories are not committed
    assert sorted(p.name for p in (target / "figures" / "first").iterdir()) == ["new.png"]
    assert (target / "other" / "runs.parquet").read_bytes() == b"kept"
    assert (target / fileio.FROZEN).exists()


@pytest.mark.slow
def test_compare_prints_the_table_of_the_runs_and_draws_one_figure(fresh_clone, tmp_path):
    """``make try``'s ending on the fresh clone's experiment: the printed table holds each
    variant's final validation MLM loss from runs.parquet, their paired difference, and a PNG."""
    clone, _, _ = fresh_clone
    exp = clone / "results" / "first"
    out = _run(
        [str(VENV / "bin" / "python"), "-m", "ablations.analysis.compare", str(exp)]
        + ["--out", str(tmp_path)],
        clone,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    runs = pd.read_parquet(exp / "runs.parquet").set_index("variant")
    loss = runs["final_val_mlm_loss"].astype(float)
    table = {line.split()[0]: line.split() for line in out.stdout.splitlines() if line.split()}
    for variant in ("clip", "none"):
        assert f"{loss[variant]:.4f}" in table[variant], out.stdout
    assert f"{loss['none'] - loss['clip']:.4f}" in table["none"]
    assert "minus clip" in out.stdout and "reference: unigram entropy" in out.stdout
    assert (tmp_path / "first" / "compare.png").stat().st_size > 20_000


@pytest.mark.slow
def test_ctrl_c_stops_a_local_sweep_resumably_and_again_finishes_it(tmp_path, embedded_cache):
    """Ctrl-C in the terminal while two trials train: the driver stops its workers, each
    checkpoints its trial and hands it back (status interrupted, study: preempted), no worker is
    left; the same command again finishes every trial with no gap or repeat in its curve."""
    cache, _ = embedded_cache
    sweep = {
        "local": {"workers": 2, "threads_per_worker": 1},
        "retry": {"heartbeat_seconds": 1, "grace_seconds": 30},
        "experiments": {
            "stop": {
                "workload": workload(cache, steps=400, checkpoint_every=50),
                "variants": {"grid": {"optimizer.overrides.prenorm": ["clip", "none"]}},
                "seeds": 1,
            }
        },
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "ablations", "sweep", "--file", "sweep.yaml", "--local"]
    # both trials training, each past its first step (so each has its run directory): the bar
    # shows "2 running [#0 <step>/400, #1 <step>/400]"
    both = re.compile(r"#0 [1-9]\d*/400, #1 [1-9]\d*/400")
    code, shown = interrupt_on_terminal(cmd, env=env, cwd=tmp_path, when=both)
    assert code == 130, shown[-2000:]
    assert "interrupted: `make sweep` again continues" in shown
    exp = tmp_path / "results" / "stop"
    statuses = {
        d.name: json.loads((d / "status.json").read_text())["status"]
        for d in exp.iterdir()
        if d.name.isdigit()
    }
    assert statuses == {"0": "interrupted", "1": "interrupted"}, statuses
    trials = [t for t in _study(exp).trials if t.state.name == "FAIL"]
    assert sorted(t.user_attrs["status"] for t in trials) == ["preempted", "preempted"]
    ps = subprocess.run(["pgrep", "-f", f"sweep-worker.*{tmp_path}"], capture_output=True)
    assert ps.stdout == b""  # no worker outlives the driver

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    for trial in ("0", "1"):
        lines = (exp / trial / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in lines] == list(range(1, 401))


def _study(exp: Path) -> optuna.Study:
    from ablations.core.journal import open_journal

    return optuna.load_study(study_name=exp.name, storage=open_journal(exp))


def test_an_experiment_not_started_is_estimated_from_the_others_seconds_per_step():
    known = progress.Snapshot("a", 4, 2, {}, [], [100.0, 100.0], steps=500)  # 0.2 s/step
    fresh = progress.Snapshot("b", 3, 0, {}, [], [], steps=1000)
    assert fresh.trial_seconds() is None and progress.eta_seconds([known, fresh], 2) is None
    rate = progress.step_rate([known, fresh])
    assert rate == pytest.approx(0.2)
    assert progress.eta_seconds([known, fresh], 2, rate) == pytest.approx((2 * 100 + 3 * 200) / 2)
    assert progress.describe(fresh, 2, rate=rate).endswith(f"eta {progress.clock(3 * 200 / 2)}")


@pytest.mark.parametrize(
    ("flags", "index"),
    [([], None), (["CUDA=cu126"], "whl/cu126"), (["CPU=1"], "whl/cpu")],
    ids=["default", "cuda", "cpu"],
)
def test_make_setup_chooses_the_torch_build(flags, index):
    """``make setup CUDA=cu126`` installs the pinned torch from PyTorch's CUDA index (GPU
    clusters); the pin is the same in every case."""
    out = subprocess.run(
        ["make", "-n", "-W", "pyproject.toml", "setup", "VENV=/nonexistent", *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if "install" in x and "'torch==" in x)
    assert "'torch==2.13.0'" in line
    if index is None:
        assert "--index-url" not in line
    else:
        assert f"--index-url https://download.pytorch.org/{index}" in line


def test_make_help_prints_every_target_with_its_real_values():
    """``make help`` lists each documented target once, and a variable its text names is printed
    with its value (``PORT=9999`` shows in the dashboard's address), never as ``$(NAME)``."""
    out = subprocess.run(
        ["make", "--no-print-directory", "help", "PORT=9999"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    documented = re.findall(r"^([a-zA-Z_-]+):.*## ", (REPO / "Makefile").read_text(), re.M)
    assert [line.split()[0] for line in out.splitlines()] == documented
    assert "$(" not in out
    assert "http://127.0.0.1:9999" in out
