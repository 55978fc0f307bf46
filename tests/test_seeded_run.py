"""The seeded run of ``tests/seeded_run.py`` gives the curves recorded before the harness was
reorganized (issue 19), number for number: a refactoring that changes what a run trains fails
here. Equality, not closeness: one machine, CPU, fp32 is bit-identical."""

from __future__ import annotations

import json

import seeded_run


def test_a_seeded_run_gives_the_recorded_curves(tmp_path, embedded_cache):
    cache, _ = embedded_cache
    recorded = json.loads(seeded_run.RECORD.read_text())
    got = seeded_run.curves(cache, tmp_path / "run")
    for kind in ("metrics", "val", "layers"):
        assert len(got[kind]) == len(recorded[kind]), kind
        for i, (a, b) in enumerate(zip(got[kind], recorded[kind], strict=True)):
            assert a == b, f"{kind}.jsonl line {i + 1} differs from the recorded run"
