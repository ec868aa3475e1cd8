"""The preflight: each mistake of a job is one line naming the input and the fix, found in seconds."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from servers import seaweedfs

from rankadaptor.errors import UserError
from rankadaptor.infra import storage
from rankadaptor.ops import preflight
from rankadaptor.recover.config import RecoverConfig
from rankadaptor.recover.stage import fit_to_context


def messages(*checks) -> list[str]:
    return preflight.problems(checks)


def test_every_failing_check_is_reported_once_in_one_line(tmp_path, tiny_model_dir):
    started = time.monotonic()
    found = messages(lambda: preflight.model_config(str(tmp_path / "missing-model")),
                     lambda: fit_to_context(RecoverConfig(cutoff=512),
                                            preflight.model_config(str(tiny_model_dir)).max_position_embeddings),
                     lambda: preflight.check_readable(str(tmp_path / "data.jsonl")),
                     lambda: preflight.model_config(str(tiny_model_dir)))  # passes: not reported
    assert time.monotonic() - started < 10
    assert len(found) == 3 and all("\n" not in m for m in found), found
    assert "missing-model" in found[0]
    assert "cutoff=512 is longer than the model's context of 128 tokens" in found[1]
    assert "data.jsonl" in found[2]


def test_an_output_over_an_input_is_refused_and_the_input_is_untouched(tmp_path, tiny_model_dir):
    before = {p.name: p.read_bytes() for p in tiny_model_dir.iterdir()}
    for output in (tiny_model_dir, tiny_model_dir / "pruned", tiny_model_dir.parent):
        with pytest.raises(UserError, match="is, contains or lies inside the input"):
            preflight.check_writable(str(output), inputs=[str(tiny_model_dir)])
    assert {p.name: p.read_bytes() for p in tiny_model_dir.iterdir()} == before


def test_outputs_are_new_writable_folders(tmp_path):
    (tmp_path / "done").mkdir()
    with pytest.raises(UserError, match="already exists: choose another or pass --overwrite"):
        preflight.check_writable(str(tmp_path / "done"))
    preflight.check_writable(str(tmp_path / "done"), overwrite=True)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(UserError, match="which is a file, not a folder"):
        preflight.check_writable(str(tmp_path / "a-file" / "out"))
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere
        with pytest.raises(UserError, match="is not writable"):
            preflight.check_writable(str(locked / "out"))
    preflight.check_writable(str(tmp_path / "new" / "deeper" / "out"))
    assert not (tmp_path / "new").exists()  # checking writes nothing


def test_a_pod_local_tracking_store_is_refused_on_a_cluster(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    preflight.check_tracking("sqlite:///mlflow.db")  # fine on a laptop
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    with pytest.raises(UserError, match="'sqlite:///mlflow.db' is a pod-local store on a cluster"):
        preflight.check_tracking("sqlite:///mlflow.db")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(UserError, match="'\\(none\\)' is a pod-local store"):
        preflight.check_tracking("")
    preflight.check_tracking("http://mlflow.kubeflow:5000")


@pytest.mark.slow
def test_s3_outputs_inputs_and_credentials_are_checked_before_any_compute(tmp_path, tiny_model_dir, monkeypatch):
    (tmp_path / "seaweedfs").mkdir()
    with seaweedfs(tmp_path / "seaweedfs") as s3:
        for name, value in s3.env().items():
            monkeypatch.setenv(name, value)
        base = f"s3://{s3.bucket}/models/base"
        with storage.writing_dir(base) as out:
            for path in tiny_model_dir.iterdir():
                (out / path.name).write_bytes(path.read_bytes())
        assert preflight.model_config(base).model_type == "llama"  # config.json alone, no weights fetched
        cached = storage.cache_root() / "s3" / s3.bucket / "models" / "base"
        assert not (cached / "model.safetensors").exists()
        preflight.check_writable(f"s3://{s3.bucket}/runs/new")
        preflight.check_readable(base)
        preflight.check_readable(f"{base}/config.json")
        with pytest.raises(UserError, match="already exists"):
            preflight.check_writable(base)
        with pytest.raises(UserError, match="not found on S3"):
            preflight.check_readable(f"s3://{s3.bucket}/nothing-here")
        with pytest.raises(UserError, match="S3 bucket of 's3://no-such-bucket/out' does not exist"):
            preflight.check_writable("s3://no-such-bucket/out")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-" + s3.secret_key)
        with pytest.raises(UserError, match="S3 refused access to .* check the AWS_\\* credentials") as error:
            preflight.check_writable(f"s3://{s3.bucket}/runs/other")
        assert s3.secret_key not in str(error.value)
        # the same through `rankadaptor check`: a job whose base model sits on S3, read with a wrong secret
        config = tmp_path / "s3-job.yaml"
        config.write_text(f"base_model: {base}\neval_data_dir: {TASKS}\n")
        code, lines = check_command(config, tmp_path / "run")
        assert code == 2 and len(lines) == 1 and "S3 refused access" in lines[0], lines


TASKS = Path(__file__).resolve().parents[2] / "src" / "rankadaptor" / "bundled" / "tasks"


def check_command(config, root, capsys=None):
    """`rankadaptor check` as a user types it: (exit status, error lines), timed to finish in seconds."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(Path(__file__).resolve().parents[2] / d) for d in ("src", "."))}
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "rankadaptor.cli", "check", *(["--config", str(config)] if config else []),
                          "--root", str(root)], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert time.monotonic() - started < 60
    return out.returncode, out.stderr.strip().splitlines() if out.returncode else out.stdout.strip().splitlines()


