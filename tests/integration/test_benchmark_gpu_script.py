"""benchmarks/speed/gpu.sh, the one command that makes the GPU figures, runs every benchmark end to end at tiny
size on CPU from a checkout (src/ on the path, nothing installed) and keeps every table and JSON file.
The recover runs measure the HF Trainer baseline and our variants on the same timed examples and all
reach the baseline's held-out loss; the GPU-only variants are skipped with their reason. The evaluate run
scores a random-init model of a benchmark shape (what a GPU host without network uses) row for row as
plain lm-eval does at every batch size measured."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "speed" / "gpu.sh"
BASELINE = "HF Trainer (group_by_length, micro-batch 4, pad x8)"


@pytest.fixture(scope="module")
def gpu_script_output(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpu")
    env = {**os.environ, "DEVICE": "cpu", "TINY": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "EAGER": "ours,packing,packing-flex,dropout0,liger", "COMPILED": "compile"}
    result = subprocess.run(["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.mark.slow
def test_gpu_script_records_environment_and_every_run(gpu_script_output):
    assert sorted(p.name for p in gpu_script_output.iterdir()) == [
        "environment.txt", "evaluate.json", "evaluate.txt", "recover.json", "recover.txt", "recover_compiled.json",
        "recover_compiled.txt"]
    environment = (gpu_script_output / "environment.txt").read_text()
    assert "transformers 5." in environment and "lm_eval 0.4.13" in environment
    for run in ("recover", "evaluate", "recover_compiled"):
        assert f"{run}: exit status 0 after" in environment


@pytest.mark.slow
def test_gpu_script_recover_rows_share_timed_examples_and_heldout_quality(gpu_script_output):
    runs = [json.loads((gpu_script_output / f"{run}.json").read_text()) for run in ("recover", "recover_compiled")]
    rows = {row["method"]: row for report in runs for row in report["rows"]}
    assert set(rows) == {BASELINE, "ours", "ours + packing (sdpa)", "ours + packing (flex_attention)",
                         "ours + dropout 0", "ours + liger", "ours + compile"}
    assert rows["ours + liger"]["error"] == "skipped: liger-kernel needs a CUDA GPU"
    assert rows["ours + packing (flex_attention)"]["error"].startswith("skipped:")
    measured = [row for row in rows.values() if not row["error"]]
    assert len({row["real_tokens"] for row in measured}) == 1  # the same timed examples, counted the same way
    for report in runs:
        assert report["quality_ok"] and report["baseline_improvement"] > 0
        assert report["settings"]["rank_vector"] == [8, 4, 10, 8]
    for row in measured:
        assert row["quality_ok"] and math.isfinite(row["heldout_loss"]) and row["real_tokens_per_s"] > 0
        assert 0 < row["mfu"] < 1 and row["peak_memory"] > 0
    # LLM-Pruner's micro-batches of 4 in random length groups pad more than our token budget's
    assert rows[BASELINE]["real_fraction"] < 0.75 and rows["ours"]["real_fraction"] > 0.85
    assert rows["ours + compile"]["compiled_graphs"] >= 1 and rows["ours"]["compiled_graphs"] == 0
    table = (gpu_script_output / "recover.txt").read_text()
    assert "| method | real tokens/s | vs baseline | real/padded | MFU |" in table
    assert "held-out quality check passed: True" in table


@pytest.mark.slow
def test_gpu_script_evaluate_scores_every_row_as_lm_eval(gpu_script_output):
    report = json.loads((gpu_script_output / "evaluate.json").read_text())
    assert report["model"] == "random-init tiny shape" and report["rows"] == 24
    assert set(report["seconds"]) == {"ours", "auto", "8", "16", "32", "64"}
    assert report["scores_identical"] and not any(report["rows_differing"].values())
    assert report["fastest_baseline"] == min(("auto", "8", "16", "32", "64"), key=report["seconds"].get)
    assert "scores identical: True" in (gpu_script_output / "evaluate.txt").read_text()
