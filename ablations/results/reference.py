"""The reference lines of an experiment (reference.parquet): values to draw on MLM-loss plots,
today the unigram entropy of the masked tokens per phase, as the sweep recorded it in data.json.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ablations.core.fileio import read_json
from ablations.results.report import CollectReport


def read_reference(exp_dir: Path, name: str, report: CollectReport) -> pd.DataFrame:
    """The unigram entropy of the masked tokens per phase, as ``prepare_experiments`` recorded
    it in data.json. Without it there is no reference line: results never build the data."""
    data = read_json(exp_dir / "data.json", tolerant=True) or {}
    per_phase = {
        int(m.group(1)): float(v)
        for k, v in data.items()
        if (m := re.fullmatch(r"phase(\d+)_unigram_entropy", k)) and isinstance(v, int | float)
    }
    rows = [{"phase": p, "value": v, "source": "data.json"} for p, v in sorted(per_phase.items())]
    if not rows:
        report.notes.append("no reference line: data.json holds no unigram entropy")
    df = pd.DataFrame(rows, columns=["phase", "value", "source"])
    df.insert(0, "experiment", name)
    df.insert(1, "name", "unigram_entropy")
    df.insert(2, "label", "unigram entropy")
    df["phase"] = df["phase"].astype("Int64")
    df["value"] = df["value"].astype(float)
    return df
