"""Content-addressed caching: an input's fingerprint follows its content, not its URI, and a pipeline run
under kfp.local reruns the steps that read an input whose content changed at the same path."""

import json
import os
import shutil
from pathlib import Path

import pytest
from kfp import dsl, local
from servers import seaweedfs

from pipelines.local import without_retries
from pipelines.parameters import named, with_parameters
from pipelines.rankadaptor import BASELINES_CHOICES, arguments, prepared, split
from rankadaptor.errors import UserError
from rankadaptor.infra import storage
from rankadaptor.infra.fingerprint import fingerprint
from rankadaptor.job import job_from_json, job_to_json, load_job


def test_a_local_file_is_keyed_by_its_bytes(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n')
    first = fingerprint(str(path))
    assert first.startswith("sha256:") and fingerprint(str(path)) == first
    os.utime(path, ns=(1, 1))  # touched, same bytes: same key
    assert fingerprint(str(path)) == first
    path.write_text('{"instruction": "a", "output": "c"}\n')  # same size, new content
    assert fingerprint(str(path)) != first


def test_a_folder_is_keyed_by_its_files_and_an_artifact_by_its_manifest(tmp_path, tiny_model_dir):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    first = fingerprint(str(folder))
    assert first.startswith("files:") and fingerprint(str(folder)) == first
    (folder / "config.json").write_text((folder / "config.json").read_text() + " ")  # weights rewritten in place
    assert fingerprint(str(folder)) != first
    second = fingerprint(str(folder))
    (folder / "extra.txt").write_text("x")
    assert fingerprint(str(folder)) != second

    with storage.writing_dir(str(tmp_path / "artifact")) as out:
        (out / "a.txt").write_text("a")
    assert fingerprint(str(tmp_path / "artifact")) == f"manifest:{storage.checksum(tmp_path / 'artifact')}"


def test_a_hub_id_without_a_cached_snapshot_is_its_name_and_a_missing_path_is_refused(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # read at import: an earlier import wins
    assert fingerprint("org/not-cached") == "hub:org/not-cached"
    snapshot = tmp_path / "hub" / "models--org--cached" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--org--cached" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--cached" / "refs" / "main").write_text("abc123")
    assert fingerprint("org/cached") == "hub:org/cached@abc123"
    with pytest.raises(UserError, match="input '/nowhere/data.jsonl' not found"):
        fingerprint("/nowhere/data.jsonl")


def test_the_job_json_carries_the_fingerprints_and_the_steps_read_the_same_job(tmp_path):
    job = load_job(None)
    text = job_to_json(job, {"base_model": "files:1"})
    assert json.loads(text)["fingerprints"] == {"base_model": "files:1"}
    assert job_from_json(text) == job
    assert job_to_json(job, {"base_model": "files:2"}) != text


@pytest.mark.slow
def test_s3_objects_and_folders_are_keyed_by_their_etags(tmp_path, monkeypatch):
    (tmp_path / "seaweedfs").mkdir()
    with seaweedfs(tmp_path / "seaweedfs") as s3:
        for name, value in s3.env().items():
            monkeypatch.setenv(name, value)
        client = storage.s3_client()
        client.put_object(Bucket=s3.bucket, Key="data/train.jsonl", Body=b"one")
        client.put_object(Bucket=s3.bucket, Key="model/config.json", Body=b"{}")
        file_uri, folder_uri = f"s3://{s3.bucket}/data/train.jsonl", f"s3://{s3.bucket}/model"
        file_key, folder_key = fingerprint(file_uri), fingerprint(folder_uri)
        assert file_key.startswith("etag:") and folder_key.startswith("listing:")
        assert (fingerprint(file_uri), fingerprint(folder_uri)) == (file_key, folder_key)
        client.put_object(Bucket=s3.bucket, Key="data/train.jsonl", Body=b"two")  # same key, new content
        client.put_object(Bucket=s3.bucket, Key="model/config.json", Body=b"{ }")
        assert fingerprint(file_uri) != file_key and fingerprint(folder_uri) != folder_key
        with pytest.raises(UserError, match="not found on S3"):
            fingerprint(f"s3://{s3.bucket}/nothing-here")


@dsl.pipeline(name="start")
@with_parameters(BASELINES_CHOICES)
def start(*args):
    """configure -> prepare_data -> prune: the steps that read the user's inputs first."""
    options, gpu = split(named(args, BASELINES_CHOICES))
    prepared(gpu, source_tasks=[], bootstrap_trials=0, adalora_baseline=False, **options)


def ran_steps(root: Path, job) -> set[str]:
    """Run the start of the pipeline; the steps that ran (a step served from the cache leaves no folder)."""
    before = set((root / "pipeline").glob("start-*")) if (root / "pipeline").exists() else set()
    start(**arguments(job, "baselines"))
    (run,) = set((root / "pipeline").glob("start-*")) - before
    return {step.name for step in run.iterdir()}


@pytest.mark.slow
def test_changed_data_at_the_same_path_reruns_the_steps_that_read_it(tmp_path, tiny_model_dir):
    data = tmp_path / "inputs" / "train.jsonl"
    data.parent.mkdir()
    rows = [json.loads(line) for line in (tiny_model_dir.parent / "text" / "train.jsonl").read_text().splitlines()]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows[:30]))
    job = load_job(None, {"data": str(data), "heldout_text": str(tiny_model_dir.parent / "text" / "heldout.txt"),
                          "report_tasks": []})
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "pipeline"),
               raise_on_error=True, enable_caching=True)
    without_retries(start)

    assert {"configure", "prepare-data", "prune"} <= ran_steps(tmp_path, job)
    assert ran_steps(tmp_path, job) == {"configure"}  # same content: served from the cache
    data.write_text("".join(json.dumps(r) + "\n" for r in rows[30:60]))  # new data, same path
    assert {"prepare-data", "prune"} <= ran_steps(tmp_path, job)
    assert ran_steps(tmp_path, job) == {"configure"}
