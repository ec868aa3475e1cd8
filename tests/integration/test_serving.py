"""Serving a registered champion: `rankadaptor deploy` renders the KServe InferenceService of the alias's
current version, k8s/serving/ is that same object, the offline check catches what KServe would refuse,
and the predictor's own command (taken from the rendered manifest) serves the champion on 127.0.0.1."""

import copy
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from servers import VENV_BIN, copy_store, empty_mlflow_db, free_port, process, wait_http, write_adapter, write_pruned_model

from rankadaptor import cli
from rankadaptor.recover.adapters import load_adapted
from rankadaptor.serving import kserve, manifest, registry
from rankadaptor.serving.pyfunc_model import generate

ROOT = Path(__file__).resolve().parents[2]
MODEL = "tiny-llama-boolq"
PROMPT = "Once upon a time"


def report(mean: float) -> dict:
    return {"tasks": {"boolq": {"metric": "acc", "value": mean, "stderr": 0.01, "n": 200}},
            "mean": mean, "split": "report", "seconds": 1.0}


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model_dir):
    """A registry whose champion (version 1) is a self-contained version on the fixture model."""
    root = tmp_path_factory.mktemp("serving")
    base = write_pruned_model(str(root / "pruned"), tiny_model_dir)
    adapter = write_adapter(str(root / "adapter"), base, [8, 2, 4, 8], seed=0)
    tracking = copy_store(empty_mlflow_db(tmp_path_factory.mktemp("template")), root / "store")
    config = registry.RegistryConfig(model_name=MODEL, tracking_uri=tracking, self_contained=True)
    assert registry.register(adapter, base, report(0.5), config)["version"] == 1
    return {"root": root, "base": base, "adapter": adapter, "tracking": tracking, "config": config}


def isvc_of(path) -> dict:
    """The InferenceService of a rendered file (it also holds the predictor's ServiceAccount)."""
    return next(d for d in yaml.safe_load_all(path.read_text()) if d["kind"] == "InferenceService")


