"""benchmarks/sizing/transfer_per_run.py counts one download per executed task that takes the model's weights,
checked against a count made here by walking the compiled YAML's components."""

import json
import re
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

MODULE = "benchmarks.sizing.transfer_per_run"
MAIN = ROOT / "pipelines" / "compiled" / "rankadaptor.yaml"
PARAMS, RATIO = 6.7e9, 0.2


def run(*extra):
    out = subprocess.run([sys.executable, "-m", MODULE, "--ir", str(MAIN), "--params", str(PARAMS), "--dtype", "bf16",
                          "--prune-ratio", str(RATIO), "--json", *extra], check=False, capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def weight_tasks():
    """(loop-body tasks, root tasks, exit-branch tasks) calling a container component with a pruned_model input."""
    spec = next(yaml.safe_load_all(MAIN.read_text()))
    components = spec["components"]

    def takes_weights(task):
        callee = components[task["componentRef"]["name"]]
        return "executorLabel" in callee and "pruned_model" in callee.get("inputDefinitions", {}).get("artifacts", {})

    loop, exits = [], []
    for name, component in components.items():
        if "dag" not in component:
            continue
        tasks = [t for t in component["dag"]["tasks"].values() if takes_weights(t)]
        (loop if re.fullmatch(r"comp-rankadaptor-iteration(-\d+)?", name) else exits).extend(tasks)
    root = [t for t in spec["root"]["dag"]["tasks"].values() if takes_weights(t)]
    iterations = sum(1 for n in components if re.fullmatch(r"comp-rankadaptor-iteration(-\d+)?", n))
    return loop, root, exits, iterations


@pytest.fixture(scope="module")
def worst():
    return run()


def test_counts_every_weight_taking_task_once_per_execution(worst):
    loop, root, exits, iterations = weight_tasks()
    steps_in_exits = {re.sub(r"-\d+$", "", t["taskInfo"]["name"]) for t in exits}
    # every unrolled iteration runs; root steps run once; of the exit branches exactly one runs
    expected = len(loop) + len(root) + len(steps_in_exits)
    assert worst["downloads"] == expected
    assert worst["max_iterations"] == worst["cap"] == iterations
    pruned = int(PARAMS * (1 - RATIO) * 2)
    assert worst["model_bytes"]["pruned_model"] == pruned
    assert worst["download_bytes"] == expected * pruned
    steps = {s["step"] for s in worst["steps"]}
    assert steps == {re.sub(r"-\d+$", "", t["taskInfo"]["name"]) for t in loop + root + exits}


def test_fewer_iterations_download_less(worst):
    loop, _, _, iterations = weight_tasks()
    per_iteration = len(loop) // iterations
    two = run("--max-iterations", "2")
    assert two["downloads"] == worst["downloads"] - (iterations - 2) * per_iteration


def test_the_light_steps_never_take_the_weights():
    """propose, update and the gate work on the search state alone (structure and checksums carried in it):
    none of them may declare a model artifact, which KFP's launcher would download whole."""
    spec = next(yaml.safe_load_all(MAIN.read_text()))
    for name, component in spec["components"].items():
        if re.fullmatch(r"comp-(propose|update|gate)(-\d+)?", name):
            artifacts = component.get("inputDefinitions", {}).get("artifacts", {})
            assert not {"pruned_model", "base_model"} & set(artifacts), (name, sorted(artifacts))
