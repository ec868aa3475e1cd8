"""The evaluate throughput benchmark runs on CPU at tiny size and finds the same scores as plain lm-eval
(on a random-init benchmark shape: test_benchmark_gpu_script.py)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "evaluate_throughput.py"


@pytest.mark.slow
def test_benchmark_runs_and_scores_match_lm_eval(tiny_model_dir, tasks_dir):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(tiny_model_dir), "--data-dir", str(tasks_dir),
         "--tasks", "piqa,arc_challenge", "--limit", "12", "--device", "cpu", "--threads", "1"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "scores identical: True" in result.stdout
    assert f"model {tiny_model_dir} on cpu" in result.stdout
    for line in ("| piqa | acc |", "| arc_challenge | acc_norm | 12 |", "| ours (batch_size=32) |",
                 "| lm-eval default (batch_size=1) |", "speedup: "):
        assert line in result.stdout
