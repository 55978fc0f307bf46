"""A gpu-check record as Markdown tables: all of one record (stdout at the end of the command),
or one row per GPU record of a folder (the GPU section of ``benchmarks/README.md``)::

    python -m ablations.bench.table [benchmarks/gpu]

The README's block is this command's output (:mod:`ablations.analysis.readme` checks and
updates it), so its numbers come from the committed JSON files only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ablations.core.errors import fail
from ablations.core.fileio import read_json

#: The issue's targets: (key, text, limit, "at most" or "at least").
TARGETS = (
    ("nvlamb_floor", "nvlamb step <= 1.5x its HBM floor at BERT-large shapes", 1.5, "max"),
    ("phase1_mfu", ">= 40% MFU, BERT-large phase 1 in bf16, H100-class device", 0.40, "min"),
)
#: Devices the MFU target is stated for (a substring of the CUDA name).
H100_CLASS = ("H100", "H200", "GH200")


def _num(x: Any, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:,.{digits}f}"


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def _largest(steps: dict[str, Any]) -> dict[str, Any]:
    """The optimizer-step result of the largest shape set measured (BERT-large on a GPU)."""
    sets = [v for v in steps.values() if isinstance(v, dict) and "params" in v]
    return max(sets, key=lambda v: v["params"], default={})


def targets(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the record's value, whether it applies here (a GPU; the MFU target an
    H100-class one), and whether it is met (None where it does not apply or was not measured)."""
    checks = record["checks"]
    nvlamb = _largest(checks.get("optimizer_step", {})).get("candidates", {}).get("nvlamb", {})
    phase1 = checks.get("throughput", {}).get("phase1", {})
    values = {"nvlamb_floor": nvlamb.get("x_floor"), "phase1_mfu": phase1.get("mfu")}
    gpu = record["mode"] == "cuda"
    applies = {
        "nvlamb_floor": gpu,
        "phase1_mfu": gpu and any(k in record["device"] for k in H100_CLASS),
    }
    out = []
    for key, text, limit, kind in TARGETS:
        value = values[key]
        met = None
        if applies[key] and value is not None:
            met = value <= limit if kind == "max" else value >= limit
        out.append(
            {"target": key, "text": text, "value": value, "applies": applies[key], "met": met}
        )
    return out


def _value(t: dict[str, Any]) -> str:
    if t["value"] is None:
        return "–"
    return _pct(t["value"]) if t["target"] == "phase1_mfu" else f"{_num(t['value'])}x"


def _verdict(t: dict[str, Any]) -> str:
    if not t["applies"]:
        return "does not apply here"
    return {True: "met", False: "NOT met", None: "not measured"}[t["met"]]


def render(record: dict[str, Any]) -> str:
    """Every check of one record, as Markdown."""
    checks = record["checks"]
    lines = [f"## gpu-check: {record['device']} ({record['mode']}), {record['date']}", ""]
    env = checks.get("environment", {})
    lines.append(
        f"torch {env.get('torch')} (CUDA {env.get('cuda')}), driver {env.get('driver')}, "
        f"memory {_num(env.get('memory_gib'), 1)} GiB, bf16 {_num(env.get('bf16'))}; "
        f"budget {_num(record['budget_s'], 0)} s, wall {_num(record.get('wall_s'), 0)} s; "
        f"skipped: {', '.join(record['skipped']) or 'none'}"
    )
    for name, part in checks.items():
        if "error" in part:
            lines.append(f"\n**{name} failed**: {part['error']}")
    lines += _tests(checks.get("cuda_tests"))
    lines += _optimizer(checks.get("optimizer_step"))
    lines += _throughput(checks.get("throughput"))
    lines += _precision(checks.get("precision"))
    lines += _resume(checks.get("resume"))
    lines += ["", "| target | measured | verdict |", "|---|---|---|"]
    for t in targets(record):
        lines.append(f"| {t['text']} | {_value(t)} | {_verdict(t)} |")
    return "\n".join(lines)


