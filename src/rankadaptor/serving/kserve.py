"""An offline check of a KServe InferenceService against the fields KServe accepts, and the predictor as
the Pod it becomes (`python -m rankadaptor.serving.kserve --check FILE`, run by k8s/validate.sh).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from rankadaptor.serving.manifest import CONTAINER, PORT


def problems(isvc: Any) -> list[str]:
    """What KServe requires of an InferenceService with a custom predictor, and what serving relies on."""
    if not isinstance(isvc, dict):
        return ["not a YAML mapping"]
    found = []
    if isvc.get("apiVersion") != "serving.kserve.io/v1beta1" or isvc.get("kind") != "InferenceService":
        found.append(f"apiVersion/kind {isvc.get('apiVersion')}/{isvc.get('kind')}: expected "
                     "serving.kserve.io/v1beta1 InferenceService")
    name = (isvc.get("metadata") or {}).get("name", "")
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", str(name)):
        found.append(f"metadata.name {name!r} is not a DNS-1035 label")
    spec = isvc.get("spec") or {}
    unknown = sorted(set(spec) - INFERENCE_SERVICE_SPEC)
    if unknown:
        found.append(f"spec has unknown fields {unknown}; KServe's: {sorted(INFERENCE_SERVICE_SPEC)}")
    predictor = spec.get("predictor")
    if not isinstance(predictor, dict):
        return found + ["spec.predictor is missing"]
    frameworks = sorted(set(predictor) & PREDICTOR_FRAMEWORKS)
    containers = predictor.get("containers") or []
    if frameworks or len(containers) != 1:
        found.append(f"predictor: expected exactly one custom container and no model format, got "
                     f"{len(containers)} container(s) and {frameworks}")
    for c in containers[:1]:
        if c.get("name") != CONTAINER:
            found.append(f"predictor container is named {c.get('name')!r}: KServe expects {CONTAINER!r}")
        if [p.get("containerPort") for p in c.get("ports", [])] != [PORT]:
            found.append(f"predictor container ports {c.get('ports')}: expected one, {PORT}")
        env = {e.get("name"): e for e in c.get("env", [])}
        if not str(env.get("MODEL_URI", {}).get("value", "")).startswith("models:/"):
            found.append("predictor container: env MODEL_URI must be a models:/ URI")
        if "$(MODEL_URI)" not in c.get("args", []):
            found.append("predictor container: args do not serve $(MODEL_URI)")
    for key in ("minReplicas", "maxReplicas"):
        if not isinstance(predictor.get(key, 1), int) or predictor.get(key, 1) < 0:
            found.append(f"predictor.{key} must be an integer >= 0")
    return found


def predictor_pod(isvc: dict) -> dict:
    """The predictor's PodSpec fields as a Pod, for Kubernetes schema validation and lint.

    A KServe predictor is KServe's own fields inline with a PodSpec: what is left after removing KServe's
    fields must be a valid PodSpec, so a strict Pod schema check catches a misspelt predictor field too."""
    predictor = isvc["spec"]["predictor"]
    spec = {k: v for k, v in predictor.items() if k not in PREDICTOR_OWN_FIELDS}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{isvc['metadata']['name']}-predictor",
                         "namespace": isvc["metadata"].get("namespace", "default"),
                         "labels": predictor.get("labels", {})},
            "spec": spec}


# Field names of KServe's v1beta1 InferenceServiceSpec and PredictorSpec (kserve SDK 0.21.0, whose
# PredictorSpec is these fields plus the PodSpec's).
INFERENCE_SERVICE_SPEC = {"predictor", "transformer", "explainer", "canary", "tracing"}


PREDICTOR_FRAMEWORKS = {"sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "huggingface", "pmml",
                        "lightgbm", "paddle", "model"}


PREDICTOR_OWN_FIELDS = PREDICTOR_FRAMEWORKS | {
    "annotations", "autoScaling", "batcher", "canaryTrafficPercent", "containerConcurrency", "deploymentStrategy",
    "labels", "logger", "maxReplicas", "minReplicas", "scaleMetric", "scaleMetricType", "scaleTarget", "timeout",
    "workerSpec", "storageUris", "storageContainerName", "name"}


def main(argv: list[str] | None = None) -> int:
    """`python -m rankadaptor.serving.kserve --check FILE [--pod-out FILE]`: the offline check k8s/validate.sh runs."""
    import argparse

    import yaml

    parser = argparse.ArgumentParser(prog="python -m rankadaptor.serving.kserve", description=main.__doc__)
    parser.add_argument("--check", required=True, help="rendered manifests (kubectl kustomize output)")
    parser.add_argument("--pod-out", default=None, help="write the manifests here with each InferenceService "
                                                          "replaced by its predictor's Pod, for kubernetes-validate")
    args = parser.parse_args(argv)
    docs = [d for d in yaml.safe_load_all(Path(args.check).read_text()) if d]
    services = [d for d in docs if d.get("kind") == "InferenceService"]
    found = [] if services else ["no InferenceService"]
    found += [f"InferenceService/{(d.get('metadata') or {}).get('name')}: {line}" for d in services for line in problems(d)]
    if args.pod_out and not found:
        pods = [predictor_pod(d) if d.get("kind") == "InferenceService" else d for d in docs]
        Path(args.pod_out).write_text(yaml.safe_dump_all(pods, sort_keys=False))
    for line in found:
        print(f"kserve check: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
