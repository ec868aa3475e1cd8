"""What a person sees in MLflow after a real job, read through MLflow's REST API as the UI reads it: the
register run holds the report (report.md, report.json, the plots), the comparison as metrics and the job's
settings as params; the registered model and its version are described; the bank experiment is typed for
training runs and its runs are named by task, role and trial. The smallest job that registers runs under
kfp.local against `mlflow server` on 127.0.0.1 with artifacts on SeaweedFS."""

import json
import urllib.parse
import urllib.request

import pytest
from servers import mlflow_server, seaweedfs
from test_pipeline_local import tiny_job

from pipelines.local import run_local
from rankadaptor.infra import bank, tracking

pytestmark = pytest.mark.slow


def api(uri: str, endpoint: str, body: dict | None = None, **query) -> dict:
    """One MLflow REST call: GET with query parameters, or POST of a JSON body."""
    url = f"{uri}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def served_run(tmp_path_factory):
    """(server URI, report dir) after the smallest job that registers: no bootstrap, one search trial."""
    root = tmp_path_factory.mktemp("mlflow-report")
    with seaweedfs(tmp_path_factory.mktemp("s3")) as s3, mlflow_server(root, f"sqlite:///{root / 'mlflow.db'}", s3) as uri, \
            pytest.MonkeyPatch.context() as patch:
        for name, value in {**s3.env(), "MLFLOW_TRACKING_URI": uri}.items():
            patch.setenv(name, value)
        job = tiny_job(threshold=1e9, max_iterations=1, bootstrap_trials=0, report_tasks=[])
        yield uri, run_local(job, root / "run")


def test_the_register_run_holds_the_report_metrics_and_params(served_run):
    uri, report_dir = served_run
    version = api(uri, "model-versions/get", name="tiny", version="1")["model_version"]
    report = json.loads((report_dir / "report.json").read_text())
    gain = report["comparisons"][report["anchor"]]["ppl:heldout"]
    assert f"{gain['low']:+.4f} .. {gain['high']:+.4f}" in version["description"]
    assert "uniform LoRA" in api(uri, "registered-models/get", name="tiny")["registered_model"]["description"]
    run = api(uri, "runs/get", run_id=version["run_id"])["run"]
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics["gain over uniform/report/ppl:heldout/low"] == pytest.approx(report["gain"]["report"]["ppl:heldout"]["low"])
    assert {"gain over uniform/select/ppl:heldout/diff", "registered/ppl:heldout/report", "registered version"} <= set(metrics)
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["target_task"] == "ppl:heldout" and params["registry_model_name"] == "tiny"
    files = {f["path"] for f in api(uri, "artifacts/list", run_id=version["run_id"], path="report")["files"]}
    assert {"report/report.md", "report/report.json", "report/gain.png", "report/ranks.png"} <= files


def test_the_bank_is_a_training_runs_experiment_with_readable_run_names(served_run):
    uri, _ = served_run
    experiment = api(uri, "experiments/get-by-name", experiment_name=bank.DEFAULT_EXPERIMENT)["experiment"]
    tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
    assert tags[tracking.EXPERIMENT_KIND_TAG] == tracking.TRAINING_RUNS
    runs = api(uri, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    names = sorted(r["info"]["run_name"] for r in runs)
    assert any(n.startswith("ppl:heldout baseline [") for n in names), names
    assert any(n.startswith("ppl:heldout search #1 [") for n in names), names
    for run in runs:
        assert {t["key"] for t in run["data"]["tags"]} >= {"role", "task"}