def test_check_passes_the_bundled_job(tmp_path):
    code, lines = check_command(None, tmp_path / "run")
    assert code == 0 and "no problem found" in lines[-1], lines
    assert not (tmp_path / "run").exists()  # checking writes nothing


@pytest.mark.slow  # `rankadaptor check` in a fresh interpreter, per case
@pytest.mark.parametrize(("job", "env", "root", "expected"), [
    ({"base_model": "MISSING"}, {}, "run", "no-model' not found"),
    ({"eval_data_dir": ""}, {"HF_HUB_OFFLINE": "1"}, "run", "eval_data_dir is empty, which means lm-eval's hub datasets"),
    ({"eval_data_dir": "EMPTY"}, {}, "run", "needs the file arc_challenge_test.jsonl in data_dir"),
    ({"recover": {"cutoff": 4096}}, {}, "run", "recover.cutoff=4096 is longer than the model's context of 128 tokens"),
    ({}, {}, "a-file/run", "which is a file, not a folder"),
    ({"bank": {"tracking_uri": "sqlite:///mlflow.db"}}, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, "run",
     "is a pod-local store on a cluster"),
], ids=["missing-model", "offline-no-rows", "no-task-file", "longer-than-context", "unwritable-output", "sqlite-on-cluster"])
def test_check_names_each_problem_in_one_line(tmp_path, monkeypatch, tiny_model_dir, job, env, root, expected):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "EMPTY").mkdir()
    values = {"base_model": str(tiny_model_dir), "eval_data_dir": str(TASKS), **job}
    values["base_model"] = values["base_model"].replace("MISSING", str(tmp_path / "no-model"))
    values["eval_data_dir"] = values["eval_data_dir"].replace("EMPTY", str(tmp_path / "EMPTY"))
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(values))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, lines = check_command(config, tmp_path / root)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("rankadaptor check: error: ") and expected in lines[0], lines


@pytest.mark.slow  # `rankadaptor check` in a fresh interpreter, per case
def test_check_reads_a_custom_task_file_before_any_compute(tmp_path, tiny_model_dir):
    tasks = tmp_path / "tasks"
    shutil.copytree(TASKS, tasks)
    (tasks / "mine.jsonl").write_text('{"query": "a", "choices": ["x", "y"], "gold": 0}\n'
                                      '{"query": "b", "choices": ["x", "y"], "gold": 5}\n')
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({"base_model": str(tiny_model_dir), "eval_data_dir": str(tasks),
                                      "target_task": "mc:mine", "source_tasks": ["ppl:notes"]}))
    code, lines = check_command(config, tmp_path / "run")
    assert code == 2 and len(lines) == 2, lines
    assert "mine.jsonl" in lines[0] and "line 2" in lines[0], lines
    assert "notes.txt" in lines[1], lines
