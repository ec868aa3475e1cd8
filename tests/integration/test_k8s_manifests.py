"""The Kubernetes manifests under k8s/: every overlay renders, passes strict schema validation and
the checkov security lint (k8s/validate.sh), and the rendered objects keep the properties the
deployment relies on (probes, limits, non-root, no secret values, network isolation).

The validation tools install into their own venv on first use (a few minutes, see
k8s/validate.sh); later runs reuse it.
"""

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
VALIDATE = K8S / "validate.sh"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
PIPELINE_NAMESPACE = "kubeflow-user-example-com"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", re.IGNORECASE)
URI_WITH_PASSWORD = re.compile(r"://[^/@:\s]+:[^/@\s]+@")


def run_validate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(VALIDATE), *args], capture_output=True, text=True, timeout=1200)


def pod_spec(obj: dict) -> dict | None:
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def workload_problems(docs: list[dict]) -> list[str]:
    """Everything a rendered overlay must satisfy, as a list of human-readable violations."""
    problems = []
    for obj in docs:
        spec = pod_spec(obj)
        if spec is None:
            continue
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        pod_sc = spec.get("securityContext", {})
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: automountServiceAccountToken is not false")
        if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: pod seccompProfile is not RuntimeDefault")
        for c in spec["containers"]:
            where = f"{name}/{c['name']}"
            sc = c.get("securityContext", {})
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in c:
                    problems.append(f"{where}: no {probe}")
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in c.get("resources", {}).get(kind, {}):
                        problems.append(f"{where}: no {kind}.{resource}")
            # The container's setting, when present, overrides the pod's.
            if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
                problems.append(f"{where}: runAsNonRoot is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: capabilities do not drop ALL")
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
            if "/tmp" not in {m["mountPath"] for m in c.get("volumeMounts", [])}:
                problems.append(f"{where}: no writable /tmp mount")
            for env in c.get("env", []):
                # *_FILE variables name a mounted file, not the secret itself.
                if SECRET_NAME.search(env["name"]) and not env["name"].endswith("_FILE") and "value" in env:
                    problems.append(f"{where}: literal value for secret env {env['name']}")
    for obj in docs:
        if obj["kind"] == "Secret":
            problems.append(f"Secret/{obj['metadata']['name']} is rendered: secrets are created by hand")
        if obj["kind"] == "ConfigMap":
            for key, value in obj.get("data", {}).items():
                if URI_WITH_PASSWORD.search(value) or SECRET_NAME.search(key):
                    problems.append(f"ConfigMap/{obj['metadata']['name']}: secret material in {key}")
    return problems


