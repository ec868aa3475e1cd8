"""Two whole `python -m pipelines run` at once on one PostgreSQL-backed MLflow server with artifacts on
SeaweedFS (a schedule overlapping its previous run, or two users): the same job but for its search length, so
they race on the same trials (the baselines' uniform anchor, the first proposals). No trial is banked twice or
lost, and the champion alias ends at the better of the two registered versions (the bank's and the alias's
rules: rankadaptor.infra.bank.record_trial, rankadaptor.champion).

Then what a person sees in MLflow after those real jobs, read through MLflow's REST API as the UI reads it:
each register run holds the report (report.md, report.json, the plots), the comparison as metrics and the job's
settings as params; the registered model and its versions are described; the bank experiment is typed for
training runs and its runs are named by task, role and trial."""

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest
import yaml
from conftest import BUNDLED, ROOT
from mlflow import MlflowClient
from servers import mlflow_server, postgres, seaweedfs

from rankadaptor.infra import bank, tracking

pytestmark = pytest.mark.slow

JOB = {**yaml.safe_load((BUNDLED / "default.yaml").read_text()), "base_model": str(BUNDLED / "aidreams-260k"),
       "eval_data_dir": str(BUNDLED / "tasks"), "corpus_docs": 40, "source_tasks": ["ppl:piqa"],
       "bootstrap_trials": 0, "report_tasks": [], "adalora_baseline": False, "runtime": {"micro_batch_tokens": 768},
       "recover": {"cutoff": 96, "batch_size": 16, "epochs": 1, "lr": 0.002}, "evaluate": {"limit": 10, "batch_size": 32},
       "surrogate": {"meta_iterations": 20, "ensemble": 2}, "registry": {"model_name": "one-registered-model"}}


def start(tmp_path, name: str, max_iterations: int, env: dict) -> subprocess.Popen:
    job = {**JOB, "search": {"go": "always", "threshold": 1e-12, "patience": 1, "num_samples": 300,
                             "max_iterations": max_iterations}}
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(job))
    return subprocess.Popen([sys.executable, "-m", "pipelines", "run", "--config", str(tmp_path / f"{name}.yaml"),
                             "--root", str(tmp_path / name)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def api(uri: str, endpoint: str, body: dict | None = None, **query) -> dict:
    """One MLflow REST call: GET with query parameters, or POST of a JSON body."""
    url = f"{uri}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """(server URI, both runs' reports) after the two runs, the servers still up."""
    root = tmp_path_factory.mktemp("two-runs")
    (root / "s3").mkdir()
    with seaweedfs(root / "s3") as s3, postgres() as backend, mlflow_server(root, backend, s3) as uri:
        env = {**os.environ, **s3.env(), "MLFLOW_TRACKING_URI": uri,
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        runs = [start(root, "short", 1, env), start(root, "long", 2, env)]
        outputs = [run.communicate(timeout=1500)[0] for run in runs]
        for run, out in zip(runs, outputs, strict=True):
            assert run.returncode == 0, out[-3000:]
        yield uri, [json.loads(next((root / name / "pipeline").glob("rankadaptor-*/register*/report/report.json"))
                               .read_text()) for name in ("short", "long")]


def test_two_pipeline_runs_at_once_lose_nothing_duplicate_nothing_and_crown_the_better(two_runs):
    uri, reports = two_runs
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(bank.DEFAULT_EXPERIMENT)
    finished = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                  max_results=1000)
    ids = [r.data.tags["trial_id"] for r in finished]
    assert len(ids) == len(set(ids))  # 0 duplicated: a race's loser deleted its own run
    banked = {json.dumps(json.loads(r.data.params["rank_vector"])) for r in finished
              if r.data.params.get("task") == "ppl:heldout" and r.data.params.get("split") == "select"}
    measured = {json.dumps(h["rank_vector"]) for report in reports for h in report["history"]}
    assert measured and measured <= banked  # 0 lost: every trial either run measured is in the bank

    versions = client.search_model_versions("name = 'one-registered-model'")
    assert len(versions) == 2
    champion = client.get_model_version_by_alias("one-registered-model", "champion")
    assert float(champion.tags["report_mean"]) == max(float(v.tags["report_mean"]) for v in versions)


def test_each_register_run_holds_the_report_metrics_and_params(two_runs):
    uri, reports = two_runs
    model = api(uri, "registered-models/get", name="one-registered-model")["registered_model"]
    assert "uniform LoRA" in model["description"]
    for report in reports:
        version = api(uri, "model-versions/get", name="one-registered-model",
                      version=str(report["registration"]["version"]))["model_version"]
        gain = report["comparisons"][report["anchor"]]["ppl:heldout"]
        assert f"{gain['low']:+.4f} .. {gain['high']:+.4f}" in version["description"]
        run = api(uri, "runs/get", run_id=version["run_id"])["run"]
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert metrics["gain over uniform/report/ppl:heldout/low"] == pytest.approx(
            report["gain"]["report"]["ppl:heldout"]["low"])
        assert {"gain over uniform/select/ppl:heldout/diff", "registered/ppl:heldout/report",
                "registered version"} <= set(metrics)
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["target_task"] == "ppl:heldout" and params["registry_model_name"] == "one-registered-model"
        files = {f["path"] for f in api(uri, "artifacts/list", run_id=version["run_id"], path="report")["files"]}
        assert {"report/report.md", "report/report.json", "report/gain.png", "report/ranks.png"} <= files


def test_the_bank_is_a_training_runs_experiment_with_readable_run_names(two_runs):
    uri, _ = two_runs
    experiment = api(uri, "experiments/get-by-name", experiment_name=bank.DEFAULT_EXPERIMENT)["experiment"]
    tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
    assert tags[tracking.EXPERIMENT_KIND_TAG] == tracking.TRAINING_RUNS
    runs = api(uri, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 1000})["runs"]
    names = sorted(r["info"]["run_name"] for r in runs)
    assert any(n.startswith("ppl:heldout baseline [") for n in names), names
    assert any(n.startswith("ppl:heldout search #1 [") for n in names), names
    for run in runs:
        assert {t["key"] for t in run["data"]["tags"]} >= {"role", "task"}
