""":class:`CollectReport`: what a collect read and wrote, and what it found missing.

Every step of a collect (gathering trials, reading curves, building rows, the reference line)
records here what it could not find, so that one report, written next to the tables as
collect.json and read back by :func:`ablations.results.load.load_report`, says it all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ablations.results.layout import SCHEMA


@dataclass
class CollectReport:
    """What :func:`ablations.results.collect.collect` read and wrote, and what it found missing.

    ``missing`` lists, one line each: trial directories without status.json or trial.json,
    study trials without a directory, WAITING slots, a missing or unreadable study. ``torn``
    lists curve lines that were dropped (a torn last line, or an unparsable one).
    """

    experiment: str
    exp_dir: str
    trials: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    curve_rows: int = 0
    layer_rows: int = 0
    missing: list[str] = field(default_factory=list)
    torn: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    schema: int = SCHEMA

    def __str__(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.statuses.items() if n)
        lines = [
            f"{self.exp_dir}: {self.trials} trials ({counts or 'none'}); "
            f"{self.curve_rows} curve rows, {self.layer_rows} layer rows"
        ]
        for title, items in (("missing", self.missing), ("torn", self.torn), ("note", self.notes)):
            lines += [f"  {title}: {item}" for item in items]
        return "\n".join(lines)
