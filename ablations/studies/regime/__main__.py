"""The regime map's commands (read the collected tables, write nothing but ``--out``)::

    python -m ablations.studies.regime table RESULTS_DIR [--format md|csv]   # the README's regime
    table
    python -m ablations.studies.regime lr RESULTS_DIR [--format md|csv]      # the LR-sensitivity
    table
    python -m ablations.studies.regime decay RESULTS_DIR [--format md|csv]   # did the loss flatten?
    python -m ablations.studies.regime edge RESULTS_DIR [--format md|csv]    # H1's stability
    edges, lr_sensitivity and stability_edge pooled, with their verdicts
    python -m ablations.studies.regime calibrate RUN_DIR|EXP_DIR --variant V|FILE.json [--json]
                                                                     # √v̂ quantiles -> matched ε

``RESULTS_DIR`` holds the map's experiments (``lr_sensitivity/``, ``warmup_bias_correction/``,
...; the committed ones: ``reproduction/regime_map``). A row whose experiment or runs are
missing is left out of the tables, never invented.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ablations.core.errors import fail
from ablations.core.fileio import FrozenError, check_writable, write_json
from ablations.studies.regime.calibration import calibration_text, load_calibration
from ablations.studies.regime.decay import flattening
from ablations.studies.regime.edge import edge_markdown, edges, pooled_points
from ablations.studies.regime.effects import regime_table
from ablations.studies.regime.experiments import Tables
from ablations.studies.regime.lr import lr_table
from ablations.studies.regime.markdown import lr_markdown, regime_markdown


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and print the table (or the calibration); exit 2 with one
    ``error:`` line on bad input."""
    parser = argparse.ArgumentParser(prog="python -m ablations.studies.regime", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("table", "lr", "decay", "edge"):
        p = sub.add_parser(name)
        p.add_argument("results", type=Path)
        p.add_argument("--format", choices=("md", "csv"), default="md")
    p = sub.add_parser("calibrate")
    p.add_argument(
        "source",
        type=Path,
        help="a finished run's directory, an experiment's (with --variant/--seed), or a saved "
        "calibration JSON",
    )
    p.add_argument("--variant", help="the run of this variant in an experiment directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.add_argument("--out", type=Path, help="also save them as JSON here (make reproduce-map)")
    args = parser.parse_args(argv)
    if args.command == "calibrate":
        try:
            out = load_calibration(args.source, args.variant, args.seed)
            if args.out is not None:
                check_writable(args.out)
                write_json(args.out, out)
        except (OSError, ValueError, FrozenError) as e:
            return fail(e)
        print(json.dumps(out, indent=1) if args.json else calibration_text(out))
        return 0
    if not args.results.is_dir():
        return fail(
            ValueError(f"{args.results}: expected a folder of the regime map's experiments")
        )
    if args.command == "decay":
        curves = Tables(args.results).get("decay_equal_mass", "curves")
        table = flattening(curves) if curves is not None else pd.DataFrame()
    elif args.command == "table":
        table = regime_table(args.results)
    elif args.command == "edge":
        points = pooled_points(args.results)
        table = edges(points) if len(points) else pd.DataFrame()
    else:
        table = lr_table(args.results)
    if table.empty:
        return fail(
            ValueError(
                f"{args.results}: no regime-map comparison with finished runs (collect first)"
            )
        )
    if args.format == "csv":
        print(table.to_csv(index=False), end="")
    elif args.command == "decay":
        print(table.to_markdown(index=False, floatfmt=".4f"))
    elif args.command == "edge":
        print(edge_markdown(table))
    else:
        print(regime_markdown(table) if args.command == "table" else lr_markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
