"""The recover benchmark's held-out quality check can fail: a side trained on garbage (random labels) does
not reach the baseline's held-out loss, and the benchmark says so and exits non-zero."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

MODULE = "benchmarks.speed.recover_throughput"


@pytest.mark.slow
@pytest.mark.parametrize("corrupt", ["ours", "baseline"])
def test_quality_check_fails_when_one_side_trains_on_garbage(tmp_path, corrupt):
    out = tmp_path / "recover.json"
    result = subprocess.run([sys.executable, "-m", MODULE, "--tiny", "--device", "cpu", "--threads", "1",
                             "--variants", "ours", "--corrupt", corrupt, "--json", str(out)],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert not report["quality_ok"] and "held-out quality check passed: False" in result.stdout
    ours = report["rows"][1]
    assert ours["method"] == "ours" and ours["error"] is None and not ours["quality_ok"]
    gap = abs(ours["heldout_loss"] - report["rows"][0]["heldout_loss"])
    assert gap > report["loss_tol"] * max(report["baseline_improvement"], 0)
    if corrupt == "ours":  # the clean baseline learned, and garbage kept ours from learning the same
        assert report["baseline_improvement"] > 0 and ours["heldout_loss"] > report["rows"][0]["heldout_loss"]
