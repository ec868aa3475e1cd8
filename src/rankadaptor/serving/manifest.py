"""`rankadaptor deploy`: the KServe InferenceService that serves one registered model version.

The predictor is a custom container on the project's image running MLflow's scoring server
(`mlflow models serve --env-manager local`) on port 8080: the registered pyfunc needs the `rankadaptor`
package, torch, transformers and peft, which the project image has and KServe's MLServer image has not
(docs/operations.md, "Serving"). The container fetches the version from the MLflow registry itself (KServe's
storage initializer knows no `models:/` URIs, and only the MLflow server holds the artifact store's keys).

`inference_service` is the one source of the manifest: k8s/serving/inferenceservice.yaml is its output
for the alias URI `models:/rankadaptor@champion`, and `rankadaptor deploy` renders it for the alias's
current version, pinned (`models:/NAME/VERSION`), so applying it rolls the new champion out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import sys
from pathlib import Path

from rankadaptor.errors import UserError, check
from rankadaptor.infra import images

PORT = 8080
CONTAINER = "kserve-container"  # the name KServe gives (and expects of) the predictor's main container
LABEL = "rankadaptor-serving"  # pod label: the MLflow NetworkPolicy lets these pods in
# Read-only root: the model's download and the s3 cache live in the pod's own emptyDir mounted here.
MODEL_DIR = "/tmp"  # noqa: S108  (a path inside the container, not on this machine)
HELP = "render the KServe InferenceService serving a registered model's alias (its current version, pinned)"
GI = 2 ** 30
UNIT = {"": 1, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": GI, "Ti": 2 ** 40, "k": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12}
HEADROOM = 1.25  # the download's temporary files and caches beside the model itself
WRITABLE = 2 * GI  # the container's logs and writable layer, beside the emptyDir (both count as ephemeral storage)
UNKNOWN_SIZE_TMP = "64Gi"  # a version registered without its size: room for a self-contained 7B (~14 GB bf16)


def quantity_bytes(value: str, name: str = "tmp_size") -> int:
    """Bytes of a Kubernetes quantity like 64Gi or 500M (name: the option it came from, for the error)."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", value)
    check(match is not None, f"{name}={value!r} is not accepted: give a Kubernetes quantity such as 32Gi or 500Mi")
    return int(float(match.group(1)) * UNIT[match.group(2) or ""])


def gibibytes(n: int) -> str:
    return f"{math.ceil(n / GI)}Gi"


def serving_name(model: str) -> str:
    """A DNS-1035 InferenceService name for a registered model (two models never share one: a name that had
    to change or be cut keeps a short hash of the model's own name)."""
    name = re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")
    name = name if name[:1].isalpha() else f"m-{name}".rstrip("-")
    if name != model or len(name) > 63:
        digest = hashlib.sha256(model.encode()).hexdigest()[:8]
        name = f"{name[:54].rstrip('-')}-{digest}"
    return name


def storage_size(serving_tmp: str, model_bytes: int | None) -> str:
    """The emptyDir the model downloads into: tmp_size when given (refused when the model cannot fit), else the
    model's registered size plus headroom."""
    needed = math.ceil(model_bytes * HEADROOM) if model_bytes else None
    if not serving_tmp:
        return gibibytes(needed) if needed else UNKNOWN_SIZE_TMP
    if needed:
        check(quantity_bytes(serving_tmp) >= needed,
              f"tmp_size={serving_tmp} cannot hold this version: its model is {model_bytes / GI:.1f} GiB, which "
              f"needs at least {gibibytes(needed)} with headroom; raise --tmp-size or leave it out")
    return serving_tmp


@dataclasses.dataclass
class Serving:
    """What the InferenceService runs and where; the defaults are the committed k8s/serving/ manifest."""
    name: str = ""  # default: serving_name(the registered model)
    namespace: str = "kubeflow-user-example-com"
    image: str = dataclasses.field(default_factory=lambda: images.image("gpu"))  # the pipeline's own image
    gpus: int = 1
    cpu: str = "4"
    memory: str = "32Gi"
    tmp_size: str = ""  # the model's download; default: the version's registered size plus headroom
    mlflow_secret: str = "rankadaptor-mlflow"  # noqa: S105  (names of Secrets, not their values)
    s3_secret: str = "rankadaptor-s3"  # noqa: S105

    def validate(self) -> None:
        check(not self.name or re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", self.name) is not None,
              f"name={self.name!r} is not accepted: an InferenceService name is a DNS-1035 label "
              "(lowercase letters, digits, '-', starting with a letter, at most 63 characters)")
        check(re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", self.namespace) is not None,
              f"namespace={self.namespace!r} is not accepted: give a Kubernetes namespace name")
        check(bool(self.image) and not any(c.isspace() for c in self.image),
              f"image={self.image!r} is not accepted: give an image reference, e.g. registry/rankadaptor-gpu:TAG")
        check(isinstance(self.gpus, int) and self.gpus >= 0, f"gpus={self.gpus!r} is not accepted: give an integer >= 0")
        if self.tmp_size:
            quantity_bytes(self.tmp_size)


