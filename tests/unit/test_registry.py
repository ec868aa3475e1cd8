"""Registering models on an embedded MLflow store (real servers: test_registry_servers.py)."""

import dataclasses
import json

import mlflow
import pytest
from mlflow import MlflowClient
from servers import copy_store, empty_mlflow_db, write_adapter, write_pruned_model

from rankadaptor.errors import UserError
from rankadaptor.infra import storage
from rankadaptor.models.loading import load_model
from rankadaptor.recover.adapters import load_adapted
from rankadaptor.serving import registry
from rankadaptor.serving.pyfunc_model import generate

PROMPTS = ["The little dog", "Once upon a time"]


def report(mean: float, split: str = "report") -> dict:
    return {"tasks": {"boolq": {"metric": "acc", "value": mean, "stderr": 0.01, "n": 200},
                      "piqa": {"metric": "acc", "value": mean, "stderr": 0.01, "n": 200}},
            "mean": mean, "split": split, "seconds": 1.0}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("artifacts")
    base = write_pruned_model(str(root / "pruned"), tiny_model_dir)
    return {"root": root, "base": base, "adapter": write_adapter(str(root / "adapter-a"), base, [8, 2, 4, 8], seed=0),
            "adapter_b": write_adapter(str(root / "adapter-b"), base, [2, 2, 6, 6], seed=1),
            "store": empty_mlflow_db(tmp_path_factory.mktemp("template"))}


@pytest.fixture
def config(artifacts, tmp_path):
    return registry.RegistryConfig(model_name="tiny-llama", tracking_uri=copy_store(artifacts["store"], tmp_path))


def versions(config) -> list[int]:
    return sorted(int(v.version) for v in MlflowClient(config.tracking_uri).search_model_versions(
        f"name = '{config.model_name}'"))


def champion(config) -> int | None:
    aliases = MlflowClient(config.tracking_uri).get_registered_model(config.model_name).aliases
    return None if config.champion_alias not in aliases else int(aliases[config.champion_alias])


def test_champion_moves_only_on_a_better_report_score(artifacts, config):
    base, adapter = artifacts["base"], artifacts["adapter"]
    lineage = {"pipeline_run_id": "run-42", "trial_ids": ["t1", "t2"], "budget": 5000}
    assert registry.register(adapter, base, report(0.50), config, lineage) == \
        {"model_name": "tiny-llama", "version": 1, "champion_moved": True, "previous_champion": None}
    assert registry.register(artifacts["adapter_b"], base, report(0.40), config) == \
        {"model_name": "tiny-llama", "version": 2, "champion_moved": False, "previous_champion": 1}
    assert registry.register(adapter, base, report(0.50), config)["champion_moved"] is False  # a tie keeps it
    assert registry.register(artifacts["adapter_b"], base, report(0.60), config) == \
        {"model_name": "tiny-llama", "version": 4, "champion_moved": True, "previous_champion": 1}
    assert champion(config) == 4 and versions(config) == [1, 2, 3, 4]

    tags = MlflowClient(config.tracking_uri).get_model_version(config.model_name, "1").tags
    assert tags["report_mean"] == "0.5" and tags["tasks"] == "boolq,piqa" and tags["split"] == "report"
    assert json.loads(tags["rank_vector"]) == [8, 2, 4, 8]
    assert tags["pruned_model_uri"] == base
    assert tags["pruned_model_checksum"] == storage.checksum(storage.local_dir(base))
    assert tags["adapter_checksum"] == storage.checksum(storage.local_dir(adapter))
    assert json.loads(tags["pruning"])["method"] == "fixture"
    assert json.loads(tags["evaluation_report"]) == report(0.50)
    assert tags["pipeline_run_id"] == "run-42" and json.loads(tags["trial_ids"]) == ["t1", "t2"]
    assert tags["budget"] == "5000" and tags["self_contained"] == "true"  # the default: the base copied along
    trainable = storage.read_json(storage.local_dir(adapter) / "rank_vector.json")["trainable_params"]
    assert tags["trainable_params"] == str(trainable) and trainable > 0



