"""The committed pipelines read as a KFP 2.x backend reads them, without a cluster: the IR and its
Kubernetes platform spec parse strictly with KFP's own protobufs (an unknown field is an error), and every
task's inputs resolve to a pipeline input, a constant or an output its producer really declares."""

from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.kubernetes.kubernetes_executor_config_pb2 import KubernetesExecutorConfig
from kfp.pipeline_spec.pipeline_spec_pb2 import PipelineSpec, PlatformSpec

COMPILED = sorted((Path(__file__).resolve().parents[2] / "pipelines" / "compiled").glob("*.yaml"))


def parse(path: Path) -> tuple[PipelineSpec, PlatformSpec]:
    spec_doc, *platform_doc = yaml.safe_load_all(path.read_text())
    spec = json_format.ParseDict(spec_doc, PipelineSpec())  # strict: unknown fields raise
    platform = json_format.ParseDict(platform_doc[0], PlatformSpec()) if platform_doc else PlatformSpec()
    return spec, platform


def unresolved(spec: PipelineSpec) -> list[str]:
    """Every task input that names a missing pipeline input, producer or output, and every required
    component input that no task argument fills."""
    executors = set(json_format.MessageToDict(spec.deployment_spec).get("executors", {}))
    found = []
    dags = {"root": spec.root, **dict(spec.components)}
    for owner_name, owner in dags.items():
        if owner.executor_label:
            if owner.executor_label not in executors:
                found.append(f"{owner_name}: executor {owner.executor_label} is not deployed")
            continue
        owner_params, owner_artifacts = owner.input_definitions.parameters, owner.input_definitions.artifacts
        tasks = owner.dag.tasks
        for task_name, task in tasks.items():
            where = f"{owner_name}/{task_name}"
            component = spec.components.get(task.component_ref.name)
            if component is None:
                found.append(f"{where}: component {task.component_ref.name} is missing")
                continue
            params, artifacts = task.inputs.parameters, task.inputs.artifacts
            loop_items = {task.parameter_iterator.item_input, task.artifact_iterator.item_input} - {""}
            for name, definition in component.input_definitions.parameters.items():
                if (name not in params and name not in loop_items and not definition.is_optional
                        and not definition.HasField("default_value")):
                    found.append(f"{where}: required parameter {name} is not given")
            for name, definition in component.input_definitions.artifacts.items():
                if name not in artifacts and not definition.is_optional:
                    found.append(f"{where}: required artifact {name} is not given")
            for kind_name, sources, declared_inputs, outputs in (
                    ("parameter", params, owner_params, lambda c: c.output_definitions.parameters),
                    ("artifact", artifacts, owner_artifacts, lambda c: c.output_definitions.artifacts)):
                for name, source in sources.items():
                    kind = source.WhichOneof("kind")
                    if kind == f"component_input_{kind_name}" and getattr(source, kind) not in declared_inputs:
                        found.append(f"{where}.{name}: pipeline input {kind_name} {getattr(source, kind)} is not declared")
                    if kind == f"task_output_{kind_name}":
                        output = getattr(source, kind)
                        producer = output.producer_task
                        declared = outputs(spec.components[tasks[producer].component_ref.name]) if producer in tasks else {}
                        key = output.output_parameter_key if kind_name == "parameter" else output.output_artifact_key
                        if key not in declared:
                            found.append(f"{where}.{name}: {producer} declares no output {kind_name} {key}")
    return found


def test_there_are_compiled_pipelines():
    assert {p.stem for p in COMPILED} >= {"rankadaptor", "bootstrap", "baselines"}


@pytest.mark.parametrize("path", COMPILED, ids=lambda p: p.stem)
def test_ir_and_kubernetes_spec_parse_strictly_and_every_input_resolves(path):
    spec, platform = parse(path)
    assert spec.schema_version and spec.sdk_version.startswith("kfp-2.17")
    deployed = set(json_format.MessageToDict(spec.deployment_spec)["executors"])
    kubernetes = platform.platforms["kubernetes"].deployment_spec.executors
    assert kubernetes, "no Kubernetes settings at all"
    for name, executor in kubernetes.items():
        assert name in deployed, f"Kubernetes settings for {name}, which is no executor"
        json_format.ParseDict(json_format.MessageToDict(executor), KubernetesExecutorConfig())  # strict
    assert unresolved(spec) == []


def test_the_resolution_check_finds_a_broken_wire():
    spec, _ = parse(next(p for p in COMPILED if p.stem == "baselines"))
    task_name, task, param = next((n, t, p) for n, t in spec.root.dag.tasks.items() for p in t.inputs.parameters
                                  if not spec.components[t.component_ref.name].input_definitions.parameters[p].is_optional
                                  and not spec.components[t.component_ref.name].input_definitions.parameters[p]
                                  .HasField("default_value"))
    del task.inputs.parameters[param]
    assert f"root/{task_name}: required parameter {param} is not given" in unresolved(spec)
    spec.root.input_definitions.parameters.clear()
    assert any("pipeline input" in m and "is not declared" in m for m in unresolved(spec))


def test_an_unknown_field_is_an_error(tmp_path):
    text = next(p for p in COMPILED if p.stem == "baselines").read_text().replace("executorLabel:", "executorLable:", 1)
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(json_format.ParseError, match="executorLable"):
        parse(tmp_path / "bad.yaml")


REQUIRED_SECRET_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_URI"}


@pytest.mark.parametrize("path", COMPILED, ids=lambda p: p.name)
def test_every_step_gets_both_secrets_and_neither_is_optional(path):
    """Every executor (each may read S3 or MLflow: the preflight in configure, the bank in propose/update)
    has the Secret env; a missing Secret stops the pod instead of silently using a pod-local store."""
    spec, platform = (list(yaml.safe_load_all(path.read_text())) + [{}])[:2]
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(spec["deploymentSpec"]["executors"]) == set(executors)
    for name, config in executors.items():
        required = {kv["envVar"] for s in config.get("secretAsEnv", []) if not s.get("optional")
                    for kv in s["keyToEnv"]}
        assert REQUIRED_SECRET_ENV <= required, (name, required)
