"""The task catalog (docs/deploy.md, Scheduling new tasks): one file of tasks, one job per task, a search only
for a task without a champion or whose data changed (by content), shared pruning, one champion per task."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import BUNDLED, ROOT, TASKS_DIR
from mlflow import MlflowClient

from rankadaptor.errors import UserError
from rankadaptor.infra import claims, tracking
from rankadaptor.job import job_digest, job_to_json
from rankadaptor.ops.catalog import (
    load_catalog,
    parse_catalog,
    shared_job_json,
    task_job,
    task_jobs,
)

TINY = {"base_model": str(BUNDLED / "aidreams-260k"), "eval_data_dir": str(TASKS_DIR), "corpus_docs": 40,
        "source_tasks": ["ppl:piqa"], "bootstrap_trials": 0, "report_tasks": [],
        "runtime": {"micro_batch_tokens": 768},
        "prune": {"layer_start": 1, "layer_end": 3},
        "recover": {"cutoff": 96, "batch_size": 16, "epochs": 1, "lr": 0.002},
        "evaluate": {"limit": 10, "batch_size": 32}, "surrogate": {"meta_iterations": 20, "ensemble": 2},
        "search": {"go": "always", "threshold": 1e9, "max_iterations": 1, "num_samples": 200}}


def catalog_values(tmp_path: Path) -> dict:
    """Two small tasks of the user's: multiple-choice rows and a text, each in a file of its own."""
    shutil.copy(TASKS_DIR / "everyday.jsonl", tmp_path / "everyday.jsonl")
    docs = [d for d in (BUNDLED / "text" / "heldout.txt").read_text().split("\n\n") if d.strip()][:20]
    (tmp_path / "poems.txt").write_text("\n\n".join(docs))
    return {"job": TINY, "tasks": [{"name": "everyday", "kind": "mc", "data": str(tmp_path / "everyday.jsonl")},
                                   {"name": "poems", "kind": "text", "data": str(tmp_path / "poems.txt")}]}


@pytest.mark.parametrize("change, message", [
    ({"tasks": []}, "tasks must be a non-empty list"),
    ({"tasks": [{"name": "x", "kind": "mc"}]}, "tasks[0]: task 'x' of kind mc needs data"),
    ({"tasks": [{"name": "x", "kind": "csv", "data": "x.csv"}]}, "kind='csv' is not accepted; use one of ['lm-eval', "),
    ({"tasks": [{"name": "x", "kind": "mc", "data": "x", "dat": 1}]}, "unknown option(s) ['dat'] for CatalogTask"),
    ({"tasks": [{"name": "nope", "kind": "lm-eval"}]}, "task 'nope' of kind lm-eval is not one of ['boolq'"),
    ({"tasks": [{"name": "a", "kind": "mc", "data": "x", "overrides": {"prune": {"ratio": 0.5}}}]},
     "overrides ['prune'] are shared by every task of the catalog"),
    ({"tasks": [{"name": "a", "kind": "mc", "data": "x"}, {"name": "a", "kind": "mc", "data": "y"}]},
     "task(s) ['mc:a'] listed twice"),
    ({"job": {"target_task": "boolq"}}, "job may not set target_task"),
    ({"job": {"registry": {"model_name": "one"}}}, "job may not set registry.model_name"),
    ({"jobs": {}}, "must be a mapping with `tasks`"),
    ({"claim_hours": 0}, "claim_hours=0 is not accepted: a number of hours above 0"),
])
def test_a_bad_catalog_is_one_line_naming_the_fault(tmp_path, change, message):
    values = {**catalog_values(tmp_path), **change}
    with pytest.raises(UserError) as error:
        parse_catalog(values, "catalog 'c.yaml'")
    assert message in str(error.value) and str(error.value).startswith("catalog 'c.yaml'")


def test_each_task_is_a_job_of_its_own_and_they_share_pruning_corpus_and_bootstrap(tmp_path):
    values = catalog_values(tmp_path)
    values["tasks"][1]["overrides"] = {"search": {"threshold": 0.01, "max_iterations": 3}}
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(values))
    catalog = load_catalog(str(tmp_path / "catalog.yaml"))
    everyday, poems = task_jobs(catalog, loop_cap=6)
    assert everyday.target_task == "mc:everyday" and everyday.task_files == {"mc:everyday": str(tmp_path / "everyday.jsonl")}
    assert poems.target_task == "ppl:poems" and poems.search.max_iterations == 3 and everyday.search.max_iterations == 1
    assert everyday.registry_config().model_name == "aidreams-260k-width20-mc-everyday"
    texts = [job_to_json(job, {"base_model": "files:1", "task_files." + job.target_task: "sha256:" + job.target_task})
             for job in (everyday, poems)]
    assert shared_job_json(texts[0]) == shared_job_json(texts[1])  # one cache entry for both tasks' shared steps
    assert json.loads(shared_job_json(texts[0]))["task_files"] == {}  # no task's own file in the shared steps
    with pytest.raises(UserError, match=r"search.max_iterations=3 is more than the 2 iterations"):
        task_jobs(catalog, loop_cap=2)


def test_the_job_digest_follows_content_and_options_not_how_steps_run(tmp_path):
    catalog = parse_catalog(catalog_values(tmp_path), "c")
    job = task_job(catalog, catalog.tasks[0])
    digest = job_digest(job_to_json(job, {"task_files.mc:everyday": "sha256:aa"}))
    assert job_digest(job_to_json(job, {"task_files.mc:everyday": "sha256:bb"})) != digest  # new rows
    faster = task_job(parse_catalog({**catalog_values(tmp_path), "job": {**TINY, "runtime": {"micro_batch_tokens": 512}}},
                                    "c"), catalog.tasks[0])
    assert job_digest(job_to_json(faster, {"task_files.mc:everyday": "sha256:aa"})) == digest  # runtime only
    other = task_job(parse_catalog({**catalog_values(tmp_path), "job": {**TINY, "seed": 1}}, "c"), catalog.tasks[0])
    assert job_digest(job_to_json(other, {"task_files.mc:everyday": "sha256:aa"})) != digest  # an option