def test_a_champion_scored_on_other_rows_gives_way_and_the_state_says_what_a_catalog_needs(artifacts, config):
    """A task's rows changed (task_checksum differs): the old champion's score is not comparable, so the
    version measured on the new rows takes the alias even with a lower score; then the usual rule again."""
    base, adapter = artifacts["base"], artifacts["adapter"]
    assert registry.model_state(config.model_name, tracking_uri=config.tracking_uri) == (None, None, {})
    registry.register(adapter, base, report(0.60), config, {registry.ROWS_TAG: "rows-a", "job_digest": "d1"})
    moved = registry.register(adapter, base, report(0.40), config, {registry.ROWS_TAG: "rows-b"})
    assert moved == {"model_name": "tiny-llama", "version": 2, "champion_moved": True, "previous_champion": 1}
    assert registry.register(adapter, base, report(0.30), config, {registry.ROWS_TAG: "rows-b"})["champion_moved"] is False
    champion_version, latest, tags = registry.model_state(config.model_name, tracking_uri=config.tracking_uri)
    assert (champion_version, latest, tags[registry.ROWS_TAG]) == (2, 3, "rows-b")


def test_champion_loads_by_alias_and_generates_like_the_recovered_model(artifacts, config):
    base, adapter = artifacts["base"], artifacts["adapter"]
    registry.register(adapter, base, report(0.5), config)
    mlflow.set_tracking_uri(config.tracking_uri)
    served = mlflow.pyfunc.load_model(f"models:/{config.model_name}@{config.champion_alias}")

    texts = served.predict(PROMPTS, params={"max_new_tokens": 6, "temperature": 0.0})
    signature = served.metadata.signature  # from predict's type hints and the input example
    assert [spec.type.name for spec in signature.inputs.inputs] == ["string"]
    assert {(p.name, p.default) for p in signature.params.params} == {("max_new_tokens", 32), ("temperature", 0.0)}
    with pytest.raises(mlflow.exceptions.MlflowException, match="Expected type str, but got int"):
        served.predict(["fine", 7])
    model, tokenizer = load_adapted(base, adapter)
    assert texts == generate(model, tokenizer, PROMPTS, max_new_tokens=6)
    assert texts != generate(*load_model(base), PROMPTS, max_new_tokens=6)  # the adapter is applied
    import pandas as pd

    assert served.predict(pd.DataFrame({"prompt": PROMPTS[:1]}), params={"max_new_tokens": 6}) == texts[:1]
    sampled = served.predict(PROMPTS, params={"max_new_tokens": 4, "temperature": 0.8})
    assert len(sampled) == 2 and all(isinstance(t, str) for t in sampled)
    assert [t.name for t in served.metadata.get_input_schema().input_types()] == ["string"]
    assert {p.name for p in served.metadata.get_params_schema().params} == {"max_new_tokens", "temperature"}


def test_referenced_base_is_verified_and_a_self_contained_version_needs_none(artifacts, config, tmp_path):
    base = write_pruned_model(str(tmp_path / "pruned"), artifacts["root"] / "pruned")
    adapter = artifacts["adapter"]
    registry.register(adapter, base, report(0.5), dataclasses.replace(config, self_contained=False))
    registry.register(adapter, base, report(0.6), config)  # self-contained: the default
    mlflow.set_tracking_uri(config.tracking_uri)
    # The base changes at its URI after registration: version 1 refuses it, version 2 carries its own copy.
    with storage.writing_dir(base) as out:
        for path in storage.local_dir(artifacts["base"]).iterdir():
            if path.name != storage.MANIFEST:
                (out / path.name).write_bytes(path.read_bytes())
        storage.write_json_atomic(out / "prune_report.json", {"method": "changed"})
    with pytest.raises(Exception, match="checksum"):
        mlflow.pyfunc.load_model(f"models:/{config.model_name}/1")
    copied = mlflow.pyfunc.load_model(f"models:/{config.model_name}/2")
    assert len(copied.predict(PROMPTS[:1], params={"max_new_tokens": 2})) == 1


