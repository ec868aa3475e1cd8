"""S3 faults: an endpoint that drops every connection, a real SeaweedFS server stopped between stages, an upload
interrupted before its manifest, a killed recovery resuming from its checkpoint on S3, a user's plain model folder
(docs/reliability.md). The MLflow outage during registration is here too: both are outages, exit 3."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import torch
from safetensors.torch import load_file
from servers import free_port, seaweedfs, write_adapter, write_pruned_model

from rankadaptor.config import from_dict
from rankadaptor.errors import ServiceError, UserError
from rankadaptor.infra import storage
from rankadaptor.models.loading import load_model
from rankadaptor.recover.config import RecoverConfig
from rankadaptor.recover.stage import run_recover
from rankadaptor.serving import registry


# ---------------------------------------------------------------------------------------------------------
# S3 outages and interrupted uploads


@contextlib.contextmanager
def dropping_endpoint():
    """An S3 endpoint in outage: a local port that accepts each connection and closes it at once, counting them."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    accepted, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                connection, _ = server.accept()
                accepted.append(time.monotonic())
                connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join()
        server.close()


@pytest.fixture
def fake_keys(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """tempfile's directory (where S3 uploads are staged) moved under tmp_path, to see what is left there."""
    staging = tmp_path / "tempdir"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    return staging


def write_artifact(uri: str, files: dict[str, str]) -> None:
    with storage.writing_dir(uri) as out:
        for name, text in files.items():
            (out / name).write_text(text)


def test_an_s3_outage_is_retried_then_named(fake_keys, private_tmp, monkeypatch):
    monkeypatch.setenv("RANKADAPTOR_S3_RETRIES", "3")
    with dropping_endpoint() as (endpoint, accepted):
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        calls = {"exists": lambda: storage.exists("s3://bucket/pruned"),
                 "local_dir": lambda: storage.local_dir("s3://bucket/pruned"),
                 "writing_dir": lambda: write_artifact("s3://bucket/pruned", {"a.json": "{}"})}
        for name, call in calls.items():
            accepted.clear()
            with pytest.raises(ServiceError, match=r"S3 request for 's3://bucket/pruned' failed after retries") as error:
                call()
            # botocore's standard mode: the first attempt + RANKADAPTOR_S3_RETRIES retries, with jittered backoff
            assert len(accepted) == 4, f"{name}: {len(accepted)} attempts, expected 1 + 3 retries"
            assert "test-secret" not in str(error.value)
    assert list(private_tmp.iterdir()) == []  # the staged upload is removed


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3(s3_server, monkeypatch):
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.mark.slow  # a real S3 server (SeaweedFS)
def test_an_interrupted_upload_is_never_read(s3):
    uri = f"s3://{s3.bucket}/interrupted"
    client = storage.s3_client()
    # What a crash mid-upload leaves: data files without the manifest, which is uploaded last.
    client.put_object(Bucket=s3.bucket, Key="interrupted/model.safetensors", Body=b"half a model")
    assert storage.exists(uri) is False
    with pytest.raises(UserError, match=r"nothing at 's3://rankadaptor/interrupted' .* manifest.json"):
        storage.local_dir(uri)
    # Overwriting a complete artifact deletes its manifest before the first new file: an interrupted
    # overwrite leaves no artifact, never a mix of old and new files that verifies.
    done = f"s3://{s3.bucket}/overwritten"
    write_artifact(done, {"a.json": '"old"', "b.json": '"old"'})
    assert storage.exists(done)
    client.delete_object(Bucket=s3.bucket, Key="overwritten/manifest.json")
    client.put_object(Bucket=s3.bucket, Key="overwritten/a.json", Body=b'"new"')
    assert storage.exists(done) is False
    with pytest.raises(UserError, match="never completed"):
        storage.local_dir(done)
    # A file changed behind a complete artifact's back is refused by its checksum.
    write_artifact(done, {"a.json": '"new"', "b.json": '"new"'})
    client.put_object(Bucket=s3.bucket, Key="overwritten/b.json", Body=b'"tampered"')
    with pytest.raises(UserError, match=r"checksum of 'b.json' does not match its manifest"):
        storage.local_dir(done)


@pytest.mark.slow  # a real S3 server (SeaweedFS)
def test_a_missing_bucket_is_named(s3, private_tmp):
    for call in (lambda: write_artifact("s3://no-such-bucket/pruned", {"a.json": "{}"}),
                 lambda: storage.local_dir("s3://no-such-bucket/pruned")):
        with pytest.raises(UserError, match=r"S3 bucket of 's3://no-such-bucket/pruned' does not exist"):
            call()
    # A single file is fetched with HEAD, whose bare 404 does not say whether the bucket or the key is missing.
    with pytest.raises(UserError, match=r"nothing at 's3://no-such-bucket/data.jsonl' on S3 \(404\)"):
        storage.local_file("s3://no-such-bucket/data.jsonl")
    assert storage.exists("s3://no-such-bucket/pruned") is False
    with pytest.raises(UserError, match="has no bucket"):
        storage.local_dir("s3:///pruned")
    assert list(private_tmp.iterdir()) == []


@pytest.mark.slow  # a real S3 server (SeaweedFS)
def test_an_s3_server_stopped_between_stages_is_named(tmp_path, monkeypatch, private_tmp):
    monkeypatch.setenv("RANKADAPTOR_S3_RETRIES", "2")
    (tmp_path / "seaweedfs").mkdir()
    with seaweedfs(tmp_path / "seaweedfs") as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        uri = f"s3://{server.bucket}/metrics"
        write_artifact(uri, {"metrics.json": '{"mean": 0.5}'})
        assert storage.exists(uri)
    # The server is gone: the next stage's reads and writes fail with the URI, nothing is half-written.
    for call in (lambda: storage.exists(uri), lambda: storage.local_dir(uri),
                 lambda: write_artifact(f"s3://{server.bucket}/next", {"a.json": "{}"})):
        failed = rf"S3 request for 's3://{server.bucket}/(metrics|next)' failed after retries"
        with pytest.raises(ServiceError, match=failed):  # an outage, not bad input
            call()
    assert not (tmp_path / "cache" / "s3" / server.bucket / "metrics").exists()
    assert list(private_tmp.iterdir()) == []


RESUME = {"cutoff": 32, "batch_size": 4, "micro_batch_tokens": 64, "epochs": 1, "max_steps": 9, "save_steps": 3,
          "lr": 0.002, "device": "cpu"}


def _recover_cli(model_dir, data, output: str, checkpoint: str) -> list[str]:
    options = [a for k, v in RESUME.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    return [sys.executable, "-m", "rankadaptor.cli", "recover", "--model", str(model_dir), "--data", str(data),
            "--output", output, "--checkpoint", checkpoint, *options]


@pytest.mark.slow
def test_a_recovery_killed_with_its_checkpoint_on_s3_resumes_to_the_same_result(s3, tiny_model_dir, text_file,
                                                                                   tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference, output = tmp_path / "reference", tmp_path / "killed"
    run_recover(from_dict(RecoverConfig, {**RESUME, "data": str(text_file)}), str(tiny_model_dir), str(reference))
    checkpoint, client = f"s3://{s3.bucket}/ckpt-killed", storage.s3_client()
    proc = subprocess.Popen(_recover_cli(tiny_model_dir, text_file, str(output), checkpoint), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Killed as soon as the first checkpoint (step 3, slot b) is complete. Saves alternate between two slots,
    # so a save in progress never hides the newest complete checkpoint.
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        with contextlib.suppress(Exception):
            client.head_object(Bucket=s3.bucket, Key=f"ckpt-killed/b/{storage.MANIFEST}")
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not output.exists(), "the run finished before it could be killed"
    assert json.loads((storage.local_dir(f"{checkpoint}/b") / "log.json").read_text())["step"] == 3

    rerun = subprocess.run(_recover_cli(tiny_model_dir, text_file, str(output), checkpoint), check=True, env=env,
                           capture_output=True, text=True)
    resumed = json.loads(rerun.stdout[rerun.stdout.index("{"):])
    assert resumed["resumed_from"] == 3 and resumed["steps"] == RESUME["max_steps"]
    ours, theirs = (load_file(d / "adapter_model.safetensors") for d in (output, reference))
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=1e-6)
    assert not storage.exists(checkpoint)  # removed once the adapter is written


# ---------------------------------------------------------------------------------------------------------
# MLflow outage during registration


def test_an_mlflow_outage_during_register_is_named(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    base = write_pruned_model(str(tmp_path / "pruned"), tiny_model_dir)
    adapter = write_adapter(str(tmp_path / "adapter"), base, [8, 2, 4, 8])
    gone = f"http://127.0.0.1:{free_port()}"
    report = {"tasks": {"boolq": {"metric": "acc", "value": 0.6}}, "mean": 0.6, "split": "report"}
    start = time.monotonic()
    with pytest.raises(ServiceError, match=f"MLflow tracking server '{gone}' failed"):
        registry.register(adapter, base, report, registry.RegistryConfig(model_name="tiny", tracking_uri=gone))
    assert time.monotonic() - start < 60




@pytest.mark.slow  # a real S3 server (SeaweedFS)
def test_a_base_model_uploaded_by_other_tools_loads_from_s3(s3, tiny_model_dir):
    """A user's model folder on S3 has no manifest: it is fetched whole (and refreshed when it changes)."""

    client = storage.s3_client()
    for path in tiny_model_dir.iterdir():
        client.upload_file(str(path), s3.bucket, f"models/plain/{path.name}")
    model, tokenizer = load_model(f"s3://{s3.bucket}/models/plain")
    assert model.config.num_hidden_layers == 4 and len(tokenizer) == 512
    with pytest.raises(UserError, match="nothing at 's3://rankadaptor/models/none'"):
        storage.local_dir(f"s3://{s3.bucket}/models/none", verify_manifest=False)
