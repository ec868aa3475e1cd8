"""Estimate the size of the Argo Workflow object that Kubeflow Pipelines 2.x creates for a compiled IR file.

Why: KFP's API server compiles the IR into one Argo `Workflow` custom resource. Two limits apply to it:
- etcd's request size (`--max-request-bytes`, 1.5 MiB = 1,572,864 B by default; not changeable on EKS),
  for the object as created (kubeflow/pipelines#10968, #13738, #9837);
- Argo's controller limit `MAX_WORKFLOW_SIZE` (1 MiB = 1,048,576 B by default, argo-workflows
  `workflow/packer/packer.go`) on the whole object, spec plus status, checked on every update. Above it
  the controller gzips `status.nodes` into `status.compressedNodes`; if it is still too large and node
  status offloading (an SQL database) is not configured, the run fails with "workflow is longer than
  maximum allowed size" (awslabs/kubeflow-manifests#767). So the binding limit of a run is 1 MiB for
  spec + compressed status. (KFP's own 256 KiB limit came from storing component specs in annotations;
  kubeflow/pipelines#10979 moved them to workflow arguments, fixing #10968.)

Method: the spec is rebuilt the way KFP's backend compiler (backend/src/v2/compiler/argocompiler:
argo.go, dag.go, container.go, visitor.go) builds it, then serialised as compact JSON:
- `spec.arguments.parameters`: per container component, `components-<sha256 of its container>` (the
  component spec JSON) and `implementations-<same hash>` (the container spec JSON), deduplicated by
  the container's hash, so the unrolled copies of one step are stored once; per container component
  with a kubernetes config, `kubernetes-<component name>` (that JSON, never deduplicated); per DAG
  component (root, sub-pipelines, conditions, loops) `components-<name>` with its whole DAG spec JSON.
- `spec.templates`: the fixed system templates (container driver, executor + impl and their `retry-`
  variants, DAG driver, entrypoint), modelled on the backend's testdata (hello_world.yaml), and one DAG
  template per DAG component whose tasks are, per IR task, a driver task carrying the task spec JSON
  inline plus placeholders of the component/container/kubernetes arguments, and an executor (or
  sub-DAG) task with the pod-spec-patch, cached-decision and retry parameters.
- `metadata`: a fixed 2 KB for name, labels, annotations and managedFields (assumption).

The status is estimated for one run (benchmarks/sizing/kfp_ir.py walks it; worst case: the gate never
converges, every unrolled iteration runs). Argo keeps one `status.nodes` entry per node (its
`NodeStatus` type carries the node's `inputs` and `outputs`, i.e. the resolved parameter values).
Per executed container task: a driver node (inputs: the component, task, container and kubernetes
JSON; outputs: the pod-spec patch), an executor DAG node and
an impl pod node (both with the pod-spec patch as input), plus, with a retry policy, a retry parent node;
per DAG task a driver node and a DAG node; a DAG whose condition is false adds a driver and a skipped
node. The pod-spec patch is approximated as the launcher command with the executor input (parameter
values, artifact URIs) and component spec, the user command, resources, env from Secrets, node
selector and tolerations (not verified line by line against backend/src/v2/driver). The `job`
parameter's value is approximated by the pipeline's default parameters as JSON. Each node's fixed part
(id, full name, type, phase, times, children, host, resources duration) is measured from a representative
entry built here. The compressed status is measured: gzip + base64 of that nodes JSON, as Argo does.

Not modelled: Go's JSON escaping of <, > and & (a few bytes), pod-metadata templates (none used), the
two extra templates and second task-JSON copy of a ParallelFor (`iteratorTask`; bootstrap and catalog pipelines),
exit handlers and importers (none used), the executor-plugin form of the driver in newest backends
(smaller than the pod form counted here), caching (a cached task skips its impl node: fewer bytes).

    python -m benchmarks.sizing.workflow_size                    # committed pipelines + main pipeline per cap
    python -m benchmarks.sizing.workflow_size --caps 2 4 6 --json
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import zlib
from pathlib import Path

from benchmarks.sizing.kfp_ir import COMPILED, compact, compile_main, load, temp_dir, unroll_cap, walk

ETCD_LIMIT = 1_572_864  # etcd --max-request-bytes default (1.5 MiB)
ARGO_LIMIT = 1_048_576  # Argo workflow-controller MAX_WORKFLOW_SIZE default (1 MiB): spec + (compressed) status
MARGIN = 0.30  # headroom kept under ARGO_LIMIT for what the estimate leaves out
DEFAULT_CAPS = (2, 4, 6, 8, 10, 12, 14, 16, 20)
METADATA_BYTES = 2048
RUN = "rankadaptor-x7k2p"  # a representative generated Workflow name
DRIVER_OUT = "/tmp/outputs"  # noqa: S108 (a path inside KFP's driver pod, written here as data)
LAUNCHER_OUT = "/tmp/kfp"  # noqa: S108 (a path inside the step's pod, written here as data)
PIPELINE_ROOT = "s3://mlpipeline/v2/artifacts/rankadaptor/2f0c7a8e-3b1d-4c55-9e0a-6f1b2c3d4e5f"


def _wp(name: str) -> str:
    return "{{workflow.parameters." + name + "}}"


def _out(task: str, name: str) -> str:
    return "{{tasks." + task + ".outputs.parameters." + name + "}}"


def _param(name: str, value=None, default=None) -> dict:
    p = {"name": name}
    if value is not None:
        p["value"] = value
    if default is not None:
        p["default"] = default
    return p


def _container_hash(spec: dict, component: str) -> str:
    container = spec["deploymentSpec"]["executors"][spec["components"][component]["executorLabel"]]["container"]
    return hashlib.sha256(compact(container).encode()).hexdigest()


def system_templates(retry: bool, plain: bool) -> list[dict]:
    """The fixed templates the backend adds once per Workflow (modelled on its hello_world testdata)."""
    driver_args = ["--type", "CONTAINER", "--pipeline_name", "rankadaptor", "--run_id", "{{workflow.uid}}",
                   "--run_name", "{{workflow.name}}", "--run_display_name", "", "--dag_execution_id",
                   "{{inputs.parameters.parent-dag-id}}", "--component", "{{inputs.parameters.component}}",
                   "--task", "{{inputs.parameters.task}}", "--task_name", "{{inputs.parameters.task-name}}",
                   "--container", "{{inputs.parameters.container}}", "--iteration_index",
                   "{{inputs.parameters.iteration-index}}", "--cached_decision_path",
                   "{{outputs.parameters.cached-decision.path}}", "--pod_spec_patch_path",
                   "{{outputs.parameters.pod-spec-patch.path}}", "--condition_path",
                   "{{outputs.parameters.condition.path}}", "--kubernetes_config",
                   "{{inputs.parameters.kubernetes-config}}", "--http_proxy", "", "--https_proxy", "", "--no_proxy",
                   "", "--ml_pipeline_server_address", "ml-pipeline.kubeflow", "--ml_pipeline_server_port", "8887",
                   "--mlmd_server_address", "metadata-grpc-service.kubeflow", "--mlmd_server_port", "8080"]
    resources = {"limits": {"cpu": "500m", "memory": "512Mi"}, "requests": {"cpu": "100m", "memory": "64Mi"}}
    security = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                "seccompProfile": {"type": "RuntimeDefault"}}
    container_driver = {
        "name": "system-container-driver", "metadata": {},
        "container": {"image": "ghcr.io/kubeflow/kfp-driver:2.5.0", "command": ["driver"], "args": driver_args,
                      "resources": resources, "securityContext": security, "name": "",
                      "env": [{"name": n, "value": ""} for n in ("http_proxy", "https_proxy", "no_proxy")]},
        "inputs": {"parameters": [_param("component"), _param("task"), _param("container"), _param("task-name"),
                                  _param("parent-dag-id"), _param("iteration-index", default="-1"),
                                  _param("kubernetes-config", default="")]},
        "outputs": {"parameters": [
            {"name": "pod-spec-patch", "valueFrom": {"default": "", "path": f"{DRIVER_OUT}/pod-spec-patch"}},
            {"name": "cached-decision", "default": "false",
             "valueFrom": {"default": "false", "path": f"{DRIVER_OUT}/cached-decision"}},
            {"name": "condition", "valueFrom": {"default": "true", "path": f"{DRIVER_OUT}/condition"}}]}}
    scratch = ["kfp-launcher", "gcs-scratch", "s3-scratch", "minio-scratch", "dot-local-scratch", "dot-cache-scratch",
               "dot-config-scratch"]
    mounts = ["/kfp-launcher", "/gcs", "/s3", "/minio", "/.local", "/.cache", "/.config"]
    retry_params = ["retry-max-count", "retry-backoff-duration", "retry-backoff-factor", "retry-backoff-max-duration"]

    def executor_pair(prefix: str, with_retry: bool) -> list[dict]:
        extra = [_param(n) for n in retry_params] if with_retry else []
        executor = {
            "name": f"{prefix}system-container-executor", "metadata": {}, "outputs": {},
            "inputs": {"parameters": [_param("pod-spec-patch"), _param("cached-decision", default="false")]
                       + [_param(n, default="0") for n in (retry_params if with_retry else [])]},
            "dag": {"tasks": [{"name": "executor", "template": f"{prefix}system-container-impl",
                               "when": "{{inputs.parameters.cached-decision}} != true",
                               "arguments": {"parameters": [_param("pod-spec-patch", "{{inputs.parameters.pod-spec-patch}}")]
                                             + [_param(n, "{{inputs.parameters." + n + "}}") for n in
                                                (retry_params if with_retry else [])]}}]}}
        impl = {
            "name": f"{prefix}system-container-impl", "metadata": {}, "outputs": {},
            "inputs": {"parameters": [_param("pod-spec-patch")] + extra},
            "podSpecPatch": "{{inputs.parameters.pod-spec-patch}}",
            "volumes": [{"name": n, "emptyDir": {}} for n in scratch],
            "initContainers": [{"name": "kfp-launcher", "image": "ghcr.io/kubeflow/kfp-launcher:2.5.0",
                                "command": ["launcher-v2"], "args": ["--copy", "/kfp-launcher/launch"],
                                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m"}},
                                "volumeMounts": [{"name": "kfp-launcher", "mountPath": "/kfp-launcher"}],
                                "securityContext": security}],
            "container": {"name": "", "image": "gcr.io/ml-pipeline/should-be-overridden-during-runtime",
                          "command": ["should-be-overridden-during-runtime"], "resources": {},
                          "env": [{"name": "KFP_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                  {"name": "KFP_POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}]
                          + ([{"name": "KFP_RETRY_INDEX", "value": "{{retries}}"}] if with_retry else []),
                          "envFrom": [{"configMapRef": {"name": "metadata-grpc-configmap", "optional": True}}],
                          "volumeMounts": [{"name": n, "mountPath": m} for n, m in zip(scratch, mounts)]}}
        if with_retry:
            impl["retryStrategy"] = {"limit": "{{inputs.parameters.retry-max-count}}",
                                     "backoff": {"duration": "{{inputs.parameters.retry-backoff-duration}}",
                                                 "factor": "{{inputs.parameters.retry-backoff-factor}}",
                                                 "maxDuration": "{{inputs.parameters.retry-backoff-max-duration}}"}}
        return [executor, impl]

    dag_driver = {
        "name": "system-dag-driver", "metadata": {},
        "container": {"image": "ghcr.io/kubeflow/kfp-driver:2.5.0", "command": ["driver"], "name": "",
                      "args": [a.replace("CONTAINER", "{{inputs.parameters.driver-type}}") for a in driver_args[:22]]
                      + ["--runtime_config", "{{inputs.parameters.runtime-config}}", "--execution_id_path",
                         "{{outputs.parameters.execution-id.path}}", "--iteration_count_path",
                         "{{outputs.parameters.iteration-count.path}}", "--condition_path",
                         "{{outputs.parameters.condition.path}}", "--log_level", "1", "--publish_logs", "true"],
                      "resources": resources, "securityContext": security},
        "inputs": {"parameters": [_param("component"), _param("runtime-config", default=""), _param("task", default=""),
                                  _param("task-name", default=""), _param("parent-dag-id", default="0"),
                                  _param("iteration-index", default="-1"), _param("driver-type", default="DAG")]},
        "outputs": {"parameters": [
            {"name": "execution-id", "valueFrom": {"path": f"{DRIVER_OUT}/execution-id"}},
            {"name": "iteration-count", "valueFrom": {"default": "0", "path": f"{DRIVER_OUT}/iteration-count"}},
            {"name": "condition", "valueFrom": {"default": "true", "path": f"{DRIVER_OUT}/condition"}}]}}
    out = [container_driver, dag_driver]
    if plain:
        out += executor_pair("", False)
    if retry:
        out += executor_pair("retry-", True)
    return out


def _depends(deps: list[str]) -> str:
    return " && ".join(f"{d}.Succeeded" for d in deps)


def dag_template(spec: dict, platform: dict, name: str, component: dict) -> dict:
    """One DAG component as the backend compiles it (dag.go: DAG, task, containerDriverTask, dagDriverTask)."""
    components = spec["components"]
    tasks = []
    for task_name in sorted(component["dag"]["tasks"]):
        task = component["dag"]["tasks"][task_name]
        ref = task["componentRef"]["name"]
        callee = components[ref]
        driver_name = f"{task_name}-driver"
        conditional = bool(task.get("triggerPolicy", {}).get("condition"))
        task_json = compact(task)
        deps = task.get("dependentTasks", [])
        if "dag" in callee:
            driver = {"name": driver_name, "template": "system-dag-driver",
                      "arguments": {"parameters": [_param("component", _wp(f"components-{ref}")),
                                                   _param("parent-dag-id", "{{inputs.parameters.parent-dag-id}}"),
                                                   _param("task", task_json), _param("task-name", task_name)]}}
            body = {"name": task_name, "template": ref, "depends": f"{driver_name}.Succeeded",
                    "arguments": {"parameters": [
                        _param("parent-dag-id", _out(driver_name, "execution-id")),
                        _param("condition", _out(driver_name, "condition"))]}}
        else:
            digest = _container_hash(spec, ref)
            params = [_param("component", _wp(f"components-{digest}")), _param("task", task_json),
                      _param("container", _wp(f"implementations-{digest}")), _param("task-name", task_name),
                      _param("parent-dag-id", "{{inputs.parameters.parent-dag-id}}")]
            if callee["executorLabel"] in platform:
                params.append(_param("kubernetes-config", _wp(f"kubernetes-{ref}")))
            driver = {"name": driver_name, "template": "system-container-driver", "arguments": {"parameters": params}}
            retry = task.get("retryPolicy")
            executor_params = [_param("pod-spec-patch", _out(driver_name, "pod-spec-patch")),
                               _param("cached-decision", _out(driver_name, "cached-decision"),
                                      default="false")]
            if retry:
                executor_params += [_param("retry-max-count", str(retry.get("maxRetryCount", 0))),
                                    _param("retry-backoff-duration", str(retry.get("backoffDuration", "0s")).rstrip("s")),
                                    _param("retry-backoff-factor", str(retry.get("backoffFactor", 0))),
                                    _param("retry-backoff-max-duration",
                                           str(retry.get("backoffMaxDuration", "0s")).rstrip("s"))]
            body = {"name": task_name, "template": ("retry-" if retry else "") + "system-container-executor",
                    "depends": f"{driver_name}.Succeeded", "arguments": {"parameters": executor_params}}
        if deps:
            driver["depends"] = _depends(deps)
        if conditional:
            body["when"] = _out(driver_name, "condition") + " != false"
        tasks += [driver, body]
    return {"name": name, "metadata": {}, "outputs": {}, "inputs": {"parameters": [_param("parent-dag-id")]},
            "dag": {"tasks": tasks}}


def runtime_defaults(spec: dict) -> dict:
    """The pipeline parameters' defaults (what the API server fills into the runtime config)."""
    params = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    return {name: p["defaultValue"] for name, p in params.items() if "defaultValue" in p}


