"""A short seeded run of the real pipeline, recorded once: the behaviour any refactoring keeps.

``python tests/seeded_run.py record`` (the only command that writes
``tests/data/seeded_run.json``; one record per line) trains the run below on the embedded corpus
and records its curves without wall times. ``tests/test_seeded_run.py`` trains it again and
compares every number for equality. Recorded on this project's CPU VM; the curves are
bit-identical on one machine (CPU, fp32) and may part by float ulps on another CPU model.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

RECORD = Path(__file__).resolve().parent / "data" / "seeded_run.json"

#: Two phases (NVIDIA's shape, phase 2 carrying the moments), dropout on, validation and
#: per-layer telemetry inside each phase, a checkpoint inside phase 1: every path a study uses.
CONFIG: dict[str, Any] = {
    "model": {"size": "tiny"},
    "data": {"source": "embedded", "vocab_size": 4096},
    "optimizer": {"preset": "nvlamb", "phase2": "carry"},
    "phases": [
        {
            "steps": 24,
            "global_batch": 32,
            "micro_batch": 16,
            "seq_len": 64,
            "max_predictions": 10,
            "lr": 6e-3,
            "warmup": 0.25,
            "decay_power": 0.5,
        },
        {
            "steps": 8,
            "global_batch": 16,
            "micro_batch": 16,
            "seq_len": 128,
            "max_predictions": 20,
            "lr": 4e-3,
            "warmup": 0.125,
            "decay_power": 0.5,
        },
    ],
    "log": {"layer_every": 8, "val_every": 8, "val_batches": 2, "progress": "none"},
    "checkpoint_every": 10,
    "seed": 3,
}


def curves(cache_dir: Path, run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Train the recorded config in ``run_dir`` and return its curves without wall times."""
    import torch

    from ablations.config import RunConfig
    from ablations.run.train import train

    torch.set_num_threads(1)  # as the tests and the sweep's workers: sums in one order
    raw = {**CONFIG, "data": {**CONFIG["data"], "cache_dir": str(cache_dir)}}
    result = train(RunConfig.from_dict(raw), run_dir)
    assert result["status"] == "complete", result
    out = {}
    for kind in ("metrics", "val", "layers"):
        lines = (run_dir / f"{kind}.jsonl").read_text().splitlines()
        out[kind] = [
            {k: v for k, v in json.loads(line).items() if k != "wall_time"} for line in lines
        ]
    return out


if __name__ == "__main__":
    if sys.argv[1:] != ["record"]:
        sys.exit("usage: python tests/seeded_run.py record")
    with tempfile.TemporaryDirectory() as tmp:
        recorded = curves(Path(tmp) / "cache", Path(tmp) / "run")
    lines = {
        k: "[\n" + ",\n".join(json.dumps(r, sort_keys=True) for r in v) + "\n]"
        for k, v in recorded.items()
    }
    RECORD.write_text(
        "{\n" + ",\n".join(f"{json.dumps(k)}: {v}" for k, v in lines.items()) + "\n}\n"
    )
    print(f"wrote {RECORD}")