def test_a_run_searches_at_most_max_tasks_and_defers_the_rest_in_catalog_order(tmp_path, monkeypatch, capsys):
    """The Workflow-size cap: a plan with more new tasks than a run holds takes the first ones."""
    from rankadaptor.steps.catalog import plan

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.default_tracking_uri(tmp_path / "mlflow"))
    values = catalog_values(tmp_path)
    values["tasks"] = [{"name": f"t{i}", "kind": "mc", "data": str(tmp_path / "everyday.jsonl")} for i in range(4)]
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(values))
    planned = plan(str(tmp_path / "catalog.yaml"), loop_cap=6, max_tasks=3)
    assert [json.loads(text)["target_task"] for text in planned] == ["mc:t0", "mc:t1", "mc:t2"]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("progress: task")]
    assert len(lines) == 4 and "searches (no champion yet" in lines[2]
    assert lines[3].startswith("progress: task mc:t3: deferred to the next run (no champion yet; at most 3 tasks")


def run_catalog(tmp_path: Path, catalog: Path, tracking_uri: str) -> str:
    """`python -m pipelines run --catalog` as a user types it; its terminal output."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    out = subprocess.run([sys.executable, "-m", "pipelines", "run", "--catalog", str(catalog), "--root",
                          str(tmp_path / "run")], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=1500, check=False)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    return out.stdout


def newest_run(tmp_path: Path) -> Path:
    return max((tmp_path / "run" / "pipeline").glob("rankadaptor-catalog-*"), key=lambda p: p.stat().st_mtime)


def ran_steps(tmp_path: Path) -> list[str]:
    """The steps the newest catalog run executed (a step served from the cache leaves no folder)."""
    newest = newest_run(tmp_path)
    return sorted(str(p.relative_to(newest)) for p in newest.glob("**/executor_output.json"))


@pytest.mark.slow
def test_a_catalog_searches_new_tasks_then_only_the_task_whose_data_changed(tmp_path):
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(catalog_values(tmp_path)))
    tracking_uri = tracking.default_tracking_uri(tmp_path / "mlflow")
    client = MlflowClient(tracking_uri)
    models = {"mc:everyday": "aidreams-260k-width20-mc-everyday", "ppl:poems": "aidreams-260k-width20-ppl-poems"}

    first = run_catalog(tmp_path, tmp_path / "catalog.yaml", tracking_uri)
    assert "task mc:everyday: searches (no champion yet; model aidreams-260k-width20-mc-everyday)" in first
    assert "task ppl:poems: searches (no champion yet; model aidreams-260k-width20-ppl-poems)" in first
    assert len(first.splitlines()) < 100 and "Executing task" not in first
    assert sum(line.startswith(("  mc:everyday search #1: ", "  ppl:poems search #1: ")) for line in first.splitlines()) == 2
    for task, name in models.items():
        assert f"{task}: registered {name} version 1 (now the champion)" in first
        assert int(client.get_model_version_by_alias(name, "champion").version) == 1
    assert sum("register" in step for step in ran_steps(tmp_path)) == 2
    claimed = client.search_runs([client.get_experiment_by_name(claims.EXPERIMENT).experiment_id])
    assert sorted(r.data.tags[claims.MODEL] for r in claimed) == sorted(models.values())  # one claim per search,
    assert all(r.info.status == "FINISHED" and r.data.tags[claims.OWNER] for r in claimed)  # released by register

    rows = (tmp_path / "everyday.jsonl").read_text().splitlines()
    (tmp_path / "everyday.jsonl").write_text("\n".join(rows[:-2]) + "\n")  # new data at the same path
    second = run_catalog(tmp_path, tmp_path / "catalog.yaml", tracking_uri)
    assert "task mc:everyday: searches (its data or options changed since version 1;" in second
    assert "task ppl:poems: skipped (unchanged since version 1, champion: version 1;" in second
    steps = ran_steps(tmp_path)
    assert sum("register" in step for step in steps) == 1 and not any("prune" in step for step in steps), steps
    meta = json.loads(next(newest_run(tmp_path).glob("*/meta-pretrain/executor_output.json")).read_text())
    seen = meta["artifacts"]["search_state"]["artifacts"][0]["metadata"]  # meta-pretraining on the whole bank:
    assert seen["source_tasks"] == ["ppl:poems"] and seen["source_observations"] >= 2  # the other task's trials
    everyday = client.search_model_versions(f"name='{models['mc:everyday']}'")
    assert sorted(int(v.version) for v in everyday) == [1, 2]
    assert len(client.search_model_versions(f"name='{models['ppl:poems']}'")) == 1
    # the champion was scored on the old rows: the version measured on the new rows replaces it
    assert int(client.get_model_version_by_alias(models["mc:everyday"], "champion").version) == 2
    assert int(client.get_model_version_by_alias(models["ppl:poems"], "champion").version) == 1

    third = run_catalog(tmp_path, tmp_path / "catalog.yaml", tracking_uri)  # nothing changed: a check only
    assert "task mc:everyday: skipped (unchanged since version 2, champion: version 2;" in third
    assert ran_steps(tmp_path) == ["plan-catalog/executor_output.json", "shared-job/executor_output.json"]