def workflow(spec: dict, platform: dict) -> dict:
    """The Argo Workflow (metadata + spec) KFP's backend would create for this IR."""
    components = spec["components"]
    executors = spec["deploymentSpec"]["executors"]
    arguments: dict[str, str] = {}
    templates: list[dict] = []
    retry = plain = False
    for entry in walk(spec):
        if not entry.dag:
            retry, plain = retry or "retryPolicy" in entry.task, plain or "retryPolicy" not in entry.task
    for name, component in list(components.items()) + [("root", spec["root"])]:
        if "executorLabel" in component:
            digest = _container_hash(spec, name)
            arguments.setdefault(f"components-{digest}", compact(component))
            arguments.setdefault(f"implementations-{digest}", compact(executors[component["executorLabel"]]["container"]))
            if component["executorLabel"] in platform:
                arguments[f"kubernetes-{name}"] = compact(platform[component["executorLabel"]])
        else:
            arguments[f"components-{name}"] = compact(component)
            templates.append(dag_template(spec, platform, name, component))
    runtime = compact({"parameterValues": runtime_defaults(spec), "gcsOutputDirectory": PIPELINE_ROOT})
    entrypoint = {"name": "entrypoint", "metadata": {}, "outputs": {}, "inputs": {}, "dag": {"tasks": [
        {"name": "root-driver", "template": "system-dag-driver",
         "arguments": {"parameters": [_param("component", _wp("components-root")), _param("runtime-config", runtime),
                                      _param("driver-type", "ROOT_DAG")]}},
        {"name": "root", "template": "root", "depends": "root-driver.Succeeded",
         "arguments": {"parameters": [_param("parent-dag-id", "{{tasks.root-driver.outputs.parameters.execution-id}}"),
                                      _param("condition", "")]}}]}}
    spec_part = {
        "arguments": {"parameters": [_param(k, v) for k, v in arguments.items()]},
        "entrypoint": "entrypoint", "serviceAccountName": "rankadaptor-pipeline",
        "podMetadata": {"annotations": {"pipelines.kubeflow.org/v2_component": "true"},
                        "labels": {"pipelines.kubeflow.org/v2_component": "true"}},
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "templates": system_templates(retry, plain) + templates + [entrypoint]}
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"x": "x" * (METADATA_BYTES - 10)},
            "spec": spec_part}


