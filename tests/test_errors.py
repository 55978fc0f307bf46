"""Strict validation: bad knob values, unknown knobs, presets and overrides are errors whose
messages name the culprit and say what is allowed. Presets carry their provenance."""

from __future__ import annotations

import re

import pytest
import torch
from helpers import make_model, named_groups

from lamb_variants import DEFAULTS, KNOB_NAMES, PRESETS, Lamb, Preset, create

#: (knob overrides, substrings the message must contain: the knob and the allowed values).
BAD_KNOBS = [
    pytest.param(
        {"prenorm": "clipp"}, ["prenorm", "'none'", "'clip'", "'normalize'"], id="prenorm=clipp"
    ),
    pytest.param(
        {"bias_correction": 1},
        ["bias_correction", "True", "False", "'step_size'"],
        id="bias_correction=1",
    ),
    pytest.param(
        {"bias_correction": "yes"},
        ["bias_correction", "True", "False", "'step_size'"],
        id="bias_correction=yes",
    ),
    pytest.param({"phi": "tanh"}, ["phi", "'identity'", "'clip'"], id="phi=tanh"),
    pytest.param(
        {"layer_split": "layer"}, ["layer_split", "'tensor'", "'module'"], id="layer_split=layer"
    ),
    pytest.param({"adapt": "some"}, ["adapt", "'all'", "'decayed'", "'none'"], id="adapt=some"),
    pytest.param(
        {"decay": "adamw"}, ["decay", "'in_ratio'", "'decoupled'", "'l2'"], id="decay=adamw"
    ),
    pytest.param({"moments": "adagrad"}, ["moments", "'adam'", "'momentum'"], id="moments=adagrad"),
    pytest.param(
        {"ratio_denominator": "x"},
        ["ratio_denominator", "'update'", "'split'"],
        id="ratio_denominator=x",
    ),
    # M = 0 would zero every gradient (apex/timm divide by G/0 = inf): never allowed.
    pytest.param({"max_grad_norm": 0}, ["max_grad_norm", "(0.0, inf]"], id="max_grad_norm=0"),
    pytest.param({"max_grad_norm": -1}, ["max_grad_norm", "(0.0, inf]"], id="max_grad_norm=-1"),
    pytest.param({"betas": (1.0, 0.9)}, ["betas", "[0.0, 1.0)"], id="betas=(1.0,0.9)"),
    pytest.param({"betas": (0.9, 1.5)}, ["betas", "[0.0, 1.0)"], id="betas=(0.9,1.5)"),
    pytest.param({"betas": (0.9,)}, ["betas", "pair"], id="betas=(0.9,)"),
    pytest.param({"eps": -1}, ["eps", "[0.0, inf)"], id="eps=-1"),
    pytest.param({"eps": float("nan")}, ["eps", "[0.0, inf)"], id="eps=nan"),
    pytest.param({"weight_decay": -0.1}, ["weight_decay", "[0.0, inf)"], id="weight_decay=-0.1"),
    pytest.param({"trust_clip": (2, 1)}, ["trust_clip", "lo <= hi"], id="trust_clip=(2,1)"),
    pytest.param({"trust_clip": 5}, ["trust_clip", "None", "pair"], id="trust_clip=5"),
    pytest.param({"trust_clip": (0.0, 0.0)}, ["trust_clip", "(0.0, inf]"], id="trust_clip=(0,0)"),
    pytest.param(
        {"phi_min": 2.0, "phi_max": 1.0},
        ["phi_min", "phi_max", "phi_min <= phi_max"],
        id="phi_min>phi_max",
    ),
    pytest.param({"phi_max": 0.0}, ["phi_max", "(0.0, inf]"], id="phi_max=0"),
    pytest.param(
        {"grad_averaging": "yes"}, ["grad_averaging", "True or False"], id="grad_averaging=yes"
    ),
    pytest.param({"nesterov": 1}, ["nesterov", "True or False"], id="nesterov=1"),
    pytest.param(
        {"eps_inside_sqrt": None}, ["eps_inside_sqrt", "True or False"], id="eps_inside_sqrt=None"
    ),
    pytest.param({"eps_mode": "atan"}, ["eps_mode", "'add'", "'atan2'"], id="eps_mode=atan"),
    pytest.param({"eps_mode": True}, ["eps_mode", "'add'", "'atan2'"], id="eps_mode=True"),
    pytest.param({"trust_coeff": 0}, ["trust_coeff", "(0.0, inf)"], id="trust_coeff=0"),
    pytest.param({"momentum": 1.5}, ["momentum", "[0.0, 1.0]"], id="momentum=1.5"),
    pytest.param(
        {"nesterov": True, "dampening": 0.1}, ["nesterov", "dampening"], id="nesterov+dampening"
    ),
    pytest.param({"lr": -1e-3}, ["lr", "[0.0, inf]"], id="lr=-1e-3"),
    pytest.param({"foo": 1}, ["foo", *KNOB_NAMES], id="unknown-knob"),
]


def _check(excinfo, substrings):
    msg = str(excinfo.value)
    for s in substrings:
        assert s in msg, f"{s!r} not in {msg!r}"


