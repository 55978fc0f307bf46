"""A first look at an experiment without a Jupyter kernel: a comparison table printed, and its
loss curves drawn to one PNG. What ``make try`` ends with; works on any experiment::

    python -m ablations.analysis.compare results/<experiment> [--out results/figures]
                                         [--baseline VARIANT]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd

from ablations import results
from ablations.analysis import figures, stats
from ablations.analysis.locations import REPO
from ablations.analysis.report import ReportError, report_table
from ablations.core.errors import fail
from ablations.core.fileio import FrozenError, check_writable
from ablations.core.status import Status


def comparison_table(
    runs: pd.DataFrame, metric: str = "final_val_mlm_loss", baseline: str | None = None
) -> pd.DataFrame:
    """:func:`ablations.analysis.report.report_table` against ``baseline`` (default: the first
    variant; raises :class:`~ablations.analysis.report.ReportError` for an unknown one): runs by
    outcome, ``metric``'s mean [95% t-interval over seeds], the paired difference; with the
    final training loss and the training speed (optimizer steps per second of fit time)."""
    table = report_table(runs, baseline, metric)
    baseline = table.attrs["baseline"]
    chosen = stats.select_runs(runs)
    done = chosen[chosen["status"] == Status.COMPLETE]
    train, speed = [], []
    for v in table.index:
        mine = done[done["variant"].astype(str) == v]
        train.append(float(mine["final_train_loss"].mean()))
        speed.append(float((mine["steps"] / mine["wall_time"]).mean()))
    out = table[["runs", "complete", "diverged", "mean", "ci_low", "ci_high", "delta"]]
    out = out.rename(columns={"mean": metric, "delta": f"minus {baseline}"})
    out = out.assign(final_train_loss=train, steps_per_s=speed)
    return out.dropna(axis="columns", how="all")  # one seed: no interval to show


def compare(
    exp_dir: Path | str, out: Path | str, log: Any = print, *, baseline: str | None = None
) -> Path:
    """Print the comparison table (differences from ``baseline``, default the first variant)
    and the reference line of an experiment, and draw its loss curves (training loss and
    validation MLM loss, faceted by the toggles of a grid: :func:`figures.loss_panels`) to
    ``<out>/<experiment>/compare.png``; returns the figure's path."""
    matplotlib.use("Agg")  # files only: no display, whatever backend pyplot picked (none drew yet)
    exp_dir = Path(exp_dir)
    check_writable(out)
    runs = results.load_runs(exp_dir)  # collected first if stale: once, for both uses
    table = comparison_table(runs, baseline=baseline)
    reference = results.reference_lines(exp_dir)
    with pd.option_context("display.width", 120, "display.float_format", "{:.4f}".format):
        log(results.describe(exp_dir))
        log(table.to_string())
    for row in reference.itertuples():
        log(f"reference: {row.label} = {row.value:.4f} nats (a model below it uses context)")
    figures.setup()
    fig = figures.loss_panels(
        results.load_curves(exp_dir),
        runs=runs,
        reference=reference,
        smooth=10,
        title=exp_dir.name,
    )
    path = figures.save(fig, Path(out) / exp_dir.name, "compare")
    log(f"figure: {path}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ablations.analysis.compare EXP_DIR [--out DIR] [--baseline VARIANT]``; exit 2
    with one line on bad input (an unknown ``--baseline`` names the variants)."""
    parser = argparse.ArgumentParser(
        prog="python -m ablations.analysis.compare", description=__doc__
    )
    parser.add_argument("exp_dir", type=Path, metavar="EXP_DIR", help="an experiment's folder")
    parser.add_argument(
        "--out", type=Path, default=REPO / "results" / "figures", help="figure folder"
    )
    parser.add_argument(
        "--baseline",
        metavar="VARIANT",
        help="the variant differences are taken from (default: the first)",
    )
    args = parser.parse_args(argv)
    try:
        compare(args.exp_dir, args.out, baseline=args.baseline)
    except (results.ResultsError, ReportError, FrozenError) as e:
        return fail(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
