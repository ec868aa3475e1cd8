"""The synthetic search benchmark runs end to end in quick mode and prints its tables."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "search_synthetic.py"


@pytest.mark.slow
def test_quick_benchmark_prints_the_tables():
    result = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "| method | reached margin |" in out and "| surrogate input | tau mean |" in out
    for row in ("| random search |", "| loop, ranks+structure, meta |", "| paper: ranks, meta, uniform pool only |",
                "| ranks+structure, meta |"):
        assert row in out, row
    regrets = [float(line.rsplit("|", 2)[1]) for line in out.splitlines() if line.startswith("| random search")
               or line.startswith("| loop, ")]
    assert len(regrets) == 6 and all(0.0 <= r <= 1.5 for r in regrets)
