"""Bank and registry against real servers on 127.0.0.1: `mlflow server` with a sqlite and with a PostgreSQL
backend, artifacts proxied to S3 on SeaweedFS (which checks credentials), the champion served by
`mlflow models serve`. One S3 server per module and one MLflow server per backend (module-scoped); bank,
registration and the alias run on both backends, serving and failure paths on PostgreSQL only."""

import dataclasses
import json
import os
import time
import urllib.error
import urllib.request

import boto3
import mlflow
import pytest
from mlflow import MlflowClient
from servers import free_port, mlflow_server, model_server, postgres, seaweedfs, write_adapter, write_pruned_model

from rankadaptor.errors import ServiceError, UserError
from rankadaptor.infra import bank
from rankadaptor.recover.adapters import load_adapted
from rankadaptor.serving import registry
from rankadaptor.serving.pyfunc_model import generate
from rankadaptor.trial import TrialKey

pytestmark = pytest.mark.slow

PROMPTS = ["The little dog", "Once upon a time"]
TRACKING_USER, TRACKING_PASSWORD = "bank-user", "tracking-pass-" + os.urandom(6).hex()


def report(mean: float) -> dict:
    return {"tasks": {"boolq": {"metric": "acc", "value": mean, "stderr": 0.02, "n": 200}},
            "mean": mean, "split": "report", "seconds": 1.0}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="module", autouse=True)
