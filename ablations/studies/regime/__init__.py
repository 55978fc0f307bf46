"""The regime map's analysis (``sweeps/regime_map.yaml``): LR sensitivity, each claim's paired
effect in each regime with the mechanism the telemetry shows, and the ε calibration. One module
per question; this package gathers them under one name for ``notebooks/regime_map.ipynb``
(``regime.lr_points``, ``regime.regime_table``, ...):

- :mod:`~ablations.studies.regime.lr`: LR sensitivity per mode and intervention (Wortsman et
  al. 2023);
- :mod:`~ablations.studies.regime.effects`: the regime table, each claim's intervention minus the
  recipe paired by seed, regime by regime;
- :mod:`~ablations.studies.regime.mechanism`: the telemetry behind an effect (ε-dominated share,
  the no-decay tensors' applied step, Σlr);
- :mod:`~ablations.studies.regime.decay`: whether the decay runs flattened;
- :mod:`~ablations.studies.regime.calibration`: √v̂ quantiles -> the ε matched to BERT-large;
- :mod:`~ablations.studies.regime.experiments`: the map's tables and tensor sizes, read once;
- :mod:`~ablations.studies.regime.markdown`: the README's tables.

Runs are picked by their settings (:mod:`ablations.studies.selection`), never by the names the
sweep generated for its variants. The figures are :mod:`ablations.studies.regime_plots`; the
commands are in :mod:`ablations.studies.regime.__main__` (``python -m
ablations.studies.regime``).
"""

from ablations.studies.regime.calibration import calibrate, calibration_text, load_calibration
from ablations.studies.regime.decay import FLAT_FRACTION, FLAT_NATS, flattening
from ablations.studies.regime.effects import (
    EQUAL_MASS_PEAK,
    RECIPE_LR,
    RESOLVED,
    ROWS,
    Row,
    regime_table,
)
from ablations.studies.regime.experiments import METRIC, Tables, tensor_sizes
from ablations.studies.regime.lr import (
    INTERVENTIONS,
    initial_loss,
    intervention,
    lr_points,
    lr_sensitivity,
    lr_table,
)
from ablations.studies.regime.markdown import lr_markdown, regime_markdown
from ablations.studies.regime.mechanism import (
    eps_dominated_share,
    lr_mass_ratio,
    nodecay_step_ratio,
)

#: tests/test_regime_map.py's name for :func:`load_calibration`.
_calibration = load_calibration

__all__ = [
    "EQUAL_MASS_PEAK",
    "FLAT_FRACTION",
    "FLAT_NATS",
    "INTERVENTIONS",
    "METRIC",
    "RECIPE_LR",
    "RESOLVED",
    "ROWS",
    "Row",
    "Tables",
    "calibrate",
    "calibration_text",
    "eps_dominated_share",
    "flattening",
    "initial_loss",
    "intervention",
    "load_calibration",
    "lr_mass_ratio",
    "lr_markdown",
    "lr_points",
    "lr_sensitivity",
    "lr_table",
    "nodecay_step_ratio",
    "regime_markdown",
    "regime_table",
    "tensor_sizes",
]
