"""Run configuration: frozen dataclasses, built strictly from plain dicts (YAML, CLI, sweep).

``RunConfig.from_dict`` rejects unknown keys, missing required keys and wrong types with a
one-line ``ConfigError`` naming the key path (``phases[1].seq_len``) and what was expected.
Nothing else in the harness reads raw dicts.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import lamb_variants
from ablations.config.build import build, check, plain, set_path
from ablations.config.groups import (
    GroupOverrides,
    check_knobs,
)
from ablations.core.errors import ConfigError

MODEL_SIZES: dict[str, dict[str, int]] = {
    # CPU-friendly sizes first; base and large are BERT's (NVIDIA's large: 24 x 1024, 16 heads).
    "tiny": {"hidden": 128, "layers": 2, "heads": 2, "intermediate": 512},
    "mini": {"hidden": 256, "layers": 4, "heads": 4, "intermediate": 1024},
    "small": {"hidden": 512, "layers": 4, "heads": 8, "intermediate": 2048},
    "medium": {"hidden": 512, "layers": 8, "heads": 8, "intermediate": 2048},
    "base": {"hidden": 768, "layers": 12, "heads": 12, "intermediate": 3072},
    "large": {"hidden": 1024, "layers": 24, "heads": 16, "intermediate": 4096},
}


@dataclass(frozen=True)
class ModelConfig:
    """BERT for pretraining, built from ``transformers`` modules (no weights downloaded)."""

    #: The network's shape, a name of :data:`MODEL_SIZES` (hidden size, layers, heads,
    #: intermediate size): ``tiny`` to ``medium`` are CPU-friendly, ``base`` and ``large`` are
    #: BERT's. The vocabulary size comes from the data, not from here.
    size: str = "tiny"
    #: Dropout probability of the hidden states and of the attention probabilities (BERT's
    #: ``hidden_dropout_prob`` and ``attention_probs_dropout_prob``; 0.1 is BERT's).
    dropout: float = 0.1
    #: Standard deviation of the normal initialization of every linear and embedding weight
    #: (biases start at 0, LayerNorm at (1, 0)); 0.02 is BERT's.
    initializer_range: float = 0.02
    #: Rows of the learned position-embedding table: the longest ``seq_len`` any phase may use
    #: (checked); 512 is BERT's.
    max_position_embeddings: int = 512

    def __post_init__(self) -> None:
        check(self.size in MODEL_SIZES, "model.size", f"one of {sorted(MODEL_SIZES)}", self.size)
        check(0.0 <= self.dropout < 1.0, "model.dropout", "a number in [0, 1)", self.dropout)


@dataclass(frozen=True)
class DataConfig:
    """Where examples come from.

    ``source``: ``"embedded"`` (the default English corpus), a text file or folder of ``.txt``
    files (documents separated by blank lines), or a folder of NVIDIA pretraining ``.hdf5``
    shards (``format="hdf5"``). ``vocab_file``: a BERT ``vocab.txt``; otherwise a WordPiece
    vocabulary of ``vocab_size`` is trained on the corpus (cached by content hash).
    """

    #: Where the examples come from: ``embedded`` (the English corpus built from the installed
    #: packages' documentation, offline), a UTF-8 text file or a folder of ``*.txt`` files
    #: (one paragraph per line, documents separated by blank lines), or, with
    #: ``format: hdf5``, an NVIDIA ``.hdf5`` shard or folder of shards. A phase's
    #: ``data_source`` replaces it for that phase.
    source: str = "embedded"
    #: ``text``: examples are built from ``source`` here (tokenized, paired, masked; cached under
    #: ``cache_dir``). ``hdf5``: NVIDIA's pretraining shards, read as they are (already masked:
    #: ``vocab_size``, ``masked_lm_prob``, ``short_seq_prob``, ``dupe_factor`` and ``seed`` do
    #: not apply); their sequence length and predictions must equal the phase's ``seq_len`` and
    #: ``max_predictions``.
    format: Literal["text", "hdf5"] = "text"
    #: A BERT ``vocab.txt`` (``[PAD]`` at id 0, with ``[UNK]``, ``[CLS]``, ``[SEP]``,
    #: ``[MASK]``). Text: the corpus is tokenized with it instead of a trained vocabulary.
    #: Shards: the vocabulary size (checked against the shards' token ids). None: a WordPiece
    #: vocabulary of ``vocab_size`` trained on the corpus (text), or the shards' largest token
    #: id + 1 rounded up to a multiple of 8 (hdf5). A phase's ``vocab_file`` replaces it for
    #: that phase.
    vocab_file: str | None = None
    #: Size of the WordPiece vocabulary trained on the corpus (special tokens included; the
    #: model's embedding has a row per token): only with ``format: text`` and no ``vocab_file``.
    vocab_size: int = 4096
    #: Lower-case and strip accents before WordPiece (BERT's uncased models); must match a
    #: given ``vocab_file``. Text only (shards are tokenized already).
    lower_case: bool = True
    #: Fraction of an example's tokens to mask (rounded; at least one, at most the phase's
    #: ``max_predictions``); each becomes ``[MASK]`` with probability 0.8, a random token with
    #: 0.1 and stays with 0.1. 0.15 is BERT's and NVIDIA's. Text only.
    masked_lm_prob: float = 0.15
    #: Probability that an example's target length is drawn uniformly from [2, ``seq_len`` - 3]
    #: instead of ``seq_len`` - 3 (google-research/bert ``create_pretraining_data.py``'s default
    #: 0.1). Text only.
    short_seq_prob: float = 0.1
    #: Passes over the training documents, each with its own sentence pairing and masking (more,
    #: different examples of the same text); the validation split always gets one. Text only.
    dupe_factor: int = 1
    #: Held out for validation. Text: this fraction of the documents (seeded by ``seed``; at
    #: least one on each side). Shards: a ``validation/`` subfolder of ``source`` if there is
    #: one, else this last fraction of the examples in sorted shard order. 0: nothing held out
    #: (no validation, but from such a subfolder).
    val_fraction: float = 0.02
    #: Seed of building the examples (the train/validation split of the documents, the sentence
    #: pairs, the masks). Text only; the training order and the model come from the run's
    #: ``seed``.
    seed: int = 12345
    #: Folder of the built data: the embedded corpus, trained vocabularies, examples (as NVIDIA
    #: shards) and shard statistics, each keyed by its inputs, so runs with the same settings
    #: share them. A relative path is from the working directory.
    cache_dir: str = ".cache/ablations"
    #: ``DataLoader`` worker processes per device for the training and validation batches; 0:
    #: loaded in the training process.
    num_workers: int = 0

    def __post_init__(self) -> None:
        check(self.vocab_size >= 128, "data.vocab_size", "an integer >= 128", self.vocab_size)
        check(0 < self.masked_lm_prob < 1, "data.masked_lm_prob", "in (0, 1)", self.masked_lm_prob)
        check(0 <= self.val_fraction < 1, "data.val_fraction", "in [0, 1)", self.val_fraction)
        check(self.dupe_factor >= 1, "data.dupe_factor", "an integer >= 1", self.dupe_factor)


@dataclass(frozen=True)
class PhaseConfig:
    """One pretraining phase (NVIDIA: phase 1 at 128/20, phase 2 at 512/80).

    ``global_batch`` = ``micro_batch`` x accumulation x devices, per optimizer step. The LR
    schedule is linear warmup over ``warmup`` (a fraction of ``steps``) then polynomial decay
    of degree ``decay_power``; ``schedule="start"`` is NVIDIA's PolyWarmUpScheduler.
    """

    #: Optimizer steps (applied updates) of this phase, the length of its LR schedule; fp16
    #: steps the loss scaler skips do not count. NVIDIA: 7038, then 1563.
    steps: int = 100
    #: Examples per optimizer step, over every device and node: ``micro_batch`` x gradient
    #: accumulation x ``devices`` x ``num_nodes`` (a multiple of ``micro_batch`` x ``devices``
    #: x ``num_nodes``). NVIDIA: 65536, then 32768.
    global_batch: int = 32
    #: Examples per forward and backward pass on one device (also the validation batch): a
    #: memory setting, the examples of each optimizer step do not depend on it.
    micro_batch: int = 32
    #: Tokens per example, ``[CLS]`` and both ``[SEP]`` included; at most
    #: ``model.max_position_embeddings``. NVIDIA: 128, then 512.
    seq_len: int = 64
    #: Masked positions per example at most (the width of ``masked_lm_positions``).
    #: NVIDIA: 20, then 80.
    max_predictions: int = 10
    #: Base learning rate, the schedule's peak at the end of warmup (the optimizer's lr; each
    #: parameter group's ``lr_scale`` multiplies it). 6e-3 is NVIDIA's phase 1 (phase 2: 4e-3).
    lr: float = 6e-3
    #: Linear warmup from 0, as a fraction of ``steps`` (NVIDIA's ``warmup_proportion``).
    #: 0.2843 is NVIDIA's phase 1 (phase 2: 0.128).
    warmup: float = 0.2843
    #: Exponent of the polynomial decay to 0 after warmup (NVIDIA's ``degree``): 0.5 is
    #: NVIDIA's, 1 linear (Google BERT, Hugging Face), 0 constant.
    decay_power: float = 0.5
    #: Where the decay is measured from: ``start``: step 0, so the lr drops at the end of
    #: warmup (NVIDIA's ``PolyWarmUpScheduler``); ``warmup``: the end of warmup, continuous
    #: (Hugging Face's ``get_polynomial_decay_schedule_with_warmup``).
    schedule: Literal["start", "warmup"] = "start"
    #: This phase's own data, over ``data.source`` / ``data.vocab_file`` (NVIDIA's phases read
    #: different shard folders: sequence 128 / 20 predictions, then 512 / 80); None: ``data``'s.
    data_source: str | None = None
    #: This phase's own ``vocab.txt``, over ``data.vocab_file``; None: ``data``'s.
    vocab_file: str | None = None

    def __post_init__(self) -> None:
        check(self.steps >= 1, "steps", "an integer >= 1", self.steps)
        check(self.micro_batch >= 1, "micro_batch", "an integer >= 1", self.micro_batch)
        check(
            self.global_batch % self.micro_batch == 0,
            "global_batch",
            f"a multiple of micro_batch={self.micro_batch}",
            self.global_batch,
        )
        check(self.seq_len >= 8, "seq_len", "an integer >= 8", self.seq_len)
        check(
            1 <= self.max_predictions <= self.seq_len,
            "max_predictions",
            "an integer in [1, seq_len]",
            self.max_predictions,
        )
        check(self.lr > 0, "lr", "a number > 0", self.lr)
        check(0 <= self.warmup < 1, "warmup", "a fraction of steps in [0, 1)", self.warmup)
        check(self.decay_power >= 0, "decay_power", "a number >= 0", self.decay_power)

    def accumulation(self, devices: int) -> int:
        """Micro-batches per optimizer step on each device."""
        per_step = self.micro_batch * devices
        if self.global_batch % per_step:
            raise ConfigError(
                f"global_batch={self.global_batch} is not a multiple of "
                f"micro_batch x devices = {per_step}"
            )
        return self.global_batch // per_step


_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
#: λ of the decayed group for a ``factory`` optimizer without ``weight_decay``: NVIDIA's BERT
#: recipe's 0.01 (run_pretraining.py).
FACTORY_WEIGHT_DECAY = 0.01


def load_factory(path: str) -> Any:
    """The callable named by ``optimizer.factory`` (``"package.module:function"``); raises a
    one-line :class:`ConfigError` when it cannot be imported or is not callable."""
    module_name, _, name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or the module's own error while importing
        raise ConfigError(f"optimizer.factory: cannot import {module_name!r}: {e}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"optimizer.factory: {module_name!r} has no callable {name!r}")
    return fn


@dataclass(frozen=True)
class OptimizerConfig:
    """A ``lamb_variants`` preset plus knob overrides (the lr comes from each phase).

    The parameters are NVIDIA's two groups (:func:`lamb_variants.nvidia_param_groups`): biases
    and LayerNorm always get λ = 0; the other tensors get λ (resolved in
    :mod:`ablations.run.resolved`), the
    preset's upstream λ unless ``weight_decay`` sets one. ``weight_decay`` is the one place for
    λ (``overrides.weight_decay`` is an error): None, not a number, is the default so that a
    variant switching ``preset`` gets that preset's λ instead of a value copied from another.
    """

    #: None only with ``factory``, which sets it so: the run's config names what it trained.
    preset: str | None = "nvlamb"
    #: Knob values over the preset's, for every parameter group (``prenorm: none``,
    #: ``bias_correction: false``); any ``lamb_variants`` knob but ``lr`` (the phases') and
    #: ``weight_decay`` (``optimizer.weight_decay``). ``groups`` override these per group.
    overrides: Mapping[str, Any] = field(default_factory=dict)
    #: λ of the decayed parameter group; None: the preset's upstream default (with a
    #: ``factory``: NVIDIA's BERT λ, :data:`FACTORY_WEIGHT_DECAY`).
    weight_decay: float | None = None
    #: Your own optimizer instead of a preset: ``"package.module:function"``, called as
    #: ``function(param_groups, lr=...)`` with NVIDIA's two param groups (each a dict with
    #: ``params`` as (name, tensor) pairs and ``weight_decay``), returning a
    #: ``torch.optim.Optimizer``. ``preset`` is then None (the config names what trained) and
    #: ``overrides`` must be empty; the module is imported when training starts
    #: (:func:`load_factory`).
    factory: str | None = None
    #: "carry": NVIDIA's phase 2 (moments kept, step count and schedule restarted);
    #: "fresh": a new optimizer for phase 2.
    phase2: Literal["carry", "fresh"] = "carry"
    #: Per-group overrides of knobs and lr (:class:`GroupOverrides`); empty: every group as
    #: ``preset`` + ``overrides``.
    groups: GroupOverrides = field(default_factory=GroupOverrides)

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", types.MappingProxyType(dict(self.overrides)))
        if self.factory is not None:  # a factory's run trains no preset, so names none
            object.__setattr__(self, "preset", None)
        check(
            self.factory is not None or self.preset in lamb_variants.PRESETS,
            "optimizer.preset",
            f"one of {sorted(lamb_variants.PRESETS)}",
            self.preset,
        )
        if "weight_decay" in self.overrides:
            raise ConfigError(
                "optimizer.overrides.weight_decay: not an override; set optimizer.weight_decay "
                "(λ of the decayed param group; biases and LayerNorm get 0)"
            )
        wd = self.weight_decay
        ok = wd is None or 0 <= wd < float("inf")
        check(ok, "optimizer.weight_decay", "a number >= 0, or null for the preset's", wd)
        if self.factory is not None:
            check(
                _FACTORY.match(self.factory) is not None,
                "optimizer.factory",
                "'package.module:function'",
                self.factory,
            )
            check(
                not self.overrides,
                "optimizer.overrides",
                "none with optimizer.factory (knobs belong to the presets)",
                dict(self.overrides),
            )
            check(
                not self.groups,
                "optimizer.groups",
                "none with optimizer.factory (knobs belong to the presets)",
                plain(self.groups),
            )
        check_knobs("optimizer.overrides", self.overrides)


@dataclass(frozen=True)
class LogConfig:
    """What is written to the run's curves, and what training shows while it runs."""

    layer_every: int = 50  # per-layer trust ratios every N optimizer steps
    val_every: int = 100  # validation loss every M optimizer steps (and at the end)
    #: Validation batches (of ``micro_batch`` examples, split over the devices) evaluated at
    #: each validation, the first ones of the validation split each time; 0: no validation.
    val_batches: int = 8
    #: On accelerators, per-step metrics stay on the device and are read (one host sync) every
    #: this many optimizer steps, before each checkpoint and at validation; on CPU every step.
    flush_every: int = 50
    #: What ``train`` shows while it runs (:mod:`ablations.run.progress`): "bar", Lightning's
    # progress
    #: bar (for a terminal); "lines", a status line on stderr every ``status_every_seconds`` (for
    #: log files: SLURM, sweep workers, CI); "none"; "auto": the bar if stderr is a terminal,
    #: else lines. Display only: a run may be resumed with another value.
    progress: Literal["auto", "bar", "lines", "none"] = "auto"
    #: Seconds between status lines; 0: one line per optimizer step.
    status_every_seconds: float = 30.0
    #: Lightning loggers that get a copy of the curves' numbers at each run step, under
    #: ``<run_dir>/logs/``: "csv", "tensorboard" (in the harness's packages), "wandb" (offline;
    #: ``wandb sync`` uploads) and "mlflow" (the run's SQLite store, or ``MLFLOW_TRACKING_URI``;
    #: both in the ``trackers`` extra). The JSONL curves stay
    #: the source of truth; a run may be resumed with other loggers.
    loggers: tuple[Literal["csv", "tensorboard", "wandb", "mlflow"], ...] = ()
    #: Measure the gradient noise scale B_simple every step (:mod:`ablations.run.noise`): the
    #: micro-batch gradients' squared norms against the step's; needs micro_batch <
    #: global_batch (accumulation, or more than one device).
    noise_scale: bool = False
    #: Weight of the past in the noise scale's moving averages.
    noise_ema: float = 0.95

    def __post_init__(self) -> None:
        for name in ("layer_every", "val_every", "flush_every"):
            value = getattr(self, name)
            check(value >= 1, f"log.{name}", "an integer >= 1", value)
        check(0 <= self.noise_ema < 1, "log.noise_ema", "a number in [0, 1)", self.noise_ema)
        check(self.val_batches >= 0, "log.val_batches", "an integer >= 0", self.val_batches)
        every = self.status_every_seconds
        check(0 <= every < float("inf"), "log.status_every_seconds", "a number >= 0", every)


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs; written to ``<run_dir>/config.yaml``."""

    #: The network: BERT's size, dropout and initialization.
    model: ModelConfig = field(default_factory=ModelConfig)
    #: The examples: corpus or shards, vocabulary, masking, validation split, caches.
    data: DataConfig = field(default_factory=DataConfig)
    #: The ``lamb_variants`` preset (or your own optimizer), its knob overrides and λ.
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    #: The pretraining phases, run in order (NVIDIA: two); phase 2 starts from phase 1's end
    #: with a restarted step count and schedule (``optimizer.phase2``).
    phases: tuple[PhaseConfig, ...] = (PhaseConfig(),)
    #: Lightning's precision: ``32`` (fp32), ``bf16-mixed`` (bf16 autocast) or ``16-mixed``
    #: (fp16 autocast with a dynamic loss scale; steps with non-finite gradients are skipped).
    precision: Literal["32", "bf16-mixed", "16-mixed"] = "32"
    #: Lightning's accelerator: ``cpu``, ``gpu`` (CUDA) or ``auto`` (a GPU if there is one).
    accelerator: Literal["cpu", "gpu", "auto"] = "cpu"
    #: Devices per node, one process each; more than one in all (``devices`` x ``num_nodes``)
    #: trains with DDP, each step's ``global_batch`` split over them. A sweep's
    #: ``slurm.tasks_per_node`` must equal it (a local sweep runs one device only).
    devices: int = 1
    #: Nodes of the run (Lightning's ``num_nodes``; a sweep's ``slurm.nodes`` must equal it);
    #: the world size is ``devices`` x ``num_nodes``.
    num_nodes: int = 1
    #: The run's seed: weight initialization, dropout and the order of the training examples
    #: (the examples themselves come from ``data.seed``). A sweep sets it for each trial from
    #: the experiment's ``seeds``.
    seed: int = 0
    #: Diverged: a non-finite loss, or a loss above this multiple of the first step's loss.
    divergence_factor: float = 3.0
    #: End the run (complete) at the first validation whose ``val/mlm_loss`` is at most this:
    #: steps-to-target studies need no steps beyond the target. None: run every step.
    stop_at: float | None = None
    #: ``last.ckpt`` of the current phase every this many optimizer steps (resume point).
    checkpoint_every: int = 100
    #: What the run records (curves, validation, trust ratios, loggers) and shows while it runs.
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        check(1 <= len(self.phases) <= 2, "phases", "a list of 1 or 2 phases", len(self.phases))
        check(self.devices >= 1, "devices", "an integer >= 1", self.devices)
        factor = self.divergence_factor
        check(factor > 1, "divergence_factor", "a number > 1", factor)
        stop = self.stop_at
        check(stop is None or 0 < stop < math.inf, "stop_at", "null or a loss > 0", stop)
        every = self.checkpoint_every
        check(every >= 1, "checkpoint_every", "an integer >= 1", every)
        check(self.num_nodes >= 1, "num_nodes", "an integer >= 1", self.num_nodes)
        for i, phase in enumerate(self.phases):
            try:
                phase.accumulation(self.devices * self.num_nodes)
            except ConfigError as e:
                raise ConfigError(f"phases[{i}].{e}") from None
            limit = self.model.max_position_embeddings
            check(
                phase.seq_len <= limit,
                f"phases[{i}].seq_len",
                f"at most model.max_position_embeddings={limit}",
                phase.seq_len,
            )
            check(
                not self.log.noise_scale or phase.micro_batch < phase.global_batch,
                "log.noise_scale",
                f"two batch sizes: phases[{i}] has micro_batch = global_batch; set micro_batch "
                "below global_batch (accumulation or more devices) or noise_scale false",
                self.log.noise_scale,
            )

    def phase_data(self, phase: PhaseConfig) -> DataConfig:
        """The data of ``phase``: ``data`` with the phase's own source and vocabulary, if any."""
        return dataclasses.replace(
            self.data,
            source=phase.data_source or self.data.source,
            vocab_file=phase.vocab_file or self.data.vocab_file,
        )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunConfig:
        """Build from plain data; unknown keys and wrong types raise :class:`ConfigError`."""
        return build(cls, raw)

    def to_dict(self) -> dict[str, Any]:
        return plain(self)


# ---------------------------------------------------------------------------------------------


def with_overrides(
    config: RunConfig, overrides: Mapping[str, Any], where: str = "", run: str = ""
) -> RunConfig:
    """``config`` with the value at each dotted path of ``overrides`` replaced, checked whole.

    The one way a config is changed by path: the run CLI's ``key=value``, the sweep's variant
    toggles and tuned points. It goes through plain data with every default filled in, so any
    key can be set, and rebuilds the config strictly, so an override is checked exactly as the
    same value in a file would be. Paths are applied in order (``phases.0.lr`` after ``phases``
    sets the new list's item); list items are set by index (``phases.0.lr``).

    Errors are one line: a path that does not exist names it under ``where``
    (``experiments.e.tune.phases.3: expected an index below 1``); a value the config refuses is
    named in the config's own notation after ``where`` and ``(run)``
    (``experiments.e.variants.grid (prenorm=x): optimizer.overrides.prenorm: ...``).
    """
    raw = config.to_dict()
    for path, value in overrides.items():
        set_path(raw, path, value, where)
    try:
        return RunConfig.from_dict(raw)
    except ConfigError as e:
        if not where:
            raise
        label = f"{where} ({run})" if run else where
        raise ConfigError(f"{label}: {e}") from None