# ---------------------------------------------------------------------------------------------- status


def _node(name: str, kind: str, template: str, inputs: dict | None = None, outputs: dict | None = None,
          pod: bool = False, children: int = 1) -> dict:
    """A representative status.nodes entry (fields of Argo's NodeStatus) with realistic values."""
    node_id = f"{RUN}-{zlib.crc32(name.encode()):010d}"
    node = {"id": node_id, "name": f"{RUN}.{name}", "displayName": name.rsplit(".", 1)[-1], "type": kind,
            "templateName": template, "templateScope": f"local/{RUN}", "phase": "Succeeded",
            "boundaryID": f"{RUN}-{zlib.crc32(name.encode() + b'b'):010d}", "startedAt": "2026-11-30T21:40:12Z",
            "finishedAt": "2026-11-30T22:58:47Z", "progress": "1/1",
            "resourcesDuration": {"cpu": 4711, "memory": 90210} | ({"nvidia.com/gpu": 4690} if pod else {}),
            "children": [f"{RUN}-{i:010d}" for i in range(children)]}
    if pod:
        node |= {"hostNodeName": "gpu-pool-a-7c9f8d6b5-x2kq4", "outputs": {"exitCode": "0"}}
    if inputs:
        node["inputs"] = {"parameters": [{"name": k, "value": v} for k, v in inputs.items()]}
    if outputs:
        node.setdefault("outputs", {})["parameters"] = [{"name": k, "value": v} for k, v in outputs.items()]
    return node


