"""``tests/test_cuda.py`` run by pytest in a child process, read back from its JUnit XML report.

The CUDA tests (fast path against the float64 CPU reference for every preset and knob value,
statistics on the device, no host sync inside ``step()``, ``impl="compiled"``) are skipped
without a CUDA device: in the CPU mode every one is counted as skipped.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

#: The file run, relative to the repository root.
TESTS = "tests/test_cuda.py"


def run_tests(repo: Path, timeout_s: float) -> dict[str, Any]:
    """Counts of passed, failed, errors and skipped tests, the ids of those that did not pass,
    and pytest's exit status. ``-p no:cacheprovider``: nothing is written in the checkout."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        report = Path(tmp) / "junit.xml"
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", TESTS, "-q", "-p", "no:cacheprovider"]
            + [f"--junitxml={report}", "-o", "junit_family=xunit2"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if not report.exists():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            raise RuntimeError(f"pytest wrote no report (exit {proc.returncode}): {tail}")
        cases = ET.parse(report).getroot().iter("testcase")
        counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
        not_passed = []
        for case in cases:
            outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), None)
            key = {"failure": "failed", "error": "errors", "skipped": "skipped"}.get(outcome)
            counts[key or "passed"] += 1
            if outcome in ("failure", "error"):
                not_passed.append(f"{case.get('name')}: {outcome}")
    return {
        "file": TESTS,
        "exit_status": proc.returncode,
        **counts,
        "not_passed": not_passed,
        # pytest exits 0 when every test passed or was skipped, 5 when none was collected
        "ok": proc.returncode == 0 and counts["failed"] == counts["errors"] == 0,
    }