def test_a_failure_after_version_creation_leaves_no_version(artifacts, config, monkeypatch):
    base, adapter = artifacts["base"], artifacts["adapter"]
    registry.register(adapter, base, report(0.5), config)

    def lost_connection(*args, **kwargs):
        raise ConnectionError("injected: registry connection lost while moving the alias")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", lost_connection)
    with pytest.raises(UserError, match="injected"):
        registry.register(adapter, base, report(0.9), config)
    monkeypatch.undo()
    assert versions(config) == [1] and champion(config) == 1
    # A champion that cannot be compared (its score tag was removed by hand) is not silently replaced.
    MlflowClient(config.tracking_uri).delete_model_version_tag(config.model_name, "1", "report_mean")
    with pytest.raises(UserError, match="cannot compare"):
        registry.register(adapter, base, report(0.9), config)
    assert versions(config) == [1] and champion(config) == 1


def test_bad_inputs_are_refused_before_anything_is_written(artifacts, config, tmp_path):
    base, adapter = artifacts["base"], artifacts["adapter"]
    bad_calls = {
        "split 'report'": (adapter, base, report(0.5, split="select"), config),
        "task 'hellaswag'": (adapter, base, report(0.5), dataclasses.replace(
            config, selection_metric="report_hellaswag")),
        "no rank_vector.json": (base, base, report(0.5), config),
        "manifest": (str(tmp_path), base, report(0.5), config),
        "no directory": (str(tmp_path / "missing"), base, report(0.5), config),
        "evaluation report": (adapter, base, {"mean": 0.5}, config),
    }
    for expected, args in bad_calls.items():
        with pytest.raises(UserError, match=expected):
            registry.register(*args)
    with pytest.raises(UserError, match="model_name is empty"):
        registry.register(adapter, base, report(0.5), dataclasses.replace(config, model_name=""))
    with pytest.raises(UserError, match="champion_alias"):
        registry.RegistryConfig(champion_alias="bad alias!").validate()
    with pytest.raises(UserError, match="reserved"):
        registry.register(adapter, base, report(0.5), config, lineage={"rank_vector": "[1]"})
    assert MlflowClient(config.tracking_uri).search_registered_models() == []


def test_one_model_per_base_model_pruning_and_task_unless_named(tiny_model_dir):
    from rankadaptor.job import load_job

    assert registry.default_model_name("s3://bucket/models/Llama-2-7b/", "width", 0.2, "", "boolq") == \
        "Llama-2-7b-width20-boolq"
    assert registry.default_model_name("meta-llama/Llama-2-7b-hf", "depth", 0.125, "", "mc:my task") == \
        "Llama-2-7b-hf-depth12.5-mc-my-task"
    assert registry.default_model_name("m", "unstructured", 0.5, "2:4", "ppl:heldout") == "m-unstructured2-4-ppl-heldout"

    job = load_job(None)  # the bundled job names no model
    assert job.registry.model_name == "" and job.registry_config().model_name == "aidreams-260k-width20-ppl-heldout"
    other_task = load_job(None, {"target_task": "mc:everyday", "report_tasks": ["mc:everyday"]})
    assert other_task.registry_config().model_name == "aidreams-260k-width20-mc-everyday"
    deeper = load_job(None, {"prune": {"mode": "depth", "ratio": 0.25}})
    assert deeper.registry_config().model_name == "aidreams-260k-depth25-ppl-heldout"
    named = load_job(None, {"registry": {"model_name": "mine"}})
    assert named.registry_config().model_name == "mine"
    for name in (job, other_task, deeper):  # every derived name is one MLflow accepts
        name.registry_config().validate()
