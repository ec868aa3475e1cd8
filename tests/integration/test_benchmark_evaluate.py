"""The evaluate throughput benchmark runs on CPU at tiny size, times ours and each lm-eval batch size the
same way, and finds the same per-row scores (on a random-init benchmark shape: test_benchmark_gpu_script.py)."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

MODULE = "benchmarks.speed.evaluate_throughput"


@pytest.mark.slow
def test_benchmark_runs_and_scores_match_lm_eval(tiny_model_dir, tasks_dir, tmp_path):
    out = tmp_path / "evaluate.json"
    result = subprocess.run(
        [sys.executable, "-m", MODULE, "--model", str(tiny_model_dir), "--data-dir", str(tasks_dir),
         "--tasks", "piqa,arc_challenge", "--limit", "12", "--device", "cpu", "--threads", "1",
         "--baseline-sizes", "8,32", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "scores identical: True" in result.stdout and f"model {tiny_model_dir} on cpu" in result.stdout
    for line in ("| arc_challenge | acc_norm | 12 |", "| ours (batch_size=32) |", "| lm-eval HFLM batch_size=8",
                 "| lm-eval HFLM batch_size=32", "speedup vs lm-eval at its fastest batch size"):
        assert line in result.stdout
    report = json.loads(out.read_text())
    assert set(report["seconds"]) == {"ours", "8", "32"} and report["fastest_baseline"] in ("8", "32")
    assert report["rows_differing"] == {"ours": 0, "8": 0, "32": 0} and report["scores_identical"]
    assert report["speedup"] == report["seconds"][report["fastest_baseline"]] / report["seconds"]["ours"]


def test_bad_baseline_sizes_are_refused():
    result = subprocess.run([sys.executable, "-m", MODULE, "--baseline-sizes", "8,big"], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2 and "--baseline-sizes: ['big']" in result.stderr