def _executor_input(component: dict, defaults: dict, task_name: str) -> dict:
    """The launcher's executor input: parameter values and artifact URIs of one task (approximation)."""
    inputs, outputs = component.get("inputDefinitions", {}), component.get("outputDefinitions", {})
    uri = f"{PIPELINE_ROOT}/{task_name.rsplit('.', 1)[-1]}/{hashlib.sha256(task_name.encode()).hexdigest()[:32]}"  # unique

    def artifact(key: str, definition: dict) -> dict:
        return {"artifacts": [{"name": key, "type": definition.get("artifactType", {}), "uri": f"{uri}/{key}",
                               "metadata": {"display_name": key}}]}

    job = compact(defaults)
    return {"inputs": {"parameterValues": {k: (job if k == "job" else "1") for k in inputs.get("parameters", {})},
                       "artifacts": {k: artifact(k, d) for k, d in inputs.get("artifacts", {}).items()}},
            "outputs": {"parameters": {k: {"outputFile": f"{LAUNCHER_OUT}/outputs/{k}"} for k in outputs.get("parameters", {})},
                        "artifacts": {k: artifact(k, d) for k, d in outputs.get("artifacts", {}).items()},
                        "outputFile": f"{LAUNCHER_OUT}_outputs/output_metadata.json"}}


