"""benchmarks/gpu.sh, the one command that makes the GPU figures, runs its steps end to end at tiny size on
CPU from a checkout (src/ on the path, nothing installed) and keeps every table."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.sh"


@pytest.mark.slow
def test_gpu_script_runs_both_benchmarks_at_tiny_size(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "TINY": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", str(SCRIPT), str(tmp_path)], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    environment = (tmp_path / "environment.txt").read_text()
    assert "transformers 5." in environment and "exit status: recover 0, evaluate 0" in environment
    recover = (tmp_path / "recover.txt").read_text()
    assert "| ours: recover.train + torch.compile |" in recover and "final losses agree within 5%: True" in recover
    evaluate = (tmp_path / "evaluate.txt").read_text()
    assert "model random-init tiny shape on cpu" in evaluate and "scores identical: True" in evaluate
