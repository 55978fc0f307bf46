"""The stability edge of each LR curve, bracketed (``stability_edge`` beside ``lr_sensitivity``),
and H1's verdicts on it.

The two experiments train the same six curves (apex and nvlamb mode × recipe, no
pre-normalization, no bias correction) with the same workload; ``stability_edge`` adds lrs
inside ``lr_sensitivity``'s last gap (0.024, 0.048]. Their runs are pooled by settings (mode,
intervention, lr, seed: never by variant name) and each curve's edge is read from the pooled
outcomes (:func:`ablations.studies.regime.lr.stability_edge`: the largest lr at which no seed
failed to train or diverged, the first at which one did).

H1' (sweeps/regime_map.yaml, stated before the runs): in apex mode removing pre-normalization
or bias correction moves the first failing lr below the recipe's; in nvlamb mode the three
curves fail first at the same lr. Verdicts (:func:`ablations.analysis.verdicts.edge_order`):
``H1.<mode>.<intervention>``; censored when an edge lies past an end of the pooled grid.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ablations.analysis.verdicts import Verdict, edge_order
from ablations.studies.regime.experiments import Tables
from ablations.studies.regime.lr import lr_points, stability_edge

#: The experiments whose runs are pooled, in the order their lrs were added.
EXPERIMENTS = ("lr_sensitivity", "stability_edge")

#: H1' per mode: how each intervention's edge compares with the recipe's.
PREDICTED = {"apex": "lower", "nvlamb": "same"}

_CLAIM = {
    "lower": "removing {what} lowers the first failing lr ({mode} mode)",
    "same": "removing {what} leaves the first failing lr where it is ({mode} mode)",
}
_WHAT = {"no_prenorm": "pre-normalization", "no_bias_correction": "bias correction"}


def pooled_points(results_dir: Path | str) -> pd.DataFrame:
    """:func:`ablations.studies.regime.lr.lr_points` of every experiment in
    :data:`EXPERIMENTS` that has runs, concatenated, with an ``experiment`` column."""
    tables = Tables(Path(results_dir))
    parts = []
    for name in EXPERIMENTS:
        runs = tables.get(name, "runs")
        if runs is not None:
            parts.append(lr_points(runs).assign(experiment=name))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def edges(points: pd.DataFrame) -> pd.DataFrame:
    """Per (mode, intervention): for every lr, how many seeds failed to train or diverged out of
    how many ran (``bad_at``/``runs_at``, lr -> count), and the stability edge."""
    rows = []
    for (mode, name), g in points.groupby(["mode", "intervention"], sort=True):
        bad = (g["diverged"] | g["failed"]).groupby(g["lr"]).sum()
        rows.append(
            {
                "mode": mode,
                "intervention": name,
                "bad_at": bad.astype(int).to_dict(),
                "runs_at": g.groupby("lr").size().to_dict(),
                **stability_edge(bad),
            }
        )
    return pd.DataFrame(rows)


def verdicts(table: pd.DataFrame) -> list[Verdict]:
    """H1' for every intervention of every mode in :data:`PREDICTED` that has a recipe curve."""
    out = []
    for mode, predicted in PREDICTED.items():
        curves = table[table["mode"] == mode].set_index("intervention")
        if "baseline" not in curves.index:
            continue
        for name in ("no_prenorm", "no_bias_correction"):
            if name not in curves.index:
                continue
            claim = _CLAIM[predicted].format(what=_WHAT[name], mode=mode)
            out.append(
                edge_order(
                    f"H1.{mode}.{name}",
                    claim,
                    curves.loc[name].to_dict(),
                    curves.loc["baseline"].to_dict(),
                    predicted,
                )
            )
    return out


def edge_markdown(table: pd.DataFrame) -> str:
    """The README's edge table: failed-or-diverged seeds per lr for each curve, its edge, and
    the verdict on it (as a citable ``id: answer`` span)."""
    lrs = sorted({lr for d in table["runs_at"] for lr in d})
    by_id = {v.id: v for v in verdicts(table)}
    lines = []
    for _, r in table.iterrows():
        row = {"mode": r["mode"], "intervention": r["intervention"]}
        for lr in lrs:
            n = r["runs_at"].get(lr)
            row[f"{lr:.3g}"] = "–" if n is None else f"{r['bad_at'].get(lr, 0)}/{n}"
        if r["edge"] == "bracketed":
            row["edge"] = f"({r['max_trained_lr']:.3g}, {r['first_failed_lr']:.3g}]"
        else:
            row["edge"] = r["edge"]
        v = by_id.get(f"H1.{r['mode']}.{r['intervention']}")
        row["H1' verdict"] = "reference" if v is None else f"`{v.id}: {v.answer}`"
        row["evidence"] = "–" if v is None else v.evidence + (f"; {v.extend}" if v.extend else "")
        lines.append(row)
    return pd.DataFrame(lines).to_markdown(index=False)