def inference_service(model_uri: str, serving: Serving, annotations: dict[str, str] | None = None,
                      model_bytes: int | None = None) -> dict:
    """The InferenceService (as a dict) serving model_uri (`models:/NAME/VERSION` or `models:/NAME@ALIAS`);
    model_bytes: the version's registered size, which sizes the download's storage."""
    serving.validate()
    model = re.split(r"[/@]", model_uri.removeprefix("models:/"))[0]
    tmp = storage_size(serving.tmp_size, model_bytes)
    ephemeral = {"requests": gibibytes(quantity_bytes(tmp)), "limits": gibibytes(quantity_bytes(tmp) + WRITABLE)}
    limits = {"cpu": serving.cpu, "memory": serving.memory}
    if serving.gpus:
        limits["nvidia.com/gpu"] = str(serving.gpus)
    secret_env = [_secret_env(name, serving.mlflow_secret, optional=False)
                  for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")]
    # Only a version that references its pruned base on s3:// (not self-contained) needs these.
    secret_env += [_secret_env(name, serving.s3_secret, optional=True)
                   for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")]
    probe = {"httpGet": {"path": "/ping", "port": PORT}, "periodSeconds": 10, "timeoutSeconds": 5}
    container = {
        "name": CONTAINER,
        "image": serving.image,
        "imagePullPolicy": "Always",  # the pinned tag the pipeline ran, re-checked on every start
        "command": ["mlflow", "models", "serve"],
        "args": ["--model-uri", "$(MODEL_URI)", "--env-manager", "local",
                 "--host", "0.0.0.0",  # noqa: S104  (every interface of the pod: KServe's Service routes to it)
                 "--port", str(PORT), "--workers", "1", "--timeout", "300"],
        "env": [{"name": "MODEL_URI", "value": model_uri},
                *secret_env,
                {"name": "HF_HOME", "value": f"{MODEL_DIR}/huggingface"},
                {"name": "RANKADAPTOR_CACHE", "value": f"{MODEL_DIR}/rankadaptor"},
                {"name": "TMPDIR", "value": MODEL_DIR}],
        "ports": [{"containerPort": PORT, "name": "http1", "protocol": "TCP"}],
        # Startup: downloading and loading a 7B model takes minutes; then /ping answers once loaded.
        "startupProbe": {**probe, "failureThreshold": 90},
        "readinessProbe": {**probe, "failureThreshold": 3},
        "livenessProbe": {**probe, "failureThreshold": 6},
        # The emptyDir counts against ephemeral storage: request what the download needs, limit it plus logs.
        "resources": {"requests": {"cpu": serving.cpu, "memory": serving.memory,
                                   "ephemeral-storage": ephemeral["requests"]},
                      "limits": {**limits, "ephemeral-storage": ephemeral["limits"]}},
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": MODEL_DIR}],
    }
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": serving.name or serving_name(model),
            "namespace": serving.namespace,
            "labels": {"app.kubernetes.io/name": LABEL, "app.kubernetes.io/part-of": "rankadaptor"},
            # A plain Deployment + Service: a 7B model loads for minutes, so no scale to zero (Knative).
            "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment", **(annotations or {})},
        },
        "spec": {"predictor": {
            "minReplicas": 1,
            "maxReplicas": 1,
            "labels": {"app.kubernetes.io/name": LABEL},
            "serviceAccountName": LABEL,
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": tmp}}],
        }},
    }


def _secret_env(name: str, secret: str, optional: bool) -> dict:
    ref = {"name": secret, "key": name, **({"optional": True} if optional else {})}
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


@dataclasses.dataclass
class Resolved:
    model: str
    alias: str
    version: int
    source: str  # the version's own artifact location, as the registry records it
    run_id: str | None
    base_included: bool
    model_bytes: int | None = None  # what the predictor downloads (the version's MODEL_BYTES_TAG)

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model}/{self.version}"


