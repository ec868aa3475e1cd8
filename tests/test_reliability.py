"""Faults and bad input: each test injects one and checks what must hold (docs/reliability.md lists them).

Faults: a pipeline killed between search iterations, S3 outages (a port that drops every connection, a real
SeaweedFS server stopped between stages), an upload interrupted before its manifest, an MLflow tracking
server that is gone. Bad input: wrong or corrupt models and artifacts, malformed data, absurd options.
Every refusal is a UserError naming the bad value, raised before an output exists. The killed-recovery
resume test lives in test_recover.py; option checks of single stages in test_prune/recover/evaluate/search.
"""

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
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file
from servers import free_port, seaweedfs, write_adapter, write_pruned_model
from transformers import AutoTokenizer

from rankadaptor.config import from_dict
from rankadaptor.data import read_texts
from rankadaptor.errors import ServiceError, UserError
from rankadaptor.flows.trials import trial_key
from rankadaptor.infra import storage
from rankadaptor.job import load_job
from rankadaptor.models.loading import load_model
from rankadaptor.recover.adapters import load_adapted
from rankadaptor.recover.batches import load_examples
from rankadaptor.recover.config import RecoverConfig
from rankadaptor.recover.stage import run_recover
from rankadaptor.report import UNIFORM
from rankadaptor.search.config import SearchConfig
from rankadaptor.search.loop import Proposal, SearchState, update
from rankadaptor.search.state import load_state
from rankadaptor.search.surrogate import SurrogateConfig, new_surrogate
from rankadaptor.serving import registry
from rankadaptor.steps import model as steps
from rankadaptor.steps import search as search_steps

# ---------------------------------------------------------------------------------------------------------
# A pipeline killed between search iterations

TINY_JOB = {
    "corpus_docs": 40, "corpus_tokens": 48, "bootstrap_trials": 0, "report_tasks": [],
    "prune": {"ratio": 0.2, "layer_start": 1, "layer_end": 3, "num_samples": 4, "seq_len": 32},
    "recover": {"cutoff": 32, "batch_size": 4, "epochs": 1, "max_steps": 2, "lr": 0.002},
    "evaluate": {"limit": 8, "batch_size": 8},
    "runtime": {"micro_batch_tokens": 128, "device": "cpu"},
    "search": {"num_samples": 200, "max_iterations": 3},
}


def bank_runs(job, trial_id: str | None = None) -> list:
    client = MlflowClient()
    experiment = client.get_experiment_by_name(job.bank.experiment)
    query = "attributes.status = 'FINISHED'" + (f" and tags.trial_id = '{trial_id}'" if trial_id else "")
    return client.search_runs([experiment.experiment_id], filter_string=query)


