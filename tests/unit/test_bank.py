"""The observation bank on an embedded MLflow store (the server-backed bank is in test_registry_servers.py)."""

import dataclasses
import time

import pytest
from mlflow import MlflowClient
from mlflow.entities import Param
from servers import copy_store, empty_mlflow_db, free_port

from rankadaptor.errors import ServiceError, UserError
from rankadaptor.infra import bank, tracking
from rankadaptor.trial import Observation, TrialKey, canonical_json

PRUNING = {"method": "block", "ratio": 0.25, "layers": [1, 3]}


def key(**changes) -> TrialKey:
    fields = dict(base_model="org/tiny", base_checksum="a" * 64, pruning=PRUNING, task="boolq", split="select",
                  rank_vector=[8, 2, 4, 8], recovery={"lr": 1e-4, "epochs": 1}, data_checksum="d" * 64, seed=0)
    return TrialKey(**{**fields, **changes})


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    return empty_mlflow_db(tmp_path_factory.mktemp("template"))


@pytest.fixture
def uri(tmp_path, empty_store):
    return copy_store(empty_store, tmp_path / "store")


def runs(uri, experiment=bank.DEFAULT_EXPERIMENT):
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def test_trials_round_trip_as_observations(uri):
    first = bank.record_trial(key(), score=0.61, scores={"boolq": 0.61}, predicted=0.6, trainable_params=1234,
                              seconds=2.5, layer_features=[[1.0, 0.5]] * 4, artifact="s3://b/trial-1", tracking_uri=uri)
    bank.record_trial(key(rank_vector=[2, 2, 2, 2]), score=0.55, stage="bootstrap", tracking_uri=uri)
    bank.record_trial(key(task="piqa"), score=0.7, tracking_uri=uri)
    bank.record_trial(key(pruning={**PRUNING, "ratio": 0.5}), score=0.4, tracking_uri=uri)

    assert first["reused"] is False and first["trial_id"] == key().id and first["scores"] == {"boolq": 0.61}
    assert first["trainable_params"] == 1234 and {f.name for f in dataclasses.fields(Observation)} < set(first)
    rows = bank.load_observations(tracking_uri=uri, pruning=PRUNING, task="boolq")
    assert rows == [
        Observation(task="boolq", rank_vector=[8, 2, 4, 8], score=0.61, layer_features=[[1.0, 0.5]] * 4, cost=2.5,
                    predicted=0.6, artifact="s3://b/trial-1"),
        Observation(task="boolq", rank_vector=[2, 2, 2, 2], score=0.55),
    ]
    assert bank.load_observations(tracking_uri=uri, task="boolq", seed=1) == []
    assert len(bank.load_observations(tracking_uri=uri, task="boolq", seed=0, split="select")) == 3
    assert len(bank.load_observations(tracking_uri=uri)) == 4
    assert [r.task for r in bank.load_observations(tracking_uri=uri, task="piqa")] == ["piqa"]
    assert bank.load_observations(tracking_uri=uri, base_model="other/model") == []
    assert bank.load_observations("no-such-experiment", tracking_uri=uri) == []
    tags = {r.data.tags["trial_id"]: r.data.tags["stage"] for r in runs(uri)}
    assert tags[key(rank_vector=[2, 2, 2, 2]).id] == "bootstrap"
    params = runs(uri)[-1].data.params
    assert params["pruning"] == canonical_json(PRUNING) and params["seed"] == "0"


def test_a_recorded_trial_is_reused_not_duplicated(uri):
    first = bank.record_trial(key(), score=0.61, tracking_uri=uri)
    again = bank.record_trial(key(), score=0.99, tracking_uri=uri)
    assert again["reused"] is True and again["run_id"] == first["run_id"] and again["score"] == 0.61
    assert len(runs(uri)) == 1
    assert bank.find_trial(key().id, tracking_uri=uri)["run_id"] == first["run_id"]
    assert bank.find_trial(key(seed=1).id, tracking_uri=uri) is None


def test_trial_id_covers_every_input():
    other = {"base_model": "org/other", "base_checksum": "b" * 64, "pruning": {**PRUNING, "ratio": 0.3},
             "task": "piqa", "split": "report", "rank_vector": [8, 2, 4, 6], "recovery": {"lr": 2e-4, "epochs": 1},
             "data_checksum": "e" * 64, "seed": 1, "task_checksum": "f" * 64, "fidelity": "short:0.34"}
    assert set(other) == {f.name for f in dataclasses.fields(TrialKey)}
    ids = {key(**{name: value}).id for name, value in other.items()}
    assert len(ids) == len(other) and key().id not in ids
    assert key(pruning={"layers": [1, 3], "ratio": 0.25, "method": "block"}).id == key().id  # key order is not identity