def _pod_spec_patch(spec: dict, platform: dict, ref: str, task_name: str, defaults: dict) -> str:
    component = spec["components"][ref]
    container = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
    k8s = platform.get(component["executorLabel"], {})
    launcher = ["/kfp-launcher/launch", "--pipeline_name", "rankadaptor", "--run_id", "2f0c7a8e-3b1d-4c55-9e0a-6f1b2c3d4e5f",
                "--execution_id", str(zlib.crc32(task_name.encode()) % 10**6),
                "--executor_input", compact(_executor_input(component, defaults, task_name)),
                "--component_spec", compact(component), "--pod_name", "$(KFP_POD_NAME)", "--pod_uid", "$(KFP_POD_UID)",
                "--mlmd_server_address", "$(METADATA_GRPC_SERVICE_HOST)", "--mlmd_server_port",
                "$(METADATA_GRPC_SERVICE_PORT)", "--"]
    env = [{"name": e["envVar"], "valueFrom": {"secretKeyRef": {"key": e["secretKey"], "name": "rankadaptor-s3",
                                                                "optional": s.get("optional", False)}}}
           for s in k8s.get("secretAsEnv", []) for e in s.get("keyToEnv", [])]
    patch = {"containers": [{"name": "main", "image": container.get("image", ""),
                             "command": launcher + container.get("command", []), "args": container.get("args", []),
                             "env": env, "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}},
                             "volumeMounts": [{"name": m.get("volumeName", "v"), "mountPath": m.get("mountPath", "/")}
                                              for m in k8s.get("emptyDirMounts", [])]}]}
    if "nodeSelector" in k8s:
        patch["nodeSelector"] = defaults.get("node_selector", {})
    if "tolerations" in k8s:
        patch["tolerations"] = defaults.get("tolerations", [])
    if k8s.get("emptyDirMounts"):
        patch["volumes"] = [{"name": m.get("volumeName", "v"), "emptyDir": {"medium": m.get("medium", "")}}
                            for m in k8s["emptyDirMounts"]]
    if "activeDeadlineSeconds" in k8s:
        patch["activeDeadlineSeconds"] = int(k8s["activeDeadlineSeconds"])
    return compact(patch)


