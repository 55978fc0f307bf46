"""``python -m lamb_variants list``: the presets (what each reproduces, the knobs it sets) and
every knob (default, allowed values)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import knobs as K
from .presets import PRESETS


def listing() -> str:
    lines = [
        "presets: lamb_variants.create(name, params, lr=..., **knob_overrides)",
        "(§2.x: the section of the survey of LAMB implementations each preset was checked",
        " against, shared/reference/lamb-implementations.md beside the repository)",
        "",
    ]
    width = max(len(n) for n in PRESETS)
    for name, preset in PRESETS.items():
        lines.append(f"  {name:<{width}}  {preset.reproduces}")
        changed = ", ".join(f"{k}={v!r}" for k, v in preset.knobs.items())
        lines.append(f"  {'':<{width}}  knobs: {changed or '(the defaults: NVLAMB)'}")
    lines += ["", "knobs (each may differ per param group): name = default; allowed", ""]
    width = max(len(n) for n in K.KNOB_NAMES)
    for name in K.KNOB_NAMES:
        lines.append(f"  {name:<{width}} = {K.DEFAULTS[name]!r}; {K.allowed(name)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lamb_variants", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the presets and the knobs")
    parser.parse_args(argv)
    try:
        print(listing(), flush=True)
    except BrokenPipeError:  # `... list | head`: the reader left; end quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (interpreter shutdown flushes it)
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())
