"""Two whole `python -m pipelines run` at once on one PostgreSQL-backed MLflow server (a schedule overlapping
its previous run, or two users): the same job but for its search length, so they race on the same trials
(the baselines' uniform anchor, the first proposals). No trial is banked twice or lost, and the champion
alias ends at the better of the two registered versions (the bank's and the alias's rules:
rankadaptor.infra.bank.record_trial, rankadaptor.champion)."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import BUNDLED, ROOT
from mlflow import MlflowClient
from servers import mlflow_server, postgres, seaweedfs

from rankadaptor.infra import bank

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


def test_two_pipeline_runs_at_once_lose_nothing_duplicate_nothing_and_crown_the_better(tmp_path):
    (tmp_path / "s3").mkdir()
    with seaweedfs(tmp_path / "s3") as s3, postgres() as backend, mlflow_server(tmp_path, backend, s3) as uri:
        env = {**os.environ, **s3.env(), "MLFLOW_TRACKING_URI": uri,
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        runs = [start(tmp_path, "short", 1, env), start(tmp_path, "long", 2, env)]
        outputs = [run.communicate(timeout=1500)[0] for run in runs]
        for run, out in zip(runs, outputs, strict=True):
            assert run.returncode == 0, out[-3000:]

        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(bank.DEFAULT_EXPERIMENT)
        finished = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                      max_results=1000)
        ids = [r.data.tags["trial_id"] for r in finished]
        assert len(ids) == len(set(ids))  # 0 duplicated: a race's loser deleted its own run
        banked = {json.dumps(json.loads(r.data.params["rank_vector"])) for r in finished
                  if r.data.params.get("task") == "ppl:heldout" and r.data.params.get("split") == "select"}
        reports = [json.loads(next((tmp_path / name / "pipeline").glob("rankadaptor-*/register*/report/report.json"))
                              .read_text()) for name in ("short", "long")]
        measured = {json.dumps(h["rank_vector"]) for report in reports for h in report["history"]}
        assert measured and measured <= banked  # 0 lost: every trial either run measured is in the bank

        versions = client.search_model_versions("name = 'one-registered-model'")
        assert len(versions) == 2
        champion = client.get_model_version_by_alias("one-registered-model", "champion")
        assert float(champion.tags["report_mean"]) == max(float(v.tags["report_mean"]) for v in versions)