def status_nodes(spec: dict, platform: dict, max_iterations: int | None = None, retries: bool = False,
                 loop_items: int = 16) -> list[dict]:
    """The status.nodes entries of one run (see the module docstring); `retries`: every retry used."""
    components = spec["components"]
    defaults = runtime_defaults(spec)
    nodes = [_node("", "DAG", "entrypoint", children=2),
             _node("root-driver", "Pod", "system-dag-driver", pod=True,
                   inputs={"component": compact(spec["root"]), "driver-type": "ROOT_DAG",
                           "runtime-config": compact({"parameterValues": defaults})},
                   outputs={"execution-id": "4711", "iteration-count": "0", "condition": "true"}),
             _node("root", "DAG", "root", inputs={"parent-dag-id": "4711", "condition": ""}, children=9)]
    for entry in walk(spec, max_iterations, loop_items):
        name = ".".join(("root",) + entry.path)
        callee = components[entry.component]
        task_json = compact(entry.task)
        if entry.dag:
            driver = _node(f"{name}-driver", "Pod", "system-dag-driver", pod=True,
                           inputs={"component": compact(callee), "task": task_json, "task-name": entry.path[-1],
                                   "parent-dag-id": "4711", "iteration-index": "-1"},
                           outputs={"execution-id": "4712", "iteration-count": "0",
                                    "condition": "true" if entry.times else "false"})
            if entry.times:
                body = _node(name, "DAG", entry.component, inputs={"parent-dag-id": "4712", "condition": "true"},
                             children=len(callee["dag"]["tasks"]))
                nodes += [driver] * max(1, entry.times) + [body] * entry.times
            else:
                nodes += [driver, {"id": f"{RUN}-0000000000", "name": f"{RUN}.{name}", "displayName": entry.path[-1],
                                   "type": "Skipped", "phase": "Skipped", "message": "when 'false != false' evaluated false",
                                   "templateName": entry.component, "templateScope": f"local/{RUN}",
                                   "boundaryID": f"{RUN}-0000000001", "startedAt": "2026-11-30T21:40:12Z",
                                   "finishedAt": "2026-11-30T21:40:12Z"}]
            continue
        if not entry.times:
            continue
        label = callee["executorLabel"]
        patch = _pod_spec_patch(spec, platform, entry.component, name, defaults)
        retry = entry.task.get("retryPolicy")
        retry_inputs = {"retry-max-count": str(retry.get("maxRetryCount", 0)), "retry-backoff-duration": "60",
                        "retry-backoff-factor": "2", "retry-backoff-max-duration": "3600"} if retry else {}
        driver_inputs = {"component": compact(callee), "task": task_json,
                         "container": compact(spec["deploymentSpec"]["executors"][label]["container"]),
                         "task-name": entry.path[-1], "parent-dag-id": "4712", "iteration-index": "-1"}
        if label in platform:
            driver_inputs["kubernetes-config"] = compact(platform[label])
        task_nodes = [
            _node(f"{name}-driver", "Pod", "system-container-driver", pod=True, inputs=driver_inputs,
                  outputs={"pod-spec-patch": patch, "cached-decision": "false", "condition": ""}),
            _node(name, "DAG", ("retry-" if retry else "") + "system-container-executor",
                  inputs={"pod-spec-patch": patch, "cached-decision": "false", **retry_inputs})]
        attempts = 1 + (int(retry.get("maxRetryCount", 0)) if retry and retries else 0)
        impl = _node(f"{name}.executor", "Pod", ("retry-" if retry else "") + "system-container-impl", pod=True,
                     inputs={"pod-spec-patch": patch, **retry_inputs})
        if retry:
            task_nodes.append(_node(f"{name}.executor", "Retry", "retry-system-container-impl",
                                    inputs={"pod-spec-patch": patch, **retry_inputs}, children=attempts))
        task_nodes += [impl] * attempts
        nodes += task_nodes * entry.times
    return nodes


