"""The regime map's experiments under one results folder (``lr_sensitivity/``,
``warmup_bias_correction/``, ...): each one's tables and its model's tensor sizes, read once, and
the metric every comparison of the map is on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ablations import results as res
from ablations.config import RunConfig
from ablations.core.fileio import read_json
from ablations.run import resolved

#: The runs column the map compares: the final validation MLM loss.
METRIC = "final_val_mlm_loss"

_LOADERS = {"runs": res.load_runs, "layers": res.load_layers, "curves": res.load_curves}


def tensor_sizes(exp_dir: Path) -> dict[str, int]:
    """Elements per tensor of the experiment's model, as the run's resolution builds it
    (:func:`ablations.run.resolved.with_model`) from sweep.json's workload and the vocabulary in
    data.json: the committed results hold no run directories. The optimizer settings of a
    variant change no tensor, so the workload alone says them."""
    workload = res.load_spec(exp_dir)["experiment"]["workload"]
    data = read_json(Path(exp_dir) / "data.json")
    if data is None:
        raise ValueError(f"{exp_dir}: no data.json (the vocabulary the model was built with)")
    config = RunConfig.from_dict(workload)
    return resolved.with_model(config, int(data["phase1_vocab_size"])).tensor_sizes()


class Tables:
    """Each experiment's runs, layers and curves (None when the experiment has no such table)
    and its tensor sizes, each loaded once."""

    def __init__(self, results_dir: Path) -> None:
        self.dir = results_dir
        self._cache: dict[tuple[str, str], Any] = {}

    def get(self, experiment: str, kind: str) -> pd.DataFrame | None:
        """``kind`` (``runs``, ``layers`` or ``curves``) of ``experiment``, or None."""
        key = (experiment, kind)
        if key not in self._cache:
            path = self.dir / experiment
            present = (path / f"{kind}.parquet").exists()
            self._cache[key] = _LOADERS[kind](path) if present else None
        return self._cache[key]

    def sizes(self, experiment: str) -> dict[str, int]:
        """:func:`tensor_sizes` of ``experiment``."""
        if (experiment, "sizes") not in self._cache:
            self._cache[(experiment, "sizes")] = tensor_sizes(self.dir / experiment)
        return self._cache[(experiment, "sizes")]