def resolve(model: str, alias: str = "champion", tracking_uri: str | None = None) -> Resolved:
    """The version the alias points at now, read from the MLflow registry."""
    from rankadaptor.infra.tracking import configure, tracking_errors
    from rankadaptor.serving.registry import MODEL_BYTES_TAG, registered_model

    uri = configure(tracking_uri)
    with tracking_errors(uri):
        from mlflow import MlflowClient

        client = MlflowClient()
        if (registered := registered_model(client, model)) is None:
            names = sorted(m.name for m in client.search_registered_models(max_results=100))
            raise UserError(f"registered model {model!r} does not exist in {uri}; registered models: {names}")
        if alias not in registered.aliases:
            raise UserError(f"registered model {model!r} has no alias {alias!r}; its aliases: "
                            f"{dict(sorted(registered.aliases.items()))}")
        version = client.get_model_version(model, str(registered.aliases[alias]))
    size = version.tags.get(MODEL_BYTES_TAG)
    return Resolved(model, alias, int(version.version), version.source, version.run_id,
                    version.tags.get("self_contained") == "true", int(size) if size and size.isdigit() else None)


def service_account(serving: Serving) -> dict:
    """The predictor's ServiceAccount (no token, no permissions: the pod reads only the MLflow server)."""
    return {"apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": False,
            "metadata": {"name": LABEL, "namespace": serving.namespace,
                         "labels": {"app.kubernetes.io/name": LABEL, "app.kubernetes.io/part-of": "rankadaptor"}}}


def render(resolved: Resolved, serving: Serving) -> str:
    """The InferenceService YAML for a resolved version, with where it came from as annotations, after the
    ServiceAccount it runs as; the header says which Secrets must exist and how to create them."""
    import yaml

    annotations = {"rankadaptor.io/registered-model": resolved.model, "rankadaptor.io/alias": resolved.alias,
                   "rankadaptor.io/version": str(resolved.version), "rankadaptor.io/source": resolved.source,
                   "rankadaptor.io/base-included": str(resolved.base_included).lower()}
    isvc = inference_service(resolved.model_uri, serving, annotations, resolved.model_bytes)
    ns = serving.namespace
    header = (f"# rankadaptor deploy: {resolved.model}@{resolved.alias} = version {resolved.version}\n"
              "# kubectl apply -f this file; rerun deploy after the alias moves (docs/deploy.md, Serving).\n"
              f"# Needs Secret {serving.mlflow_secret} in {ns} (kubectl -n {ns} create secret generic "
              f"{serving.mlflow_secret} --from-literal=MLFLOW_TRACKING_URI=... [--from-literal="
              "MLFLOW_TRACKING_USERNAME=... --from-literal=MLFLOW_TRACKING_PASSWORD=...])"
              + ("" if resolved.base_included else
                 f" and Secret {serving.s3_secret} (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL)")
              + ".\n")
    return header + yaml.safe_dump_all([service_account(serving), isvc], sort_keys=False)


def add_arguments(p) -> None:
    defaults = Serving()
    p.add_argument("--model", required=True, help="registered model name in the MLflow registry")
    p.add_argument("--alias", default="champion", help="alias whose current version is served (default: champion)")
    p.add_argument("--output", required=True, help="YAML file to write, or - for stdout")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI; default: MLFLOW_TRACKING_URI, "
                                                        "else the embedded store under ./mlflow")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    for field in dataclasses.fields(Serving):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        shown = {"name": "derived from the registered model", "tmp_size": "the version's size plus headroom",
                 "image": f"the pipeline's image, {default}"}.get(field.name, default)
        p.add_argument(flag, type=type(default), default=default, help=f"default: {shown}")


def run(args) -> None:
    serving = Serving(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Serving)})
    serving.validate()
    out = None if args.output == "-" else Path(args.output)
    if out is not None:
        check(args.overwrite or not out.exists(), f"output {args.output!r} already exists: choose another or pass --overwrite")
        check(out.parent.is_dir(), f"output {args.output!r}: no directory {str(out.parent)!r}")
    resolved = resolve(args.model, args.alias, args.tracking_uri)
    text = render(resolved, serving)
    if out is None:
        sys.stdout.write(text)
    else:
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, out)
    if not resolved.base_included:
        print(f"note: version {resolved.version} references its pruned base model (not self-contained): the "
              f"predictor reads it from its URI with Secret {serving.s3_secret!r}", file=sys.stderr)
    print(f"{resolved.model}@{resolved.alias} -> version {resolved.version}: InferenceService "
          f"{serving.namespace}/{serving.name or serving_name(resolved.model)} written to {args.output}",
          file=sys.stderr)