def _tests(part: dict[str, Any] | None) -> list[str]:
    if not part or "error" in part:
        return []
    counts = ", ".join(f"{part[k]} {k}" for k in ("passed", "failed", "errors", "skipped"))
    out = ["", f"`{part['file']}`: {counts}"]
    out += [f"- {line}" for line in part["not_passed"]]
    return out


def _optimizer(part: dict[str, Any] | None) -> list[str]:
    if not part or "error" in part:
        return []
    out = [
        "",
        "| shapes | optimizer | min ms | median ms | floor ms | x floor |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    for shapes, r in part.items():
        if not isinstance(r, dict) or "candidates" not in r:
            continue
        for label, c in r["candidates"].items():
            floor = r["floor_ms"][c["floor"]]
            out.append(
                f"| {shapes} ({r['params'] / 1e6:,.1f}M) | {label} | {_num(c['min_ms'], 3)} | "
                f"{_num(c['median_ms'], 3)} | {_num(floor, 3)} | {_num(c['x_floor'])} |"
            )
        notes.append(f"{shapes} {r['copy_gb_s']:,.0f} GB/s")
    out.append(
        f"\nfp32 parameters; floor = bytes that must move (AdamW 28, LAMB 44 per element) / "
        f"measured copy bandwidth ({'; '.join(notes)}); minimum and median of "
        f"{next(iter(part.values())).get('rounds')} rounds"
    )
    return out


def _throughput(part: dict[str, Any] | None) -> list[str]:
    if not part or "error" in part:
        return []
    out = [
        "",
        "| phase | model | seq | micro-batch | tokens/s | ms/step | MFU | peak GiB | optimizer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    sources = set()
    for name, r in part.items():
        if not isinstance(r, dict) or "seq_len" not in r:
            continue
        if r.get("micro_batch") is None:
            out.append(f"| {name} | {r['model']} | {r['seq_len']} | none fitted | | | | | |")
            continue
        out.append(
            f"| {name} | {r['model']} | {r['seq_len']} | {r['micro_batch']} | "
            f"{_num(r['tokens_per_s'], 0)} | {_num(r['ms_per_step'], 1)} | {_pct(r['mfu'])} | "
            f"{_num(r['peak_memory_gib'], 1)} | {_pct(r['optimizer_share'])} |"
        )
        sources.add(f"{_num(r['peak_tflops'], 1)} TFLOPS ({r['peak_source']})")
    out.append(
        "\nbf16-mixed, the harness's Lightning module (nvlamb, no accumulation); the largest "
        "micro-batch that fitted, by trying; MFU against the dense bf16 peak: "
        + "; ".join(sorted(sources))
    )
    return out


def _precision(part: dict[str, Any] | None) -> list[str]:
    if not part or "error" in part:
        return []
    out = [
        "",
        f"| {part['model']}, {part['steps']} steps | status | first loss | last loss | "
        "val MLM loss | skipped | trains |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("bf16", "fp32"):
        r = part[name]
        out.append(
            f"| {name} | {r['status']} | {_num(r['first_loss'], 4)} | {_num(r['last_loss'], 4)} "
            f"| {_num(r['val_mlm_loss'], 4)} | {_num(r['skipped'])} | {_num(r['trains'])} |"
        )
    gap, bound = part["max_window_gap"], part["bound"]
    within = gap is not None and gap <= bound
    out.append(
        f"\nbf16 against fp32: mean losses of {part['window']}-step windows differ by at most "
        f"{_pct(gap, 2)} (bound {_pct(bound)}: {'within' if within else 'NOT within'}); "
        f"a run trains when its last window is at most {part['fall']:.0%} of its first"
    )
    return out


def _resume(part: dict[str, Any] | None) -> list[str]:
    if not part or "error" in part:
        return []
    verdict = "equal (every curve line but wall_time)" if part["equal"] else "NOT equal"
    line = (
        f"\nkilled after step {part['killed_after']} of {part['steps']} and resumed "
        f"(checkpoints every {part['checkpoint_every']}, {part['attempts']} attempts): {verdict} "
        f"to the uninterrupted {part['precision']} run"
    )
    if not part["equal"]:
        line += (
            f"; first difference at step {part['first_differing_step']}, largest loss "
            f"difference {_num(part['max_loss_difference'], 6)}"
        )
    s = part["settings"]
    strict = "warn only" if s["warn_only"] else "strict"
    line += (
        f". Settings: deterministic algorithms {_num(s['deterministic_algorithms'])} ({strict}), "
        f"CUBLAS_WORKSPACE_CONFIG={s['cublas_workspace_config']}"
    )
    if "strict_error" in part:
        line += f"; strict mode stopped: {part['strict_error']}"
    ops = part["nondeterministic_ops"]
    line += "; ops without a deterministic kernel: " + ("; ".join(ops) if ops else "none")
    return [line]


def summary(records: list[dict[str, Any]]) -> str:
    """One row per GPU record (the README's GPU section), or a line saying there is none."""
    gpu = [r for r in records if r.get("mode") == "cuda"]
    if not gpu:
        return (
            "No record from a GPU yet: `benchmarks/gpu/` holds no JSON file from a CUDA device.\n"
            "`make gpu-check` on a GPU machine writes one, and\n"
            "`python -m ablations.analysis.readme update benchmarks/README.md` then fills this "
            "table."
        )
    out = [
        "| device | date | torch / CUDA | nvlamb x floor (large) | fused AdamW x floor | "
        "phase 1 tokens/s | phase 1 MFU | phase 2 tokens/s | phase 2 MFU | bf16 vs fp32 | "
        "resume |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in gpu:
        c = r["checks"]
        env = c.get("environment", {})
        step = _largest(c.get("optimizer_step", {})).get("candidates", {})
        tp = c.get("throughput", {})
        p1, p2 = tp.get("phase1", {}), tp.get("phase2", {})
        pr, rs = c.get("precision", {}), c.get("resume", {})
        gap = _pct(pr.get("max_window_gap"), 2) + (" ok" if pr.get("ok") else " NOT ok")
        resume = {True: "equal", False: "differs"}.get(rs.get("equal"), "–")
        out.append(
            f"| {r['device']} | {r['date']} | {env.get('torch')} / {env.get('cuda')} | "
            f"{_num(step.get('nvlamb', {}).get('x_floor'))} | "
            f"{_num(step.get('AdamW(fused=True)', {}).get('x_floor'))} | "
            f"{_num(p1.get('tokens_per_s'), 0)} | {_pct(p1.get('mfu'))} | "
            f"{_num(p2.get('tokens_per_s'), 0)} | {_pct(p2.get('mfu'))} | "
            f"{gap if pr else '–'} | {resume} |"
        )
    out += ["", "| device | target | measured | verdict |", "|---|---|---|---|"]
    for r in gpu:
        for t in targets(r):
            out.append(f"| {r['device']} | {t['text']} | {_value(t)} | {_verdict(t)} |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ablations.bench.table", description=__doc__.splitlines()[0]
    )
    parser.add_argument("folder", type=Path, nargs="?", default=Path("benchmarks/gpu"))
    args = parser.parse_args(argv)
    if args.folder.exists() and not args.folder.is_dir():
        return fail(NotADirectoryError(f"{args.folder}: not a folder"))
    records = []
    for path in sorted(args.folder.glob("*.json")) if args.folder.is_dir() else []:
        try:
            records.append(read_json(path))
        except ValueError as e:  # json.JSONDecodeError: gpu-check writes its files whole
            return fail(ValueError(f"{path}: not a gpu-check record: {e}"))
    print(summary(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
