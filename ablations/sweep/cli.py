"""``python -m ablations sweep | sweep-worker | sweep-collect | sweep-status``.

``sweep``: validate the file, prepare the experiments, then submit them to SLURM (where ``sbatch``
exists) or run local workers. Bad input (sweep file, experiment name, an experiment directory of
a different definition, the data) exits 2 with one line, before anything is created or
submitted.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from ablations import results as tidy
from ablations.config import ConfigError
from ablations.core.errors import fail
from ablations.core.fileio import FrozenError, check_writable, write_json
from ablations.core.status import Status
from ablations.data import DataError
from ablations.sweep import dashboard, driver, slots, worker
from ablations.sweep import study as studies
from ablations.sweep.progress import describe, snapshot
from ablations.sweep.schedule import queue_retries
from ablations.sweep.slurm import (
    SubmitError,
    collect_script,
    cost,
    submissions,
    submit,
    worker_script,
)
from ablations.sweep.spec import load_sweep, plan


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run the experiments of a sweep file (SLURM or local)")
    _common(p, required=False)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="local workers even if sbatch exists")
    where.add_argument("--slurm", action="store_true", help="submit to SLURM (needs sbatch)")
    p.add_argument("--dry-run", action="store_true", help="validate and print the plan only")
    p.add_argument(
        "--retry-lost",
        action="store_true",
        help="give the trials given up (lost more than retry.max_retry times) another round",
    )
    for name, text in (
        ("sweep-worker", "one worker: claim and train trials until none is left"),
        ("sweep-collect", "after the workers: retry or resubmit what is left, then summarize"),
        ("sweep-status", "print the experiments' progress"),
    ):
        _common(sub.add_parser(name, help=text), required=name != "sweep-status")
    p = sub.add_parser("dashboard", help="optuna-dashboard on one experiment's study, locally")
    _common(p, required=False)
    p.set_defaults(file=None)  # --results alone serves (or lists) a folder's journal studies
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")


def _common(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--file", type=Path, default=Path("sweep.yaml"), help="the sweep file")
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        help="experiments' folder (default: the sweep file's `results:`, relative to the file)",
    )
    p.add_argument(
        "--experiment",
        action="append",
        default=[],
        required=required,
        help="an experiment of the file (repeatable; default: those with default: true)",
    )


def run(args: argparse.Namespace) -> int:
    if args.command == "dashboard" and args.file is None:
        if args.results is None:
            args.file = Path("sweep.yaml")
        else:
            return dashboard.serve_folder(args.results.resolve(), args.experiment, args.port)
    try:
        sweep = load_sweep(args.file)
        if args.command == "dashboard" and not args.experiment:
            print(f"experiments of {args.file} (name one: EXPERIMENT=<name>, or --experiment):")
            print("".join(f"  {name}\n" for name in sweep.experiments), end="")
            return 0
        names = args.experiment or [n for n, e in sweep.experiments.items() if e.default]
        if not names:
            raise ConfigError(f"{args.file}: no experiment has default: true; name one")
        plans = [plan(sweep, n) for n in names]
    except ConfigError as e:
        return fail(e)
    results = args.results.resolve() if args.results else _results(sweep, args.file)
    command = args.command
    if command == "dashboard":
        return _dashboard(sweep, plans, results, args.port)
    if command != "sweep-status" and not getattr(args, "dry_run", False):
        try:
            check_writable(results)
        except FrozenError as e:
            return fail(e)

    if command == "sweep-worker":
        return worker.run(sweep, names, results)
    if command == "sweep-status":
        return _status(sweep, plans, results)
    if command == "sweep-collect":
        return _collect(sweep, args.file, plans, results)

    if args.dry_run:
        for p in plans:
            more = f" (extend: up to {len(p.candidates)} more variants)" if p.candidates else ""
            print(
                f"{p.name}: {len(p.variants)} variants{more}, {slots.total_slots(p)} trials; "
                f"{cost(p)}"
            )
            for v, toggles in p.variants.items():
                print(f"  {v}: {toggles}")
            if args.slurm or (driver.has_slurm() and not args.local):
                exp_dir = results / p.name
                for name, script in (
                    ("worker.sbatch", worker_script(p, args.file, Path.cwd(), exp_dir)),
                    ("collect.sbatch", collect_script(p, args.file, Path.cwd(), exp_dir)),
                ):
                    print(f"--- {exp_dir / 'slurm' / name} (would be submitted) ---")
                    print(script, end="")
        return 0
    slurm = args.slurm or (driver.has_slurm() and not args.local)
    if args.slurm and not driver.has_slurm():
        return fail(ConfigError("--slurm: sbatch is not on PATH"))
    try:
        driver.prepare_experiments(sweep, names, results, retry_lost=args.retry_lost)
    except (ConfigError, DataError) as e:
        return fail(e)
    if slurm:
        for p in plans:
            try:
                ids = submit(p, args.file, Path.cwd(), results / p.name)
            except SubmitError as e:
                return fail(e)
            print(
                f"{p.name}: submitted worker array {ids['array']} and collect job {ids['collect']}"
            )
        print(
            "watch: squeue --me   |   python -m ablations sweep-status --file "
            f"{args.file}   |   tail -f {results}/<experiment>/slurm/*.out"
        )
        return 0
    code = driver.run_local(sweep, args.file, plans, results)
    if code == 0:
        code = _collect(sweep, args.file, plans, results)
    return code


def _dashboard(sweep: Any, plans: list, results: Path, port: int) -> int:
    """optuna-dashboard on the experiment's storage (its journal file, or the sweep's RDB),
    bound to 127.0.0.1 only: a study is not something to serve to the network by default.
    Every trial holds its variant, each toggle and each tuned value as an Optuna parameter and
    its validation curve as intermediate values: the slice, parallel-coordinate, importance and
    learning-curve views read them."""
    if len(plans) != 1:
        return fail(ConfigError("--experiment: expected exactly one experiment for the dashboard"))
    exp_dir = results / plans[0].name
    if sweep.storage == "journal" and not (exp_dir / "study.journal").exists():
        return fail(ConfigError(f"{exp_dir}/study.journal: no study yet; run the sweep first"))
    journal = sweep.storage == "journal"
    view = (journal and dashboard.derived(exp_dir)) or studies.open_storage(sweep, exp_dir)
    storage = dashboard.DashboardStorage(view)
    return dashboard.serve(storage, plans[0].name, port)


def _results(sweep: Any, sweep_file: Path) -> Path:
    """``results:`` of the sweep file, relative to the file's directory."""
    path = Path(sweep.results)
    return path if path.is_absolute() else (sweep_file.resolve().parent / path)