def client_env(s3):
    """The client's S3 keys (to read the artifacts of earlier stages) and MLflow credentials: the servers
    here do not check the latter, but they must never show up in what is logged."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**s3.env(), "MLFLOW_TRACKING_USERNAME": TRACKING_USER,
                            "MLFLOW_TRACKING_PASSWORD": TRACKING_PASSWORD}.items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def artifacts(s3, tiny_model_dir):
    prefix = f"s3://{s3.bucket}/artifacts"
    base = write_pruned_model(f"{prefix}/pruned", tiny_model_dir)
    return {"base": base, "adapter": write_adapter(f"{prefix}/adapter-a", base, [8, 2, 4, 8], seed=0),
            "adapter_b": write_adapter(f"{prefix}/adapter-b", base, [2, 2, 6, 6], seed=1)}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def tracking(request, s3, tmp_path_factory):
    """A running `mlflow server` for each backend; yields its URI."""
    root = tmp_path_factory.mktemp(f"mlflow-{request.param}")
    start = time.monotonic()
    if request.param == "sqlite":
        with mlflow_server(root, f"sqlite:///{root / 'mlflow.db'}", s3) as uri:
            print(f"sqlite-backed mlflow server up in {time.monotonic() - start:.1f} s")
            yield uri
    else:
        with postgres() as backend, mlflow_server(root, backend, s3) as uri:
            print(f"postgresql-backed mlflow server up in {time.monotonic() - start:.1f} s")
            yield uri


# Backend-independent paths run once, on the production-like PostgreSQL-backed server (its fixture is shared).
ONLY_POSTGRESQL = pytest.mark.parametrize("tracking", ["postgresql"], indirect=True)


def config(tracking: str, name: str) -> registry.RegistryConfig:
    return registry.RegistryConfig(model_name=name, tracking_uri=tracking)


def versions(tracking: str, name: str) -> list[int]:
    return sorted(int(v.version) for v in MlflowClient(tracking).search_model_versions(f"name = '{name}'"))


def test_bank_logs_trials_once_and_never_credentials(tracking, s3):
    key = TrialKey(base_model="org/tiny", base_checksum="a" * 64, pruning={"ratio": 0.25}, task="boolq",
                        split="select", rank_vector=[8, 2, 4, 8], recovery={"lr": 1e-4, "s3": s3.endpoint},
                        data_checksum="d" * 64, seed=0)
    first = bank.record_trial(key, score=0.6, predicted=0.58, seconds=12.5, tracking_uri=tracking)
    assert bank.record_trial(key, score=0.1, tracking_uri=tracking)["run_id"] == first["run_id"]
    bank.record_trial(dataclasses.replace(key, seed=1), score=0.5, stage="bootstrap",
                      tracking_uri=tracking)
    rows = bank.load_observations(tracking_uri=tracking, task="boolq")
    assert [(r.score, r.cost, r.predicted) for r in rows] == [(0.6, 12.5, 0.58), (0.5, None, None)]

    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(bank.DEFAULT_EXPERIMENT)
    logged = [v for run in client.search_runs([experiment.experiment_id])
              for v in (*run.data.params.values(), *run.data.tags.values())]
    assert logged and not any(s3.secret_key in v or TRACKING_PASSWORD in v for v in logged)


def test_register_moves_champion_only_on_better_score_and_loads_by_alias(tracking, artifacts):
    name = "tiny-llama"
    base, adapter = artifacts["base"], artifacts["adapter"]
    lineage = {"pipeline_run_id": "run-7", "trial_ids": ["t1"]}
    assert registry.register(adapter, base, report(0.5), config(tracking, name), lineage) == \
        {"model_name": name, "version": 1, "champion_moved": True, "previous_champion": None}
    assert registry.register(artifacts["adapter_b"], base, report(0.4), config(tracking, name)) == \
        {"model_name": name, "version": 2, "champion_moved": False, "previous_champion": 1}

    mlflow.set_tracking_uri(tracking)
    served = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    texts = served.predict(PROMPTS, params={"max_new_tokens": 5})
    assert texts == generate(*load_adapted(base, adapter), PROMPTS, max_new_tokens=5)
    tags = MlflowClient(tracking).get_model_version(name, "1").tags
    assert tags["pruned_model_uri"] == base and tags["pipeline_run_id"] == "run-7"
    assert tags["self_contained"] == "true"  # the base copied into the registry's artifact store on S3
    assert not any(TRACKING_PASSWORD in v or artifacts_secret() in v for v in tags.values())


def artifacts_secret() -> str:
    return os.environ["AWS_SECRET_ACCESS_KEY"]


@ONLY_POSTGRESQL
def test_wrong_s3_credentials_are_named_and_leave_the_registry_unchanged(tracking, artifacts, monkeypatch):
    name = "tiny-llama-s3"
    registry.register(artifacts["adapter"], artifacts["base"], report(0.5), config(tracking, name))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-key")
    boto3.setup_default_session()  # boto3 caches credentials per session: read the environment anew
    try:
        with pytest.raises(UserError, match="S3 refused access") as error:
            registry.register(artifacts["adapter_b"], artifacts["base"], report(0.9), config(tracking, name))
    finally:
        monkeypatch.undo()
        boto3.setup_default_session()
    assert "wrong-secret-key" not in str(error.value)
    assert versions(tracking, name) == [1]
    assert MlflowClient(tracking).get_registered_model(name).aliases == {"champion": "1"}


@ONLY_POSTGRESQL
def test_unreachable_tracking_server_is_named_and_leaves_the_registry_unchanged(tracking, artifacts, monkeypatch):
    name = "tiny-llama-outage"
    registry.register(artifacts["adapter"], artifacts["base"], report(0.5), config(tracking, name))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    gone = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServiceError, match=f"MLflow tracking server '{gone}'") as error:
        registry.register(artifacts["adapter_b"], artifacts["base"], report(0.9), config(gone, name))
    assert TRACKING_PASSWORD not in str(error.value)
    assert versions(tracking, name) == [1]


@ONLY_POSTGRESQL
def test_champion_answers_invocations_from_mlflow_models_serve(tracking, artifacts, tmp_path):
    name = "tiny-llama-served"
    registry.register(artifacts["adapter"], artifacts["base"], report(0.5), config(tracking, name))
    expected = generate(*load_adapted(artifacts["base"], artifacts["adapter"]), PROMPTS, max_new_tokens=5)
    with model_server(tmp_path, f"models:/{name}@champion", tracking, {}) as uri:
        body = json.dumps({"inputs": PROMPTS, "params": {"max_new_tokens": 5, "temperature": 0.0}}).encode()
        request = urllib.request.Request(f"{uri}/invocations", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            assert json.loads(response.read()) == {"predictions": expected}
        for payload, named in [({"params": {"max_new_tokens": 0}}, "max_new_tokens=0"),
                               ({"params": {"temperature": -1.0}}, "temperature=-1.0")]:
            body = json.dumps({"inputs": PROMPTS, **payload}).encode()
            request = urllib.request.Request(f"{uri}/invocations", body, {"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as error:
                urllib.request.urlopen(request, timeout=120)
            answer = json.loads(error.value.read())
            assert error.value.code == 400 and named in answer["message"], answer
            assert "stack_trace" not in answer and "Traceback" not in answer["message"], answer
        body = json.dumps({"inputs": PROMPTS, "params": {"max_new_tokens": 10_000}}).encode()
        request = urllib.request.Request(f"{uri}/invocations", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:  # capped at the context, not refused
            assert len(json.loads(response.read())["predictions"]) == len(PROMPTS)
