"""The Workflow-size estimate of benchmarks/sizing/workflow_size.py: the committed main pipeline fits Argo's limit
with the margin, the estimate grows with the unroll cap, and it follows KFP's backend compiler in what it
stores once (component specs and containers deduplicated, one template per DAG component)."""

import json
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

MODULE = "benchmarks.sizing.workflow_size"
MAIN = ROOT / "pipelines" / "compiled" / "rankadaptor.yaml"


@pytest.fixture(scope="module")
def result():
    out = subprocess.run([sys.executable, "-m", MODULE, "--files", str(MAIN), "--caps", "3", "5", "--json"],
                         check=False, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


@pytest.mark.slow  # compiles the pipeline at several loop caps (~20 s)
def test_committed_main_pipeline_fits_the_real_limits_with_margin(result):
    committed = next(r for r in result["rows"] if r["source"] == "committed")
    assert committed["cap"] >= 2
    assert committed["spec_bytes"] < result["etcd_limit"]
    assert committed["packed_bytes"] <= result["argo_limit"] * (1 - result["margin"])
    assert committed["fits"]


@pytest.mark.slow  # compiles the pipeline at several loop caps (~20 s)
def test_estimate_grows_with_the_unroll_cap(result):
    small, large = (next(r for r in result["rows"] if r["source"] == f"cap {c}") for c in (3, 5))
    assert (small["cap"], large["cap"]) == (3, 5)
    for key in ("spec_bytes", "nodes", "status_raw_bytes", "status_compressed_bytes", "packed_bytes"):
        assert large[key] > small[key], key


def test_workflow_stores_each_container_once_and_one_template_per_dag():
    from benchmarks.sizing.workflow_size import workflow

    documents = list(yaml.safe_load_all(MAIN.read_text()))
    spec, platform = documents[0], documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    # counted here straight from the YAML
    containers = {json.dumps(e["container"], sort_keys=True) for e in spec["deploymentSpec"]["executors"].values()}
    container_components = [c for c in spec["components"].values() if "executorLabel" in c]
    dag_components = [n for n, c in spec["components"].items() if "dag" in c] + ["root"]
    with_k8s = [n for n, c in spec["components"].items() if c.get("executorLabel") in platform]

    wf = workflow(spec, platform)
    names = [p["name"] for p in wf["spec"]["arguments"]["parameters"]]
    assert sum(n.startswith("implementations-") for n in names) == len(containers) < len(container_components)
    assert sum(n.startswith("kubernetes-") for n in names) == len(with_k8s)
    assert {f"components-{n}" for n in dag_components} <= set(names)
    templates = {t["name"] for t in wf["spec"]["templates"]}
    assert set(dag_components) <= templates
    assert {"system-container-driver", "system-dag-driver", "entrypoint"} <= templates
    # every placeholder a template uses names a workflow argument
    text = json.dumps(wf["spec"]["templates"])
    used = {part.split("}}")[0] for part in text.split("{{workflow.parameters.")[1:]}
    assert used <= set(names)


def test_a_catalog_run_with_the_most_tasks_it_searches_fits_and_twice_as_many_would_not():
    """The catalog pipeline's ParallelFor adds each searching task's nodes to one Workflow: the plan's cap
    (catalog.MAX_TASKS_PER_RUN) keeps a worst-case run within Argo's limit with the margin."""
    from rankadaptor.ops.catalog import MAX_TASKS_PER_RUN

    catalog = ROOT / "pipelines" / "compiled" / "catalog.yaml"
    rows = {}
    for tasks in (MAX_TASKS_PER_RUN, 2 * MAX_TASKS_PER_RUN):
        out = subprocess.run([sys.executable, "-m", MODULE, "--files", str(catalog), "--caps", "--loop-items",
                              str(tasks), "--json"], check=False, capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-2000:]
        rows[tasks] = json.loads(out.stdout)["rows"][0]
    assert rows[MAX_TASKS_PER_RUN]["fits"] and not rows[2 * MAX_TASKS_PER_RUN]["fits"]
    assert rows[2 * MAX_TASKS_PER_RUN]["nodes"] > rows[MAX_TASKS_PER_RUN]["nodes"]