def _status(sweep: Any, plans: list, results: Path) -> int:
    """One line per experiment: done / running (with steps) / left and an ETA; the ETA assumes
    the experiment's SLURM ``parallelism`` workers (``local.workers`` where there is no SLURM)."""
    slurm = driver.has_slurm()
    for p in plans:
        if not (results / p.name / "sweep.json").exists():
            print(f"{p.name}: not started")
            continue
        s = studies.load(sweep, p, results / p.name)
        array = p.experiment.slurm
        workers = (array.parallelism or array.array_size) if slurm else sweep.local.workers
        print(f"{p.name}: {describe(snapshot(s, p, sweep, results / p.name), workers)}")
    return 0


def _collect(sweep: Any, sweep_file: Path, plans: list, results: Path) -> int:
    """Queue retries; resubmit the array on SLURM while trials are left; then write
    summary.json (:func:`study_summary`) and collect the tables."""
    code = 0
    for p in plans:
        exp_dir = results / p.name
        s = studies.load(sweep, p, exp_dir)
        queue_retries(s, sweep, exp_dir, p)
        if not slots.finished(s, p, sweep.retry):
            done = submissions(exp_dir)
            if driver.has_slurm() and done and len(done) <= p.experiment.slurm.max_resubmits:
                ids = submit(p, sweep_file, Path.cwd(), exp_dir)
                print(
                    f"{p.name}: trials left; resubmitted array {ids['array']} "
                    f"(collect {ids['collect']})"
                )
                continue
            print(
                f"{p.name}: incomplete: {slots.progress(s, p, sweep.retry)}; "
                "`make sweep` again continues it",
                file=sys.stderr,
            )
            code = 1
        summary = study_summary(s, p, sweep.retry)
        write_json(exp_dir / "summary.json", summary)
        _print_summary(p.name, summary)
        lost = slots.given_up(s, sweep.retry)
        if lost:  # never silent: the summary counts them, this line names them, exit 1
            numbers = ", ".join(str(n) for key in sorted(lost) for n in lost[key][-1:])
            print(
                f"error: {p.name}: {len(lost)} trial(s) lost more than retry.max_retry = "
                f"{sweep.retry.max_retry} times and given up (trials {numbers}); "
                "`make sweep SWEEP_FLAGS=--retry-lost` gives them another round",
                file=sys.stderr,
            )
            code = 1
        try:
            tidy.collect(exp_dir)
        except tidy.ResultsError as e:
            code = fail(e)
    return code


def study_summary(study: Any, p: Any, retry: Any) -> dict[str, Any]:
    """summary.json: per variant, the chosen point, the seed runs' objective values and their
    statuses, read from the study alone (so it exists even where the tables cannot be
    collected); the statistics over the tables are :func:`ablations.analysis.stats.summarize`."""
    out: dict[str, Any] = {}
    lost = slots.given_up(study, retry)
    ran = {t.user_attrs.get("variant") for t in study.get_trials(deepcopy=False)}
    for variant in [v for v in p.all_variants if v in p.variants or v in ran]:  # extend's too
        mine = [
            t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("variant") == variant
        ]
        seeds = [
            t
            for t in mine
            if t.user_attrs.get("stage") == "seed"
            and t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        ]
        finals = [t for t in seeds if t.state == TrialState.COMPLETE]
        values = [t.value for t in finals]
        finite = [v for v in values if v is not None and math.isfinite(v)]
        out[variant] = {
            "toggles": p.all_variants[variant],
            "params": (slots.tuned_params(finals[0].params, p) if finals else None),
            "tuning_trials": sum(
                t.user_attrs.get("stage") == "tune"
                for t in mine
                if t.state != TrialState.FAIL or t.user_attrs.get("status") == Status.FAILED
            ),
            "seed_values": values,
            "mean": sum(finite) / len(finite) if finite else None,
            "diverged": sum(t.user_attrs.get("status") == Status.DIVERGED for t in finals),
            "failed": sum(t.user_attrs.get("status") == Status.FAILED for t in seeds),
            "lost": sum(key.startswith(f"{variant}/") for key in lost),
        }
    return out


def _print_summary(name: str, summary: dict[str, Any]) -> None:
    print(f"{name}:")
    for variant, row in summary.items():
        mean = "n/a" if row["mean"] is None else f"{row['mean']:.4f}"
        print(
            f"  {variant:40s} mean {mean}  seeds {len(row['seed_values'])}  "
            f"diverged {row['diverged']}  failed {row['failed']}  lost {row['lost']}"
        )
