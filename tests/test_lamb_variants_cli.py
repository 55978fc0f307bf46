"""``python -m lamb_variants list``: every preset with what it reproduces and the knobs it sets,
every knob with its default and what it accepts (checked against validation itself)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import lamb_variants
from lamb_variants import knobs as K

REPO = Path(__file__).resolve().parents[1]


def _list() -> str:
    out = subprocess.run(
        [sys.executable, "-m", "lamb_variants", "list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def test_list_names_every_preset_and_knob():
    text = _list()
    lines = text.splitlines()
    assert "§2.x" in lines[1] and "lamb-implementations.md" in text  # what the labels point into
    for name, preset in lamb_variants.PRESETS.items():
        at = next(i for i, line in enumerate(lines) if line.split()[:1] == [name])
        assert preset.reproduces in lines[at]
        for knob, value in preset.knobs.items():
            assert f"{knob}={value!r}" in lines[at + 1], (name, knob)
    for name in K.KNOB_NAMES:
        line = next(line for line in lines if line.split()[:1] == [name])
        assert f"= {K.DEFAULTS[name]!r}; {K.allowed(name)}" in line


@pytest.mark.parametrize("name", [n for n in K.KNOB_NAMES if n in K.CHOICES or n in K.NUMBERS])
def test_what_list_says_is_allowed_is_what_validation_accepts(name):
    if name in K.CHOICES:
        for value in K.CHOICES[name]:
            K.validate({name: value})
        with pytest.raises(ValueError, match=name):
            K.validate({name: "not-a-choice"})
        return
    lo, hi, lo_open, hi_open = K.NUMBERS[name]
    assert ("(" if lo_open else "[") in K.allowed(name)
    for edge, excluded in ((lo, lo_open), (hi, hi_open)):
        if excluded:
            with pytest.raises(ValueError, match=name):
                K.validate({name: edge})
        else:
            K.validate({name: edge})


def test_a_closed_pipe_ends_quietly():
    proc = subprocess.run(
        f"{sys.executable} -m lamb_variants list | head -1",
        shell=True,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.stdout.startswith("presets:") and "Traceback" not in proc.stderr
