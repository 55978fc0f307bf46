"""An experiment's result table: per variant the final metric over seeds, and the paired
difference from a baseline variant, each with its 95% interval; what the README's tables are.

    python -m ablations report EXP_DIR [--baseline VARIANT] [--metric COLUMN]
                               [--format md|latex|csv]

Per variant: runs, complete, diverged (over every run of the variant), the seeds whose value
enters the mean (:func:`ablations.analysis.stats.select_runs`: the seed reruns of a tuned
experiment),
the mean with its Student-t interval (:func:`ablations.analysis.stats.summarize`), and the
difference
from ``--baseline`` (default: the experiment's first variant) paired by seed with its interval
(:func:`ablations.analysis.stats.paired_difference`). Reads the tables (collecting them first when
stale,
like the notebooks); writes nothing.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ablations import results
from ablations.analysis import stats
from ablations.core.errors import fail

METRIC = "final_val_mlm_loss"
FORMATS = ("md", "latex", "csv")


class ReportError(ValueError):
    """A baseline or metric the experiment does not have; one line."""


def report_table(
    runs: pd.DataFrame, baseline: str | None = None, metric: str = METRIC
) -> pd.DataFrame:
    """One row per variant (the experiment's order): counts, ``metric``'s mean and interval,
    and ``delta`` = variant − ``baseline`` paired by seed, with ``delta_low``/``delta_high``
    and ``pairs`` (the seeds where both completed)."""
    if metric not in runs:
        numeric = [c for c in runs if c.startswith(("final_", "best_"))]
        raise ReportError(f"--metric {metric!r}: not a column of runs; expected one of {numeric}")
    summary = stats.summarize(runs, metric)
    variants = [str(v) for v in summary.index]
    if not variants:
        raise ReportError("the experiment has no runs yet")
    baseline = variants[0] if baseline is None else baseline
    if baseline not in variants:
        raise ReportError(f"--baseline {baseline!r}: not a variant; expected one of {variants}")
    rows = []
    for v in variants:
        s = summary.loc[v]
        d = stats.paired_difference(runs, v, baseline, metric)
        own = v == baseline
        rows.append(
            {
                "variant": v,
                "runs": int(s["runs"]),
                "complete": int(s["complete"]),
                "diverged": int(s["diverged"]),
                "seeds": int(s["n"]),
                "mean": s["mean"],
                "ci_low": s["ci_low"],
                "ci_high": s["ci_high"],
                "pairs": 0 if own else d["n"],
                "delta": math.nan if own else d["mean"],
                "delta_low": math.nan if own else d["low"],
                "delta_high": math.nan if own else d["high"],
            }
        )
    table = pd.DataFrame(rows).set_index("variant")
    table.attrs.update(baseline=baseline, metric=metric)
    return table


def _interval(mean: float, low: float, high: float, sign: bool = False) -> str:
    if not math.isfinite(mean):
        return "–"
    fmt = "{:+.4f}" if sign else "{:.4f}"
    if not (math.isfinite(low) and math.isfinite(high)):
        return fmt.format(mean)
    return f"{fmt.format(mean)} [{fmt.format(low)}, {fmt.format(high)}]"


def render(table: pd.DataFrame, fmt: str = "md") -> str:
    """``table`` (:func:`report_table`) as Markdown, LaTeX or CSV (CSV keeps every number)."""
    if fmt == "csv":
        return table.reset_index().to_csv(index=False)
    baseline, metric = table.attrs.get("baseline", "?"), table.attrs.get("metric", METRIC)
    shown = pd.DataFrame(
        {
            "variant": table.index,
            f"{metric} [95% CI]": [
                _interval(r.mean, r.ci_low, r.ci_high) for r in table.itertuples()
            ],
            f"− {baseline} (paired) [95% CI]": [
                _interval(r.delta, r.delta_low, r.delta_high, sign=True) for r in table.itertuples()
            ],
            "seeds": table["seeds"].to_numpy(),
            "diverged": [f"{r.diverged}/{r.complete + r.diverged}" for r in table.itertuples()],
        }
    )
    if fmt == "latex":
        return _latex(shown)
    return shown.to_markdown(index=False)


def _latex(shown: pd.DataFrame) -> str:
    """A ``booktabs`` tabular that compiles with pdfLaTeX: pandas' ``Styler`` escapes ``_``,
    ``%``, ``&`` etc. in headers and cells; the Unicode minus and en dash of the intervals and
    empty cells become ``$-$`` and ``--`` (pdfLaTeX's default input has neither)."""
    styled = shown.style.hide(axis="index").format(escape="latex")
    styled = styled.format_index(escape="latex", axis="columns")
    columns = "l" + "".join("r" if c == "seeds" else "l" for c in shown.columns[1:])
    tex = styled.to_latex(hrules=True, column_format=columns)
    return tex.replace("−", "$-$").replace("–", "--")


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="an experiment's table: means and paired differences")
    p.add_argument("exp_dir", type=Path, metavar="EXP_DIR", help="an experiment's folder")
    p.add_argument("--baseline", help="the variant differences are taken from (default: first)")
    p.add_argument("--metric", default=METRIC, help=f"a runs.parquet column (default {METRIC})")
    p.add_argument("--format", choices=FORMATS, default="md")


def run(args: argparse.Namespace) -> int:
    try:
        runs = results.load_runs(args.exp_dir)
        table = report_table(runs, args.baseline, args.metric)
    except (results.ResultsError, ReportError) as e:
        return fail(e)
    print(render(table, args.format), end="" if args.format == "csv" else "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ablations")
    add_command(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))