def test_a_crash_mid_log_leaves_no_observation(uri, monkeypatch):
    real_log_batch = MlflowClient.log_batch

    def log_then_fail(self, run_id, *args, **kwargs):
        real_log_batch(self, run_id, *args, **kwargs)
        raise ConnectionError("injected: connection lost after logging")

    monkeypatch.setattr(MlflowClient, "log_batch", log_then_fail)
    with pytest.raises(UserError, match="injected"):
        bank.record_trial(key(), score=0.61, tracking_uri=uri)
    # A process killed between create and end leaves a RUNNING run with everything logged.
    monkeypatch.setattr(MlflowClient, "log_batch", real_log_batch)
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(bank.DEFAULT_EXPERIMENT).experiment_id
    killed = client.create_run(experiment_id, tags={"trial_id": key(seed=5).id, "stage": "search"})
    bank._log_all(client, killed.info.run_id, key(seed=5).params(), {"score": 0.9})

    assert sorted(r.info.status for r in runs(uri)) == ["FAILED", "RUNNING"]
    assert bank.load_observations(tracking_uri=uri) == []
    assert bank.find_trial(key().id, tracking_uri=uri) is None
    redo = bank.record_trial(key(), score=0.61, tracking_uri=uri)
    assert redo["reused"] is False
    assert [r.score for r in bank.load_observations(tracking_uri=uri)] == [0.61]


def test_credentials_never_reach_params_or_tags(uri, monkeypatch):
    secret, password = "aws-secret-" + "x" * 20, "tracking-password-123"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    leaky = key(recovery={"lr": 1e-4, "note": f"s3 key {secret}", "db": f"postgresql://u:{password}@h/db"})
    bank.record_trial(leaky, score=0.5, tracking_uri=uri)
    (run,) = runs(uri)
    values = [*run.data.params.values(), *run.data.tags.values()]
    assert values and not any(secret in v or password in v for v in values)
    assert "***" in run.data.params["recovery"]


def test_bad_input_is_refused_before_anything_is_written(uri):
    with pytest.raises(UserError, match="rank_vector"):
        bank.record_trial(key(rank_vector=[8, "x", 4, 8]), score=0.5, tracking_uri=uri)
    with pytest.raises(UserError, match="layer_features"):
        bank.record_trial(key(), score=0.5, layer_features=[[0.123456789] * 100] * 32, tracking_uri=uri)
    with pytest.raises(UserError, match="sha256"):
        bank.find_trial("' or 1=1", tracking_uri=uri)
    assert runs(uri) == []


def test_unreachable_tracking_server_is_named_without_credentials(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    port = free_port()  # nothing listens there
    start = time.monotonic()
    with pytest.raises(ServiceError) as error:  # an outage, not bad input
        bank.record_trial(key(), score=0.5, tracking_uri=f"http://bank-user:hunter22@127.0.0.1:{port}")
    message = str(error.value)
    assert f"127.0.0.1:{port}" in message and "MLflow tracking server" in message and "hunter22" not in message
    assert time.monotonic() - start < 60


def test_tracking_uri_defaults_to_an_embedded_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.configure(root=tmp_path / "a") == f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking.configure(root=tmp_path / "a") == "http://127.0.0.1:1"
    assert tracking.configure("sqlite:///x.db") == "sqlite:///x.db"


def test_a_bank_row_can_be_recorded_by_hand_only_through_record_trial(uri):
    """A run without a trial_id tag (e.g. logged by hand into the experiment) is not an observation."""
    bank.record_trial(key(), score=0.5, tracking_uri=uri)
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(bank.DEFAULT_EXPERIMENT).experiment_id
    stray = client.create_run(experiment_id)
    client.log_batch(stray.info.run_id, params=[Param(k, v) for k, v in key(seed=9).params().items()])
    client.set_terminated(stray.info.run_id, "FINISHED")
    assert len(bank.load_observations(tracking_uri=uri)) == 1


def test_a_trial_paid_for_again_points_at_its_new_adapter(uri):
    bank.record_trial(key(), score=0.61, artifact="s3://b/lost-adapter", tracking_uri=uri)
    again = bank.record_trial(key(), score=0.61, artifact="s3://b/new-adapter", tracking_uri=uri)
    assert again["reused"] is True and again["artifact"] == "s3://b/new-adapter"
    assert [r.artifact for r in bank.load_observations(tracking_uri=uri)] == ["s3://b/new-adapter"]
    assert len(runs(uri)) == 1


def test_seconds_and_fidelity_round_trip(uri):
    bank.record_trial(key(), score=0.6, seconds=3.0, tracking_uri=uri)
    bank.record_trial(key(fidelity="short:0.34"), score=0.58, seconds=1.0, tracking_uri=uri)
    bank.record_trial(key(rank_vector=[2, 2, 2, 2]), score=0.55, tracking_uri=uri)  # no seconds: None
    rows = bank.load_observations(tracking_uri=uri)
    assert [(r.fidelity, r.seconds) for r in rows] == [("full", 3.0), ("short:0.34", 1.0), ("full", None)]
    assert [r.score for r in bank.load_observations(tracking_uri=uri, fidelity="short:0.34")] == [0.58]
    assert [r.score for r in bank.load_observations(tracking_uri=uri, fidelity="full")] == [0.6, 0.55]
    assert bank.find_trial(key(fidelity="short:0.34").id, tracking_uri=uri)["fidelity"] == "short:0.34"