@pytest.mark.slow
def test_a_pipeline_killed_between_iterations_continues_from_the_bank(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    job = load_job(None, TINY_JOB)
    uri = {name: str(tmp_path / name) for name in ("data", "pruned", "baselines", "state-0", "proposal-1",
                                                   "adapter-1", "metrics-1", "state-1", "state-rerun",
                                                   "proposal-rerun", "state-1-retried", "structure")}
    steps.prepare_data(job, uri["data"])
    steps.prune(job, uri["data"], uri["pruned"], uri["structure"])
    steps.baselines(job, uri["pruned"], uri["data"], uri["baselines"])
    # First run: one full iteration of the loop, then the process dies.
    search_steps.meta_pretrain(job, uri["structure"], uri["data"], uri["baselines"], uri["state-0"])
    first = search_steps.propose(job, uri["state-0"], uri["proposal-1"])["rank_vector"]
    steps.recover(job, uri["pruned"], uri["data"], first, uri["adapter-1"])
    steps.evaluate(job, uri["pruned"], uri["data"], uri["adapter-1"], uri["metrics-1"])
    score = search_steps.update(job, uri["state-0"], uri["proposal-1"], uri["metrics-1"], uri["adapter-1"],
                                uri["state-1"])["score"]
    # Rerun from scratch: its state is rebuilt from the bank, with the trial, its score and its adapter.
    rerun = search_steps.meta_pretrain(job, uri["structure"], uri["data"], uri["baselines"], uri["state-rerun"])
    state, context = load_state(uri["state-rerun"])
    uniform = [job.baseline_rank] * len(first)
    assert rerun["target_trials"] == 2
    anchor = str(tmp_path / "baselines" / UNIFORM)
    assert [(o.rank_vector, o.artifact) for o in state.measured()] == [(uniform, anchor), (first, uri["adapter-1"])]
    assert state.measured()[1].score == pytest.approx(score)
    proposed = search_steps.propose(job, uri["state-rerun"], uri["proposal-rerun"])["rank_vector"]
    assert proposed not in (first, uniform)
    # A retried update step (killed after banking, before writing its state) adds no second run.
    search_steps.update(job, uri["state-0"], uri["proposal-1"], uri["metrics-1"], uri["adapter-1"],
                        uri["state-1-retried"])
    trial_id = trial_key(job, context, job.target_task, "select", first).id
    assert len(bank_runs(job, trial_id)) == 1 and len(bank_runs(job)) == 2
    # A trial whose adapter is gone cannot be reused whole: the rerun leaves it out (it will be measured again).
    storage.remove(uri["adapter-1"])
    search_steps.meta_pretrain(job, uri["structure"], uri["data"], uri["baselines"], uri["state-rerun"])
    assert [o.rank_vector for o in load_state(uri["state-rerun"])[0].measured()] == [uniform]


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


# ---------------------------------------------------------------------------------------------------------
# Bad input: models and artifacts


def test_a_tokenizer_larger_than_the_model_vocabulary_is_refused(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "mismatch"
    model_dir.mkdir()
    for path in tiny_model_dir.iterdir():
        (model_dir / path.name).write_bytes(path.read_bytes())
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_tokens([f"<extra_{i}>" for i in range(8)])
    tokenizer.save_pretrained(model_dir)
    with pytest.raises(UserError, match=r"tokenizer of .* has 520 tokens but the model's vocab_size is 512"):
        load_model(str(model_dir))


@pytest.mark.parametrize("target", ["pruned", "adapter"])
def test_a_corrupted_artifact_is_refused_by_its_checksum(target, tiny_model_dir, tmp_path):
    base = write_pruned_model(str(tmp_path / "pruned"), tiny_model_dir)
    adapter = write_adapter(str(tmp_path / "adapter"), base, [8, 2, 4, 8])
    weights = next(Path(tmp_path / target).glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF  # one flipped bit pattern in the tensor data: the file still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match=rf"checksum of '{weights.name}' does not match its manifest \(corrupt\)"):
        load_adapted(base, adapter)


# ---------------------------------------------------------------------------------------------------------
# Bad input: data


@pytest.mark.parametrize("name, content, match", [
    ("blank.txt", "\n\n   \n\n", "holds no text"),
    ("short.txt", "Only a few words.", r"has \d+ tokens, less than one block of cutoff=64"),
    ("latin1.txt", "caf\xe9 au lait".encode("latin-1"), "is not UTF-8 text"),
    ("object.json", '{"text": "one record, not a list"}', "must hold a list of JSON objects"),
    ("numbers.jsonl", "1\n2\n", "must hold a list of JSON objects"),
    ("long_prompt.jsonl", json.dumps({"instruction": "word " * 100, "output": "yes"}) + "\n",
     "every example's response is cut off by cutoff=64"),
    ("missing.txt", None, "no file at"),
])
def test_bad_training_data_is_named(name, content, match, tiny_model_dir, tmp_path):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    with pytest.raises(UserError, match=match) as error:
        load_examples(str(path), tokenizer, cutoff=64)
    assert name in str(error.value)


def test_records_without_text_are_named(tiny_model_dir, tmp_path):
    path = tmp_path / "fields.jsonl"
    path.write_text('{"title": "no text field"}\n')
    with pytest.raises(UserError, match=r"data file '.*fields.jsonl': record .* has neither a 'text' field"):
        read_texts(str(path))  # calibration and perplexity text
    with pytest.raises(UserError, match="has neither a 'text' field nor Alpaca fields"):
        load_examples(str(path), AutoTokenizer.from_pretrained(tiny_model_dir), cutoff=64)


# ---------------------------------------------------------------------------------------------------------
# Bad input: job options (checked when the job is loaded, before any step runs)


@pytest.mark.parametrize("overrides, match", [
    ({"target_task": "mmlu"}, r"task 'mmlu' is not accepted: use an lm-eval task"),
    ({"report_tasks": ["boolq", "squad"]}, r"task 'squad' is not accepted"),
    ({"source_tasks": ["ppl:boolq", "ppl:heldout"]}, "is also a source task"),
    ({"bootstrap_trials": 2}, "bootstrap_trials=2"),
    ({"corpus_docs": 1}, "corpus_docs=1 must be >= 10"),
    ({"seed": "seven"}, "seed='seven' is not accepted: input should be a valid integer"),
    ({"recover": {"epochs": 0}}, r"recover: epochs=0 is outside \[1, 100\]"),
    ({"recover": {"lr": 5.0}}, r"recover: lr=5.0 is outside \(0, 1\)"),
    ({"recover": {"lr": "fast"}}, "recover.lr='fast' is not accepted: input should be a valid number"),
    ({"recover": {"dropout": 1.0}}, r"recover: dropout=1.0 is outside \[0, 1\)"),
    ({"recover": {"cutoff": 1}}, "recover: cutoff=1 must be > 1"),
    ({"recover": {"rank": 7}}, r"recover: rank=7 is not in the candidate set"),
    ({"recover": {"max_steps": -3}}, "recover: save_steps and max_steps must be positive"),
    ({"recover": {"learning_rate": 1e-4}}, r"recover: unknown option\(s\) \['learning_rate'\]"),
    ({"prune": {"ratio": 1.5}}, r"prune: ratio=1.5 is outside \[0, 1\)"),
    ({"prune": {"num_samples": 0}}, "prune: num_samples=0"),
    ({"evaluate": {"limit": -5}}, "evaluate: limit=-5 must be a positive integer"),
    ({"search": {"threshold": 0}}, "search: threshold=0.0 can never be met"),
    ({"search": {"max_iterations": 0}}, r"search: max_iterations=0 must be in \[1, 10000\]"),
    ({"search": {"budget": -1}}, "search: budget=-1 must be a positive parameter count"),
    ({"search": {"candidates": [0, 8]}}, "search: candidates=.* must be a non-empty list of ranks"),
    ({"registry": {"model_name": "bad name!"}}, "registry: model_name='bad name!'"),
])
def test_absurd_job_options_are_refused_when_the_job_loads(overrides, match):
    with pytest.raises(UserError, match=match):
        load_job(None, overrides)


def test_a_proposal_that_does_not_fit_the_search_is_refused():
    state = SearchState("t", new_surrogate(SurrogateConfig(adapt_steps=1), [2, 4, 8]), [10, 20, 30, 40])
    config = SearchConfig(candidates=[2, 4, 8])
    with pytest.raises(UserError, match="rank vector has 3 layers; this search's model has 4"):
        update(state, Proposal([8, 8, 8], 0.5), 0.5, config)
    with pytest.raises(UserError, match="measured score=nan must be a finite number"):
        update(state, Proposal([8, 8, 8, 8], 0.5), float("nan"), config)


@pytest.mark.slow  # a real S3 server (SeaweedFS)
def test_a_base_model_uploaded_by_other_tools_loads_from_s3(s3, tiny_model_dir):
    """A user's model folder on S3 has no manifest: it is fetched whole (and refreshed when it changes)."""
    from rankadaptor.models.loading import load_model

    client = storage.s3_client()
    for path in tiny_model_dir.iterdir():
        client.upload_file(str(path), s3.bucket, f"models/plain/{path.name}")
    model, tokenizer = load_model(f"s3://{s3.bucket}/models/plain")
    assert model.config.num_hidden_layers == 4 and len(tokenizer) == 512
    with pytest.raises(UserError, match="nothing at 's3://rankadaptor/models/none'"):
        storage.local_dir(f"s3://{s3.bucket}/models/none", verify_manifest=False)