def measure(path: Path, max_iterations: int | None = None, retries: bool = False, loop_items: int = 16) -> dict:
    """Sizes in bytes of the Workflow KFP would create for one compiled IR file, and of a run's status."""
    spec, platform = load(path)
    created = len(compact(workflow(spec, platform)).encode())
    nodes = status_nodes(spec, platform, max_iterations, retries, loop_items)
    as_map = compact({f"{n['id']}-{i}": n for i, n in enumerate(nodes)}).encode()  # status.nodes: id -> node
    raw = len(as_map)
    zipped = len(base64.b64encode(gzip.compress(as_map)))  # Argo: gzip + base64 into status.compressedNodes
    overhead = 2048 + 60 * sum(1 for n in nodes if n["type"] == "Pod")  # phase, conditions, taskResultsCompletionStatus
    stored = created + overhead + (raw if created + overhead + raw <= ARGO_LIMIT else zipped)
    packed = created + overhead + zipped  # the smallest form Argo can reach; over ARGO_LIMIT the run fails
    return {"file": Path(path).name, "cap": unroll_cap(spec), "nodes": len(nodes), "spec_bytes": created,
            "status_raw_bytes": raw + overhead, "status_compressed_bytes": zipped + overhead,
            "stored_bytes": stored, "packed_bytes": packed, "argo_fraction": packed / ARGO_LIMIT,
            "fits": created <= ETCD_LIMIT and packed <= ARGO_LIMIT * (1 - MARGIN)}


