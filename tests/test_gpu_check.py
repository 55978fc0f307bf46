"""``python -m ablations gpu-check``: the CPU mode runs every check's code on tiny shapes, as a
real subprocess, and its record must hold numbers that could have been wrong; without a CUDA
device the command says so and exits 0; bad input is one ``error:`` line; the budget skips the
checks it has no time for; the FLOPs formula agrees with torch's FLOP counter; the GPU section
of ``benchmarks/README.md`` is its command's output."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ablations import __main__ as cli
from ablations.analysis import readme
from ablations.bench import gpu_check, short_run, table, throughput
from ablations.bench.data import RandomExamples
from ablations.bench.optimizer_step import CANDIDATES, SHAPES
from ablations.config import ModelConfig
from ablations.run.model import BertPretraining

REPO = Path(__file__).resolve().parents[1]
CHECKS = ["environment", "cuda_tests", "optimizer_step", "throughput", "precision", "resume"]


def gpu_check_run(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "GPU_CHECK_BUDGET"}
    return subprocess.run(
        [sys.executable, "-m", "ablations", "gpu-check", *args],
        cwd=REPO,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def cpu_mode(tmp_path_factory):
    """One CPU-mode run (about a minute): its process, its record, and where it was written."""
    out = tmp_path_factory.mktemp("gpu-check") / "cpu.json"
    before = sorted((REPO / "benchmarks").rglob("*"))
    proc = gpu_check_run("--device", "cpu", "--out", str(out))
    assert sorted((REPO / "benchmarks").rglob("*")) == before  # committed files untouched
    return proc, json.loads(out.read_text()), out


@pytest.mark.slow
def test_cpu_mode_runs_every_check_and_prints_its_tables(cpu_mode):
    proc, record, out = cpu_mode
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert record["mode"] == "cpu" and record["device"] == "cpu"
    assert list(record["checks"]) == CHECKS and record["skipped"] == []
    assert all("error" not in c and c.get("ok") is not False for c in record["checks"].values())
    assert record["wall_s"] < 300  # tiny shapes: a minute or two, not BERT-large on a CPU
    assert record["checks"]["environment"]["torch"] == torch.__version__
    for heading in ("## gpu-check: cpu (cpu)", "| shapes | optimizer |", "| phase | model |"):
        assert heading in proc.stdout
    assert "| bf16 | complete |" in proc.stdout and "| target | measured | verdict |" in proc.stdout
    assert f"written: {out}" in proc.stdout


@pytest.mark.slow
def test_cpu_mode_skips_the_cuda_tests_and_times_the_optimizers(cpu_mode):
    _, record, _ = cpu_mode
    tests = record["checks"]["cuda_tests"]
    assert tests["skipped"] > 10 and tests["passed"] == tests["failed"] == tests["errors"] == 0
    steps = {k: v for k, v in record["checks"]["optimizer_step"].items() if k != "seconds"}
    assert list(steps) == list(gpu_check.CPU.shapes)
    for name, r in steps.items():
        assert r["params"] == sum(math.prod(s) for s in SHAPES[name])
        assert set(r["candidates"]) == set(CANDIDATES)
        assert r["copy_gb_s"] > 0.1
        for c in r["candidates"].values():
            assert 0 < c["min_ms"] <= c["median_ms"]
            assert c["x_floor"] == pytest.approx(c["min_ms"] / r["floor_ms"][c["floor"]])
        # LAMB must move 44 B per element, AdamW 28: the floors keep that ratio
        assert r["floor_ms"]["lamb"] / r["floor_ms"]["adamw"] == pytest.approx(44 / 28)


@pytest.mark.slow
def test_cpu_mode_measures_throughput_through_the_module(cpu_mode):
    _, record, _ = cpu_mode
    for name, phase in gpu_check.CPU.phases.items():
        r = record["checks"]["throughput"][name]
        # the CPU never runs out of memory: the search doubles up to its cap
        assert r["micro_batch"] == phase.cap and all(r["tried"].values())
        assert r["tokens_per_s"] == pytest.approx(
            phase.cap * phase.seq_len / r["ms_per_step"] * 1e3
        )
        assert 0 < r["optimizer_share"] < 1
        assert r["mfu"] is None and "no bf16 peak known for 'cpu'" in r["peak_source"]
        assert r["model_tflops_per_step"] * 1e12 == pytest.approx(
            throughput.train_flops("tiny", 4096, phase.cap, phase.seq_len, phase.predictions)
        )


@pytest.mark.slow
def test_cpu_mode_trains_in_bf16_as_in_fp32_and_resumes_exactly(cpu_mode):
    _, record, _ = cpu_mode
    precision = record["checks"]["precision"]
    for name in ("bf16", "fp32"):
        run = precision[name]
        assert run["status"] == "complete" and run["skipped"] == 0 and run["trains"]
        assert run["last_loss"] < precision["fall"] * run["first_loss"]
    assert precision["max_window_gap"] <= precision["bound"]
    resume = record["checks"]["resume"]
    assert resume["equal"] and resume["attempts"] == 2 and resume["status"] == "complete"
    # strict deterministic algorithms: every kernel the CPU run uses has a deterministic form
    assert resume["settings"]["deterministic_algorithms"] and not resume["settings"]["warn_only"]
    assert "strict_error" not in resume and resume["nondeterministic_ops"] == []


@pytest.mark.slow
def test_the_readme_table_takes_gpu_records_only(cpu_mode, tmp_path):
    _, record, _ = cpu_mode
    (tmp_path / "cpu.json").write_text(json.dumps(record))
    assert table.main([str(tmp_path)]) == 0
    assert table.summary([record]).startswith("No record from a GPU yet")
    h100 = {**record, "mode": "cuda", "device": "NVIDIA H100 80GB HBM3"}
    h100["checks"] = {**record["checks"], "throughput": {"phase1": {"mfu": 0.41}}}
    text = table.summary([h100])
    assert text.startswith("| device | date |") and "| NVIDIA H100 80GB HBM3 |" in text
    assert "| 41.0% | met |" in text  # the MFU target applies to an H100
    nvlamb = table._largest(record["checks"]["optimizer_step"])["candidates"]["nvlamb"]
    verdict = "met" if nvlamb["x_floor"] <= 1.5 else "NOT met"
    assert f"| {nvlamb['x_floor']:.2f}x | {verdict} |" in text


def test_without_a_cuda_device_it_says_so_and_exits_0(tmp_path):
    out = tmp_path / "record.json"
    proc = gpu_check_run("--out", str(out), CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("gpu-check: no CUDA device") and proc.stdout.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--device", "tpu"], {}, "error: --device: expected one of ['cuda', 'cpu'], got 'tpu'"),
        (["--device", "cpu"], {"GPU_CHECK_BUDGET": "soon"}, "error: budget: expected seconds"),
        (["--device", "cpu", "--budget", "-1"], {}, "error: budget: expected seconds"),
        (["--device", "cpu", "--out", str(REPO / "reproduction/x.json")], {}, "committed results"),
    ],
    ids=["device", "budget-env", "budget-negative", "frozen-out"],
)
def test_bad_input_is_one_error_line(args, env, message, monkeypatch, capsys):
    monkeypatch.delenv("GPU_CHECK_BUDGET", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["gpu-check", *args]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert out == ""


def test_a_spent_budget_skips_every_check_after_the_environment(tmp_path, monkeypatch, capsys):
    out = tmp_path / "record.json"
    monkeypatch.setenv("GPU_CHECK_BUDGET", "0")
    assert cli.main(["gpu-check", "--device", "cpu", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert list(record["checks"]) == ["environment"] and record["skipped"] == CHECKS[1:]
    assert f"skipped: {', '.join(CHECKS[1:])}" in capsys.readouterr().out


def test_resume_falls_back_to_warn_only_when_a_kernel_is_not_deterministic(monkeypatch, tmp_path):
    """A GPU op with no deterministic kernel raises under strict mode: the check redoes the runs
    with warn_only and records why (the CPU has none such, so this is faked)."""
    calls = []

    def attempt(run, device, workdir, warn_only):
        calls.append(warn_only)
        if not warn_only:
            raise RuntimeError("an_op does not have a deterministic implementation, but you set")
        return {"equal": False, "ok": False}

    monkeypatch.setattr(short_run, "_resume", attempt)
    out = short_run.resume_equality(gpu_check.CPU.short, torch.device("cpu"), tmp_path)
    assert calls == [False, True]
    assert out["strict_error"].startswith("RuntimeError: an_op does not have a deterministic")


def test_default_records_go_to_benchmarks_gpu_for_a_gpu_and_results_for_the_cpu():
    day = "2026-12-07"
    assert gpu_check.default_out("cuda", "NVIDIA H100 80GB HBM3", day) == (
        REPO / "benchmarks/gpu/nvidia-h100-80gb-hbm3-2026-12-07.json"
    )
    assert (
        gpu_check.default_out("cpu", "cpu", day) == REPO / "results/gpu-check/cpu-2026-12-07.json"
    )


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.5),
        ("NVIDIA H100 PCIe", 756.5),
        ("NVIDIA H100 NVL", 835.5),
        ("NVIDIA H200", 989.5),
        ("NVIDIA H200 NVL", 835.5),
        ("NVIDIA GH200 480GB", 989.5),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("cpu", None),
    ],
)
def test_peak_by_device_name(name, tflops):
    peak = throughput.peak_for(name)
    assert (peak and peak.tflops) == tflops


@pytest.mark.parametrize(("seq_len", "predictions"), [(64, 10), (128, 20)])
def test_train_flops_is_what_torch_counts_for_a_step(seq_len, predictions):
    """The formula against ``FlopCounterMode`` over a real forward and backward (attention on the
    math path, whose matmuls the counter sees on any device)."""
    torch.manual_seed(0)
    model = BertPretraining(ModelConfig(size="tiny"), 512)
    examples = RandomExamples(3, 512, seq_len, predictions)
    batch = examples.__getitems__(range(3))
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        model(batch)["loss"].backward()
    want = throughput.train_flops("tiny", 512, 3, seq_len, predictions)
    assert counter.get_total_flops() == want


def test_the_benchmarks_readme_gpu_section_is_generated():
    blocks = readme.blocks((REPO / "benchmarks" / "README.md").read_text())
    gpu = [b for b in blocks if b.command.startswith("python -m ablations.bench.table")]
    assert len(gpu) == 1
    assert readme.output(gpu[0].command) == gpu[0].body