@pytest.mark.parametrize(("knobs", "substrings"), BAD_KNOBS)
def test_bad_knob_in_constructor(knobs, substrings):
    with pytest.raises(ValueError) as excinfo:
        Lamb(make_model().parameters(), **knobs)
    _check(excinfo, substrings)


@pytest.mark.parametrize(("knobs", "substrings"), BAD_KNOBS)
def test_bad_knob_in_param_group(knobs, substrings):
    groups = named_groups(make_model())
    groups[1].update(knobs)
    with pytest.raises(ValueError) as excinfo:
        Lamb(groups)
    _check(excinfo, substrings)


@pytest.mark.parametrize(("knobs", "substrings"), BAD_KNOBS)
def test_bad_knob_in_added_param_group(knobs, substrings):
    model = make_model()
    opt = Lamb([model.dense_in.weight])
    with pytest.raises(ValueError) as excinfo:
        opt.add_param_group({"params": [model.head.weight], **knobs})
    _check(excinfo, substrings)


@pytest.mark.parametrize(
    ("knobs", "substrings"), [p for p in BAD_KNOBS if not {"foo", "lr"} & set(p.values[0])]
)
def test_bad_knob_as_preset_override(knobs, substrings):
    with pytest.raises(ValueError) as excinfo:
        create("nvlamb", make_model().parameters(), lr=1e-3, **knobs)
    _check(excinfo, substrings)


def test_bad_knob_in_loaded_state_dict():
    model = make_model()
    sd = Lamb(named_groups(model)).state_dict()
    sd["param_groups"][1]["prenorm"] = "clipp"
    with pytest.raises(ValueError, match="prenorm"):
        Lamb(named_groups(model)).load_state_dict(sd)


@pytest.mark.parametrize(
    "knobs",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"max_grad_norm": 1e-12, "betas": (0.0, 0.0), "eps": 0.0}, id="edges"),
        pytest.param({"trust_clip": [0.0, 1.0], "betas": [0.9, 0.99]}, id="lists-as-pairs"),
        pytest.param(
            {"bias_correction": "step_size", "phi": "clip", "phi_min": 1.0, "phi_max": 1.0},
            id="phi_min=phi_max",
        ),
    ],
)
def test_good_knobs_are_accepted(knobs):
    opt = Lamb(make_model().parameters(), **knobs)
    for k, v in knobs.items():
        got = opt.param_groups[0][k]
        assert got == (tuple(v) if isinstance(v, list) else v), k


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError) as excinfo:
        create("nope", make_model().parameters(), lr=1e-3)
    _check(excinfo, ["nope", *PRESETS])


def test_unknown_override_lists_valid_keys():
    with pytest.raises(ValueError) as excinfo:
        create("nvlamb", make_model().parameters(), lr=1e-3, clip=1.0)
    _check(excinfo, ["clip", *(k for k in KNOB_NAMES if k != "lr")])


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), True, "1e-3"], ids=str)
def test_create_rejects_bad_lr(lr):
    with pytest.raises(ValueError, match="lr"):
        create("nvlamb", make_model().parameters(), lr=lr)


@pytest.mark.parametrize("impl", ["cuda", "foreach", "Fast", ""])
def test_unknown_impl_rejected(impl):
    with pytest.raises(ValueError) as excinfo:
        Lamb(make_model().parameters(), impl=impl)
    _check(excinfo, ["impl", "'fast'", "'reference'"])


#: The upstream package or repository each preset must name.
PRESET_SOURCES = {
    "nvlamb": "apex",
    "apex": "apex",
    "timm": "timm",
    "torch_optimizer": "torch_optimizer",
    "pytorch_lamb": "pytorch-lamb",
    "optax": "optax",
    "deepspeed": "DeepSpeed",
    "tfa": "TensorFlow Addons",
    "bert_adam": "google-research/bert",
    "adamw": "torch.optim.AdamW",
    "lars": "timm",
}
VERSION = re.compile(r"@[0-9a-f]{7,40}\b|\b\d+\.\d+\.\d+\b")


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_names_source_and_version(name):
    preset = PRESETS[name]
    assert preset.name == name
    assert preset.reproduces.strip()
    assert PRESET_SOURCES[name] in preset.reproduces
    assert VERSION.search(preset.reproduces), preset.reproduces
    assert "lr" not in preset.knobs
    assert set(preset.resolved()) == set(DEFAULTS) - {"lr"}


def test_every_preset_has_a_source_row():
    assert set(PRESET_SOURCES) == set(PRESETS)


def test_preset_rejects_lr():
    with pytest.raises(ValueError, match="lr"):
        Preset("x", "y", {"lr": 1})


def test_preset_validates_knobs():
    with pytest.raises(ValueError, match="prenorm"):
        Preset("x", "y", {"prenorm": "clipp"})


def test_presets_are_frozen():
    preset = PRESETS["nvlamb"]
    with pytest.raises((AttributeError, TypeError)):
        preset.knobs["prenorm"] = "none"
    with pytest.raises(AttributeError):
        preset.name = "other"
    with pytest.raises(TypeError):
        PRESETS["mine"] = preset


def test_sparse_gradients_rejected():
    emb = torch.nn.Embedding(10, 4, sparse=True).double()
    opt = Lamb(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