def choose_cap(rows: list[dict]) -> int | None:
    """The largest cap whose worst-case run (all iterations, every retry) stays under the limit with MARGIN."""
    ok = [r["cap"] for r in rows if r["fits"] and r.get("main")]
    return max(ok) if ok else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", nargs="*", type=Path, default=sorted(COMPILED.glob("*.yaml")),
                        help="compiled IR files (default: the committed ones)")
    parser.add_argument("--caps", nargs="*", type=int, default=list(DEFAULT_CAPS),
                        help="also compile the main pipeline with these unroll caps (none: skip)")
    parser.add_argument("--loop-items", type=int, default=16,
                        help="items of a ParallelFor (bootstrap trials; tasks searching in a catalog run)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    rows = [measure(f, retries=True, loop_items=args.loop_items) | {"main": False, "source": "committed"}
            for f in args.files]
    if args.caps:
        directory = temp_dir()
        for cap in args.caps:
            rows.append(measure(compile_main(cap, directory), retries=True) | {"main": True, "source": f"cap {cap}"})
    chosen = choose_cap(rows)
    if args.json:
        print(json.dumps({"etcd_limit": ETCD_LIMIT, "argo_limit": ARGO_LIMIT, "margin": MARGIN, "chosen_cap": chosen,
                          "rows": rows}, indent=1))
        return
    print(f"Workflow object size estimate (worst-case run: every unrolled iteration, every retry). Limits: etcd "
          f"{ETCD_LIMIT:,} B at creation; Argo {ARGO_LIMIT:,} B for spec + status (nodes gzipped above it); "
          f"kept margin {MARGIN:.0%}.\n")
    print("| IR | loop cap | nodes | spec (created) B | status raw B | status gzip B | stored B | spec + gzip status B "
          "| % of Argo limit | fits |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['file'] if r['source'] == 'committed' else 'main, ' + r['source']} | {r['cap']} | {r['nodes']} | "
              f"{r['spec_bytes']:,} | {r['status_raw_bytes']:,} | {r['status_compressed_bytes']:,} | "
              f"{r['stored_bytes']:,} | {r['packed_bytes']:,} | {r['argo_fraction']:.0%} | {'yes' if r['fits'] else 'NO'} |")
    print(f"\nLargest cap that fits with the margin: {chosen}")


if __name__ == "__main__":
    main()
