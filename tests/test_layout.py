"""The code's shape, as issue 19 set it: no module over 500 lines, and the modules of the flat
layout before the rooms still import, with one deprecation line naming their new home. (The
rooms' import direction is import-linter's, in ``make lint``.)"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import ablations

REPO = Path(__file__).resolve().parents[1]
LIMIT = 500


def test_no_module_is_over_500_lines():
    sizes = {
        str(p.relative_to(REPO)): len(p.read_text().splitlines())
        for package in ("ablations", "lamb_variants")
        for p in (REPO / package).rglob("*.py")
    }
    assert len(sizes) > 60
    assert {name: n for name, n in sizes.items() if n > LIMIT} == {}


@pytest.mark.parametrize("old", sorted(ablations.MOVED))
def test_an_old_module_name_imports_with_one_deprecation_line(old):
    new = ablations.MOVED[old]
    with pytest.warns(DeprecationWarning, match=rf"^ablations\.{old} moved to {new}; ") as seen:
        module = getattr(ablations, old)
    assert len(seen) == 1
    assert module is importlib.import_module(new)


def test_an_unknown_name_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ablations.nope  # noqa: B018
