"""lamb_variants: the LAMB optimizer family as independent knobs, exact presets, schedules.

>>> import torch, lamb_variants
>>> model = torch.nn.Linear(4, 2)
>>> opt = lamb_variants.create("nvlamb", model.named_parameters(), lr=1e-3)
"""

from . import schedules
from .knobs import DEFAULTS, KNOB_NAMES
from .layers import NVIDIA_NO_DECAY, nvidia_param_groups
from .optimizer import Lamb, LambStats
from .presets import PRESETS, Preset, create
from .schedules import PolyWarmup, start_phase, warmup_poly

__all__ = [
    "DEFAULTS",
    "KNOB_NAMES",
    "NVIDIA_NO_DECAY",
    "PRESETS",
    "Lamb",
    "LambStats",
    "PolyWarmup",
    "Preset",
    "create",
    "nvidia_param_groups",
    "schedules",
    "start_phase",
    "warmup_poly",
]
__version__ = "0.1.0"
