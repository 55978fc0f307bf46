"""The run config: what one training run is told to do, as frozen dataclasses built strictly.

- :mod:`~ablations.config.build`: the generic strict builder (plain data -> frozen dataclass,
  one-line errors naming the key path) and dotted-path setting; the sweep file uses it too.
- :mod:`~ablations.config.run`: :class:`RunConfig` and its sections, and
  :func:`with_overrides`, the one way a config is changed by path.
- :mod:`~ablations.config.groups`: ``optimizer.groups``, the knobs and lr multiplier of each of
  NVIDIA's two parameter groups.

What a config *resolves to* (every optimizer knob per parameter group, λ, tensors, data) is
:mod:`ablations.run.resolved`.
"""

from ablations.config.build import build, check, check_key, plain
from ablations.config.groups import GROUP_NAMES, LR_SCALE_BIAS_CORRECTION, GroupOverrides
from ablations.config.run import (
    FACTORY_WEIGHT_DECAY,
    MODEL_SIZES,
    DataConfig,
    LogConfig,
    ModelConfig,
    OptimizerConfig,
    PhaseConfig,
    RunConfig,
    load_factory,
    with_overrides,
)
from ablations.core.errors import ConfigError

__all__ = [
    "FACTORY_WEIGHT_DECAY",
    "GROUP_NAMES",
    "LR_SCALE_BIAS_CORRECTION",
    "MODEL_SIZES",
    "ConfigError",
    "DataConfig",
    "GroupOverrides",
    "LogConfig",
    "ModelConfig",
    "OptimizerConfig",
    "PhaseConfig",
    "RunConfig",
    "build",
    "check",
    "check_key",
    "load_factory",
    "plain",
    "with_overrides",
]
