"""The claim table: every verdict the committed studies give, in one place (issue 20, item 2).

Each study states its own answers (:mod:`ablations.analysis.verdicts`): the regime table's
hypothesis rows (H1 in ``nvlamb`` mode, H2-H5), the stability edges (H1'), and the batch-scaling
pairs. This module only gathers them, so that the README's claim table is generated from the
same verdicts its sections cite (``python -m ablations.analysis.readme check`` compares them)::

    python -m ablations.studies.claims reproduction
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ablations.analysis.verdicts import Verdict
from ablations.core.errors import fail
from ablations.studies import scaling, scaling_verdicts
from ablations.studies.regime.edge import edges, pooled_points
from ablations.studies.regime.edge import verdicts as edge_verdicts
from ablations.studies.regime.effects import regime_table

#: The committed studies' folders under the reproduction folder.
REGIME = "regime_map"
#: The batch-scaling designs: folder -> its experiments' prefix (each its own verdict ids).
SCALING = {"batch_scaling": scaling.PREFIX, "batch_resolved": "resolved_"}


def claims(reproduction: Path | str) -> list[Verdict]:
    """Every verdict of the studies under ``reproduction`` (those present), by id."""
    base = Path(reproduction)
    out: list[Verdict] = []
    if (base / REGIME).is_dir():
        table = regime_table(base / REGIME)
        if not table.empty:
            out += [v for v in table["verdict"] if v is not None]
        points = pooled_points(base / REGIME)
        if len(points):
            out += edge_verdicts(edges(points))
    for folder, prefix in SCALING.items():
        if (base / folder).is_dir():
            study = scaling.load(base / folder, prefix)
            out += scaling_verdicts.verdicts(study, name=scaling_verdicts.verdict_name(prefix))
    return sorted(out, key=lambda v: _order(v.id))


def _order(id: str) -> tuple:
    """H1 < H2 < ... < scaling < scaling_resolved, then the id itself."""
    head = id.split(".", 1)[0]
    number = int(head[1:]) if head[:1] == "H" and head[1:].isdigit() else 99
    return (number, id)


def claims_table(reproduction: Path | str) -> pd.DataFrame:
    """:func:`claims` as the README's table: the claim, its verdict as a citable ``id: answer``
    span, the evidence and what would settle it."""
    return pd.DataFrame(
        [
            {
                "claim": v.claim,
                "verdict": f"`{v.id}: {v.answer}`",
                "evidence": v.evidence,
                "next": v.extend or "–",
            }
            for v in claims(reproduction)
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ablations.studies.claims REPRODUCTION``: the claim table (Markdown); one
    ``error:`` line when no study there gives a verdict."""
    parser = argparse.ArgumentParser(prog="python -m ablations.studies.claims", description=__doc__)
    parser.add_argument("reproduction", type=Path, help="the folder of the committed studies")
    args = parser.parse_args(argv)
    try:
        table = claims_table(args.reproduction)
    except (OSError, ValueError, KeyError) as e:
        return fail(e)
    if table.empty:
        return fail(
            ValueError(f"{args.reproduction}: no study with a verdict ({REGIME}, {SCALING})")
        )
    print(table.to_markdown(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
