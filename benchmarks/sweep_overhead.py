"""Per-trial overhead of the sweep driver against training time, from a finished sweep.

Every trial's ``user_attrs`` hold ``fit_seconds`` (time inside Lightning's ``Trainer.fit``, the
training itself: steps, validation, checkpoints), ``trial_seconds`` (claim to report: building
the config, the data module from its cache, the model and the trainer, writing the run files,
reporting) and ``claim_seconds`` (reaping, queueing and claiming under the lock). A worker's start
(Python, torch, Lightning and Optuna imports, opening the studies) is measured here by starting
one on the finished experiments, where it finds nothing to do and exits, and is charged once per
worker. Target: overhead <= 10% of training time for the default CPU sweep.

    python benchmarks/sweep_overhead.py [--sweep sweep.yaml] [--workers 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sweep", type=Path, default=REPO / "sweep.yaml")
    parser.add_argument("--workers", type=int, default=None, help="default: local.workers")
    parser.add_argument("--starts", type=int, default=3, help="worker starts timed (minimum)")
    args = parser.parse_args()

    from optuna.trial import TrialState

    from ablations.sweep import study as studies
    from ablations.sweep.cli import _results
    from ablations.sweep.slots import finished
    from ablations.sweep.spec import load_sweep, plan

    sweep = load_sweep(args.sweep)
    results = _results(sweep, args.sweep)
    names = [n for n in sweep.experiments if (results / n / "sweep.json").exists()]
    if not names:
        print(f"skipped: no experiment of {args.sweep} has run yet (run `make sweep` first)")
        return 0
    workers = args.workers or sweep.local.workers
    fit = trial = claim = 0.0
    count = 0
    print(
        f"{'experiment':18s} {'trials':>6s} {'fit s/trial':>12s} {'overhead s/trial':>17s} "
        f"{'claim s':>8s}"
    )
    for name in names:
        s = studies.load(sweep, plan(sweep, name), results / name)
        done = [
            t
            for t in s.get_trials()
            if t.state == TrialState.COMPLETE
            and "fit_seconds" in t.user_attrs
            and "trial_seconds" in t.user_attrs
        ]
        if not done:
            continue
        f = [t.user_attrs["fit_seconds"] for t in done]
        o = [t.user_attrs["trial_seconds"] - t.user_attrs["fit_seconds"] for t in done]
        c = [t.user_attrs.get("claim_seconds", 0.0) for t in done]
        print(
            f"{name:18s} {len(done):6d} {statistics.mean(f):12.1f} {statistics.mean(o):17.2f} "
            f"{statistics.mean(c):8.3f}"
        )
        fit, trial, claim, count = (
            fit + sum(f),
            trial + sum(f) + sum(o),
            claim + sum(c),
            (count + len(done)),
        )

    unfinished = [
        n
        for n in names
        if not finished(
            studies.load(sweep, plan(sweep, n), results / n), plan(sweep, n), sweep.retry
        )
    ]
    if unfinished:  # a worker started now would take trials: time starts only on a finished sweep
        print(
            f"\n{unfinished} not finished: worker start not measured; "
            f"in-trial overhead / training = {(trial - fit + claim) / fit:.1%}"
        )
        return 0
    cmd = [sys.executable, "-m", "ablations", "sweep-worker", "--file", str(args.sweep)]
    for name in names:
        cmd += ["--experiment", name]
    starts = []
    for _ in range(args.starts):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, capture_output=True, check=True)
        starts.append(time.perf_counter() - t0)
    start = min(starts)
    overhead = (trial - fit) + claim + start * workers
    print(
        f"\nworker start (imports, studies; nothing left to run): {start:.1f} s "
        f"(min of {args.starts}), charged {workers}x"
    )
    print(
        f"{count} trials: training {fit:.0f} s, overhead {overhead:.0f} s "
        f"(in-trial {trial - fit:.0f} s, claims {claim:.1f} s, starts {start * workers:.0f} s)"
    )
    ratio = overhead / fit
    verdict = "met" if ratio <= 0.10 else "NOT met"
    print(f"overhead / training = {ratio:.1%}  (target <= 10%: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