def run_deploy(*args: str) -> tuple[int, str]:
    """`rankadaptor deploy ...` in-process; returns (exit status, stderr)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = cli.main(["deploy", *args])
    return status, err.getvalue()


def container_of(isvc: dict) -> dict:
    return isvc["spec"]["predictor"]["containers"][0]


def env_of(isvc: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container_of(isvc)["env"] if "value" in e}


def test_deploy_pins_the_alias_current_version_and_follows_a_new_champion(store, tmp_path):
    out = tmp_path / "isvc.yaml"
    status, err = run_deploy("--model", MODEL, "--tracking-uri", store["tracking"], "--output", str(out),
                             "--namespace", "team-a", "--name", "boolq", "--image", "registry.example.com/rankadaptor-cpu:1.2",
                             "--gpus", "0")
    assert status == 0, err
    isvc = isvc_of(out)
    assert kserve.problems(isvc) == []
    assert env_of(isvc)["MODEL_URI"] == f"models:/{MODEL}/1"
    assert isvc["metadata"]["name"] == "boolq" and isvc["metadata"]["namespace"] == "team-a"
    notes = isvc["metadata"]["annotations"]
    assert notes["rankadaptor.io/version"] == "1" and notes["rankadaptor.io/base-included"] == "true"
    assert notes["rankadaptor.io/source"].startswith("models:/")  # the logged model the version was made from
    container = container_of(isvc)
    assert container["image"] == "registry.example.com/rankadaptor-cpu:1.2"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    size = int(registry.model_state(MODEL, tracking_uri=store["tracking"])[2][registry.MODEL_BYTES_TAG])
    assert size > 0
    tmp = isvc["spec"]["predictor"]["volumes"][0]["emptyDir"]["sizeLimit"]
    assert manifest.quantity_bytes(tmp) >= size * manifest.HEADROOM  # sized from the version's registered size

    # A better version moves the alias; rendering again pins it: applying this file rolls it out.
    registry.register(store["adapter"], store["base"], report(0.7), store["config"])
    status, err = run_deploy("--model", MODEL, "--tracking-uri", store["tracking"], "--output", str(out), "--overwrite")
    assert status == 0, err
    assert env_of(isvc_of(out))["MODEL_URI"] == f"models:/{MODEL}/2"
    assert "version 2" in err


def test_deploy_refuses_a_missing_model_alias_or_existing_output(store, tmp_path):
    out = tmp_path / "isvc.yaml"
    cases = {
        ("--model", "no-such-model"): "registered model 'no-such-model' does not exist",
        ("--model", MODEL, "--alias", "staging"): "has no alias 'staging'; its aliases: {'champion'",
        ("--model", MODEL, "--name", "Bad_Name"): "name='Bad_Name' is not accepted",
    }
    for args, expected in cases.items():
        status, err = run_deploy(*args, "--tracking-uri", store["tracking"], "--output", str(out))
        assert status == 2 and expected in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not out.exists()  # nothing half-written
    out.write_text("kept\n")
    status, err = run_deploy("--model", MODEL, "--tracking-uri", store["tracking"], "--output", str(out))
    assert status == 2 and "already exists" in err and out.read_text() == "kept\n"


def test_committed_manifest_is_what_deploy_renders():
    docs = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "k8s/serving/inferenceservice.yaml").read_text())}
    assert docs["InferenceService"] == manifest.inference_service("models:/rankadaptor@champion", manifest.Serving())


def test_kserve_check_catches_what_kserve_refuses():
    good = manifest.inference_service("models:/m/3", manifest.Serving())
    assert kserve.problems(good) == []
    broken = copy.deepcopy(good)
    container_of(broken)["name"] = "server"
    container_of(broken)["ports"][0]["containerPort"] = 5000
    broken["spec"]["predictor"]["model"] = {"modelFormat": {"name": "mlflow"}}
    broken["spec"]["predictors"] = {}
    found = "\n".join(kserve.problems(broken))
    for expected in ("expects 'kserve-container'", "expected one, 8080", "no model format, got 1 container(s) and ['model']",
                     "unknown fields ['predictors']"):
        assert expected in found
    # The predictor as a Pod: KServe's own fields go, PodSpec fields stay, and so does a misspelt field
    # (which the strict Pod schema check then refuses: test_validate_refuses_a_misspelt_predictor_field).
    good["spec"]["predictor"]["minReplica"] = 2
    pod = kserve.predictor_pod(good)["spec"]
    assert {"minReplicas", "maxReplicas", "labels"}.isdisjoint(pod)
    assert pod["minReplica"] == 2 and pod["containers"][0]["name"] == "kserve-container"


@pytest.mark.slow
def test_validate_refuses_a_misspelt_predictor_field(tmp_path):
    """k8s/validate.sh on a copy of k8s/ whose InferenceService has a typo (tools: see test_k8s_manifests)."""
    broken = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", broken)
    shutil.rmtree(broken / "overlays" / "prod")
    path = broken / "serving" / "inferenceservice.yaml"
    path.write_text(path.read_text().replace("    minReplicas: 1\n", "    minReplica: 1\n"))
    result = subprocess.run(["bash", str(ROOT / "k8s/validate.sh"), str(broken)], capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 1
    assert "'minReplica' was unexpected" in result.stdout + result.stderr
    assert "FAILED serving: kubernetes-validate --strict" in result.stderr


def served_command(isvc: dict, port: int, tmp: Path) -> tuple[list[str], dict[str, str]]:
    """The predictor container's command and environment, run here: $(VAR)s expanded as the kubelet does,
    the pod's /tmp mapped to tmp, and bound to 127.0.0.1:port instead of the pod's 0.0.0.0:8080."""
    container = container_of(isvc)
    env = {k: v.replace(manifest.MODEL_DIR, str(tmp), 1) if v.startswith(manifest.MODEL_DIR) else v
           for k, v in env_of(isvc).items()}
    args = [env[a[2:-1]] if a.startswith("$(") else a for a in container["args"]]
    args[args.index("--host") + 1], args[args.index("--port") + 1] = "127.0.0.1", str(port)
    return container["command"] + args, env


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.slow
def test_the_champion_answers_through_the_predictor_command(store, tmp_path):
    out = tmp_path / "isvc.yaml"
    status, err = run_deploy("--model", MODEL, "--tracking-uri", store["tracking"], "--output", str(out))
    assert status == 0, err
    isvc = isvc_of(out)
    port = free_port()
    command, env = served_command(isvc, port, tmp_path)
    assert command[:3] == ["mlflow", "models", "serve"] and env["MODEL_URI"].startswith(f"models:/{MODEL}/")
    # The Secret's MLFLOW_TRACKING_URI, here the test's store; `mlflow` resolved on PATH as in the image.
    full_env = {**os.environ, **env, "MLFLOW_TRACKING_URI": store["tracking"],
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = tmp_path / "predictor.log"
    with process(command, log, full_env) as proc:
        uri = f"http://127.0.0.1:{port}"
        wait_http(f"{uri}/ping", proc, log)
        body = {"inputs": [PROMPT], "params": {"max_new_tokens": 8, "temperature": 0}}
        status, answer = post(f"{uri}/invocations", body)
        print("request:", json.dumps(body), "\nresponse:", status, json.dumps(answer))
        assert status == 200, answer
        bad_status, bad = post(f"{uri}/invocations", {"inputs": [PROMPT], "params": {"max_new_tokens": 0}})
        not_text = [post(f"{uri}/invocations", {"inputs": inputs}) for inputs in ([1, 2], [["a prompt"]], [PROMPT, 3])]
    # The served champion is the newest version the alias points at; it generates what that adapter does.
    champion = int(env["MODEL_URI"].rsplit("/", 1)[1])
    assert champion in (1, 2)  # 2 when the rollout test ran first in this module
    expected = generate(*load_adapted(store["base"], store["adapter"]), [PROMPT], max_new_tokens=8)
    assert answer == {"predictions": expected} and expected[0].strip()
    assert bad_status == 400 and "max_new_tokens=0 is not accepted" in bad["message"] and "stack_trace" not in bad
    # non-string inputs are refused (predict's type hint), never turned into the text of a prompt
    assert [status for status, _ in not_text] == [400, 400, 400] and not any("stack_trace" in a for _, a in not_text)
    assert "Expected type str, but got int" in not_text[0][1]["message"]
    assert "Expected type str, but got list" in not_text[1][1]["message"]
    assert "invalid elements: [('3', 'Expected type str, but got int')]" in not_text[2][1]["message"]
