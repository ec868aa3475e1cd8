"""The main pipeline end to end under kfp.local on the bundled tiny model: the loop stops at the right
iteration both when it converges early and when it reaches max_iterations. The local runner silently
skips a condition on a named output of a multi-output task, so these runs also prove the gates run:
a skipped gate would register nothing (neither branch) and the report would be missing."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import BUNDLED, TASKS_DIR
from mlflow import MlflowClient

from pipelines.local import run_local
from rankadaptor import config as cfg
from rankadaptor.evaluate.tasks import task_checksum
from rankadaptor.infra import bank, tracking
from rankadaptor.job import load_job
from rankadaptor.report import OURS, PRUNED, UNIFORM

TINY = {"corpus_docs": 40, "source_tasks": ["ppl:piqa"], "runtime": {"micro_batch_tokens": 768},
        "recover": {"cutoff": 96, "batch_size": 16, "epochs": 1, "lr": 0.002},
        "evaluate": {"limit": 10, "batch_size": 32}, "surrogate": {"meta_iterations": 20, "ensemble": 2}}


def tiny_job(threshold, max_iterations, bootstrap_trials, report_tasks):
    return load_job(None, {**TINY, "bootstrap_trials": bootstrap_trials, "report_tasks": report_tasks,
                           "search": {"go": "always", "threshold": threshold, "max_iterations": max_iterations, "num_samples": 500,
                                      "patience": 1},
                           "registry": {"model_name": "tiny"}})


def run(tmp_path, monkeypatch, job):
    tracking_uri = tracking.default_tracking_uri(tmp_path / "mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    report_dir = run_local(job, tmp_path / "run")
    return json.loads((report_dir / "report.json").read_text()), report_dir, MlflowClient(tracking_uri)


def search_trials(client):
    experiment = client.get_experiment_by_name(bank.DEFAULT_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'")
    return [r for r in runs if r.data.tags.get("stage") == "search"]


@pytest.mark.slow
def test_converges_at_the_first_iteration_and_a_rerun_reuses_the_unchanged_steps(tmp_path, monkeypatch):
    job = tiny_job(threshold=1e9, max_iterations=3, bootstrap_trials=0, report_tasks=[])
    report, report_dir, client = run(tmp_path, monkeypatch, job)
    assert report["iterations"] == 1 and len(search_trials(client)) == 1
    assert report_dir.parent.name == "register"  # the branch of gate 1, not the end of the unrolled loop
    assert int(client.get_model_version_by_alias("tiny", "champion").version) == 1
    assert report["registration"]["model_name"] == "tiny"  # set explicitly: the naming rule steps aside
    tags = client.get_model_version("tiny", "1").tags
    assert tags["task"] == "ppl:heldout" and int(tags["trainable_params"]) > 0 and tags["pipeline_run"]
    assert tags["self_contained"] == "true" and json.loads(tags["scores"])
    for plot in ("ranks.png", "predicted_vs_measured.png", "convergence.png"):
        assert (report_dir / plot).stat().st_size > 1000
    assert [row["method"] for row in report["table"]] == [PRUNED, UNIFORM, OURS]

    _, rerun_dir, _ = run(tmp_path, monkeypatch, job)
    ran = {step.name for step in rerun_dir.parents[1].iterdir()}  # a step served from the cache leaves no folder
    assert "configure" in ran and not ran & {"prepare-data", "prune", "baselines"}, ran  # configure fingerprints
    trials = search_trials(client)  # the search went on from the bank: a new vector, none measured twice
    assert len(trials) == 2 and len({t.data.params["rank_vector"] for t in trials}) == 2


def run_command(tmp_path, job):
    """`python -m pipelines run` as a user types it: the job from a YAML file; (report, report dir, client, stdout)."""
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict(job)))
    tracking_uri = tracking.default_tracking_uri(tmp_path / "mlflow")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    out = subprocess.run([sys.executable, "-m", "pipelines", "run", "--config", str(config), "--root", str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1200, check=False)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    report_dir = Path(out.stdout.split("report, plots and registration: ")[1].splitlines()[0])
    return json.loads((report_dir / "report.json").read_text()), report_dir, MlflowClient(tracking_uri), out.stdout


@pytest.mark.slow
def test_stops_at_max_iterations_on_a_custom_task(tmp_path):
    """`python -m pipelines run` with the user's own tasks (docs/tasks.md): target mc:everyday (the shipped
    multiple-choice example), source ppl:notes (a text of the user's), 3 bootstrap trials, 2 search iterations."""
    data = tmp_path / "tasks"
    shutil.copytree(TASKS_DIR, data)
    docs = [d for d in (BUNDLED / "text" / "train.txt").read_text().split("\n\n") if d.strip()][:40]
    (data / "notes.txt").write_text("\n\n".join(docs))
    job = dataclasses.replace(tiny_job(threshold=1e-12, max_iterations=2, bootstrap_trials=3,
                                       report_tasks=["mc:everyday", "boolq"]),
                              target_task="mc:everyday", source_tasks=["ppl:notes"], eval_data_dir=str(data))
    report, report_dir, client, stdout = run_command(tmp_path, job)
    # the terminal: one line per step, the search's progress, the table; everything else is in the log
    lines = stdout.splitlines()
    assert len(lines) < 100, stdout
    assert sum("done in" in line for line in lines) >= 12 and sum(line.startswith("  mc:everyday search #") for line in lines) == 2
    assert "Executing task" not in stdout
    registration = report["registration"]  # the last lines: the registered model and how to load it
    assert f"registered model {registration['model_name']} version {registration['version']}" in stdout
    assert "mlflow.pyfunc.load_model(" in lines[-2] and "mlflow models serve -m models:/" in lines[-1]
    assert "search stopped: " in stdout and "mc:everyday search #1: ranks " in stdout
    log = (tmp_path / "run" / "run.log").read_text()
    assert "Executing task" in log and len(log.splitlines()) > 10 * len(lines)
    assert report["iterations"] == 2
    trials = search_trials(client)
    assert len(trials) == 2 and len({t.data.params["rank_vector"] for t in trials}) == 2
    bootstrap = [r for r in client.search_runs([client.get_experiment_by_name(bank.DEFAULT_EXPERIMENT).experiment_id])
                 if r.data.tags.get("stage") == "bootstrap"]
    assert len(bootstrap) == 3  # one source task x 3 random vectors, used for meta-pretraining
    assert {r.data.params["task"] for r in bootstrap} == {"ppl:notes"}  # on the user's text
    for row in report["table"]:  # a multiple-choice task scores accuracies, on 10 rows of each split
        assert all(0.0 <= row[f"mc:everyday ({split})"] <= 1.0 for split in ("select", "report"))
    assert report["evaluation"]["report"]["tasks"]["mc:everyday"]["n"] == 10
    searched = bank.load_observations(tracking_uri=tracking.default_tracking_uri(tmp_path / "mlflow"),
                                      task="mc:everyday", seed=job.seed, split="select",
                                      task_checksum=task_checksum("mc:everyday", str(data)))
    assert len(searched) == 1 + 2  # the uniform anchor and two search trials, keyed by the file's content
    uniform = [job.baseline_rank] * 4
    assert all(h["rank_vector"] != uniform for h in report["history"])  # the baseline is never searched again
    assert report["best"]["trainable_params"] <= report["budget"]
    # evaluate-best chose by seed mean: both searched vectors and uniform, each at the job's seed and one more
    finalists = report["finalists"]
    assert sorted(f["rank_vector"] for f in finalists[:2]) == sorted(h["rank_vector"] for h in report["history"])
    assert finalists[2]["rank_vector"] == uniform and [f["seeds"] for f in finalists] == [2, 2, 2]
    assert report["best"]["rank_vector"] == max(finalists, key=lambda f: f["mean"])["rank_vector"]
    confirm = [r for r in client.search_runs([client.get_experiment_by_name(bank.DEFAULT_EXPERIMENT).experiment_id])
               if r.data.tags.get("stage") == "confirm"]
    assert sorted(int(r.data.params["seed"]) for r in confirm) == [job.seed + 1] * 3
    assert "finalists by mean of 2 seeds" in stdout and "## Finalists" in (report_dir / "report.md").read_text()
    # The verdict states what the held-out interval against uniform LoRA says, with its numbers.
    versus = report["comparisons"][UNIFORM][job.target_task]
    assert report["significant"] == (versus["low"] > 0)
    assert f"{versus['diff']:+.4f} (95% CI {versus['low']:+.4f} .. {versus['high']:+.4f})" in report["verdict"]
    assert f"uniform LoRA r={job.baseline_rank}" in report["verdict"]
    # honest registration: the uniform adapter unless the searched vector beat it beyond noise
    assert report["decision"]["register"] == ("searched" if report["significant"] else "uniform")
    version = client.get_model_version("tiny", report["registration"]["version"])
    assert version.tags["registered_adapter"] == report["decision"]["register"]