def by_kind_name(docs: list[dict], kind: str, name: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    """Runs the full offline validation once and returns the rendered objects per overlay."""
    out = tmp_path_factory.mktemp("rendered")
    result = run_validate("--out", str(out))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return {
        name: [d for d in yaml.safe_load_all((out / f"{name}.yaml").read_text()) if d]
        for name in OVERLAYS
    }


@pytest.mark.slow
def test_every_overlay_passes_structural_checks(rendered):
    assert set(rendered) == {"dev", "prod"}
    for name, docs in rendered.items():
        assert workload_problems(docs) == [], name


@pytest.mark.slow
def test_mlflow_server_configuration(rendered):
    for docs in rendered.values():
        deploy = by_kind_name(docs, "Deployment", "mlflow")
        container = deploy["spec"]["template"]["spec"]["containers"][0]
        args = container["args"]
        assert "--app-name=basic-auth" in args
        assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in args
        assert "--artifacts-destination=$(MLFLOW_ARTIFACTS_DESTINATION)" in args
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["path"] == "/health"
        env_from_secret = {e["name"] for e in container["env"] if "valueFrom" in e}
        assert {"MLFLOW_FLASK_SERVER_SECRET_KEY", "PGPASSWORD", "AWS_SECRET_ACCESS_KEY"} <= env_from_secret
        config_name = container["envFrom"][0]["configMapRef"]["name"]
        config = by_kind_name(docs, "ConfigMap", config_name)["data"]
        assert config["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
        assert config["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
        assert config["MLFLOW_S3_ENDPOINT_URL"] == "http://seaweedfs.kubeflow:9000"
        assert by_kind_name(docs, "Service", "mlflow")["spec"]["ports"][0]["port"] == 5000


@pytest.mark.slow
def test_network_isolation_and_least_privilege(rendered):
    for docs in rendered.values():
        deny = by_kind_name(docs, "NetworkPolicy", "default-deny-all")["spec"]
        assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
        policy = by_kind_name(docs, "NetworkPolicy", "mlflow-server")["spec"]
        peers = [peer for rule in policy["ingress"] for peer in rule["from"]]
        namespaces = {p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in peers}
        assert PIPELINE_NAMESPACE in namespaces
        assert all("podSelector" in p for p in peers), "a whole namespace may reach MLflow"
        egress_ports = {port["port"] for rule in policy["egress"] for port in rule["ports"]}
        assert egress_ports == {53, 5432, 8333, 9000}
        role = by_kind_name(docs, "Role", "rankadaptor-pipeline")
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"]
            assert set(rule["verbs"]) <= {"get", "create", "patch"}
            if "secrets" in rule["resources"]:
                assert rule["resourceNames"], "secret access must name the secrets"
        for sa in ("mlflow", "postgres"):
            assert by_kind_name(docs, "ServiceAccount", sa)["automountServiceAccountToken"] is False



@pytest.mark.slow  # renders every overlay with kustomize (~40 s)
def test_pipeline_pods_get_ephemeral_storage_requests_and_limits(rendered):
    """KFP's IR cannot request ephemeral storage per step: the namespace's LimitRange gives every container
    a request (admitted under a ResourceQuota) and a limit above the prune step's two model copies."""
    for docs in rendered.values():
        limit = by_kind_name(docs, "LimitRange", "rankadaptor-ephemeral-storage")
        assert limit["metadata"]["namespace"] == PIPELINE_NAMESPACE
        (container,) = [item for item in limit["spec"]["limits"] if item["type"] == "Container"]
        assert container["defaultRequest"]["ephemeral-storage"] == "2Gi"
        assert int(container["default"]["ephemeral-storage"].removesuffix("Gi")) >= 2 * 25

@pytest.mark.slow
def test_structural_checks_catch_a_regression(rendered):
    docs = copy.deepcopy(rendered["dev"])
    container = by_kind_name(docs, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    del container["livenessProbe"]
    del container["resources"]["limits"]
    container["securityContext"]["runAsNonRoot"] = False
    container["env"].append({"name": "PGPASSWORD", "value": "hunter2"})
    docs.append({"kind": "Secret", "metadata": {"name": "leak"}, "stringData": {"k": "v"}})
    problems = "\n".join(workload_problems(docs))
    for expected in ("no livenessProbe", "no limits.cpu", "no limits.memory", "runAsNonRoot is not true",
                     "literal value for secret env", "Secret/leak is rendered"):
        assert expected in problems


@pytest.mark.slow
def test_validation_rejects_a_broken_manifest(tmp_path):
    """A schema error and a security regression, each caught by its own tool."""
    broken = tmp_path / "k8s"
    shutil.copytree(K8S, broken)
    shutil.rmtree(broken / "overlays" / "prod")  # one overlay is enough, and halves the time
    deployment = broken / "base" / "mlflow" / "deployment.yaml"
    text = deployment.read_text()
    text = text.replace("  revisionHistoryLimit: 3\n", "  revisionHistoryLimit: 3\n  replica: 2\n")
    text = text.replace("allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true")
    deployment.write_text(text)
    result = run_validate(str(broken))
    assert result.returncode == 1
    assert "'replica' was unexpected" in result.stdout + result.stderr
    assert "FAILED dev: kubernetes-validate --strict" in result.stderr
    assert "FAILED dev: checkov" in result.stderr


def test_secret_templates_hold_placeholders_only():
    templates = sorted((K8S / "secrets").glob("*.yaml"))
    assert len(templates) == 5
    for path in templates:
        secret = yaml.safe_load(path.read_text())
        assert secret["kind"] == "Secret" and "data" not in secret
        for key, value in secret["stringData"].items():
            assert value.startswith("<REPLACE"), f"{path.name}: {key} holds a value"


def test_no_secret_objects_in_kustomizations():
    for path in K8S.glob("**/*.yaml"):
        if path.parent.name == "secrets":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert not (doc and doc.get("kind") == "Secret"), f"{path.relative_to(ROOT)} defines a Secret"
