"""`python -m pipelines run` checks the job before any step starts: a bad input fails in seconds, in one
line, and nothing runs (the issue's case: a missing base model once cost 235 s and 2,100 lines)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "src" / "rankadaptor" / "bundled"


def run(tmp_path, job: dict):
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "pipelines", "run", "--config", str(tmp_path / "job.yaml"),
                          "--root", str(tmp_path / "run")], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=120, check=False)
    return out, time.monotonic() - started


@pytest.mark.slow  # `python -m pipelines run` in a fresh interpreter
def test_a_missing_base_model_fails_at_once_in_one_line_and_nothing_runs(tmp_path):
    out, seconds = run(tmp_path, {"base_model": str(tmp_path / "no-such-model"), "eval_data_dir": str(BUNDLED / "tasks")})
    assert out.returncode == 2 and seconds < 30, (seconds, out.stderr)
    assert out.stdout == "" and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "no-such-model" in out.stderr and "not found" in out.stderr
    assert not (tmp_path / "run").exists()  # no step started, not even the run's folder


@pytest.mark.slow  # `python -m pipelines run` in a fresh interpreter
def test_every_problem_of_a_job_is_named_in_the_one_line(tmp_path):
    job = {"base_model": str(BUNDLED / "aidreams-260k"), "eval_data_dir": str(tmp_path / "no-tasks"),
           "data": str(tmp_path / "missing.jsonl"), "recover": {"cutoff": 512}}
    out, _ = run(tmp_path, job)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    for expected in ("recover.cutoff=512 is longer than the model's context of 128 tokens", "missing.jsonl",
                     "no-tasks"):
        assert expected in out.stderr, out.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # `python -m pipelines run` in a fresh interpreter
def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path):
    (tmp_path / "job.yaml").write_text("base_model: x\nrecover:\n  lr: [1\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    out = subprocess.run([sys.executable, "-m", "pipelines", "run", "--config", "job.yaml"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=60, check=False)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "job.yaml" in out.stderr and "line 4, column 1" in out.stderr


def test_run_help_lists_every_job_option_with_its_default(capsys):
    import dataclasses

    from pipelines.__main__ import main
    from rankadaptor.job import JobConfig

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for f in dataclasses.fields(JobConfig):
        if not dataclasses.is_dataclass(f.type) and f.name not in ("prune", "recover", "evaluate", "surrogate",
                                                                      "search", "registry", "bank", "runtime"):
            assert f"  {f.name}: " in text, f.name
    assert "  recover.lr: " in text and "  search.max_iterations: 6" in text and "  runtime.device: " in text
    assert "  recover.seed:" not in text and "  recover.data:" not in text  # the job sets these itself


@pytest.mark.slow
def test_a_step_that_fails_ends_the_run_with_its_one_line_error_and_exit_2(tmp_path):
    """An error only a step can see (here: line 2 of the recovery data is not JSON, which the preflight,
    reading no rows, lets through) stops the run at that step, once (no local retries), in one line."""
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "fine"}\n{"text": broken\n')
    out, seconds = run(tmp_path, {"base_model": str(BUNDLED / "aidreams-260k"), "eval_data_dir": str(BUNDLED / "tasks"),
                                  "data": str(data), "heldout_text": str(BUNDLED / "text" / "heldout.txt")})
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "line 2" in lines[0] and "data.jsonl" in lines[0], lines
    assert "run.log" in lines[0] and (tmp_path / "run" / "run.log").exists()
    assert seconds < 90
