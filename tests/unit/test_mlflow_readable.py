"""What MLflow shows of a job: the bank's run names, times, steps and tags, the experiment's type, and the
register run's metrics, params and descriptions (built from the report; the server-backed check is in
tests/integration/test_concurrent_runs.py)."""

import re

from mlflow import MlflowClient
from servers import copy_store, empty_mlflow_db
from test_bank import key
from test_report import report_for

from rankadaptor.flows.register import model_description, version_description
from rankadaptor.infra import bank, tracking
from rankadaptor.job import load_job
from rankadaptor.serving.registry import METRIC_NAME
from rankadaptor.steps.register import pruning_label, run_metrics, run_params


def test_run_names_say_task_role_trial_and_ranks():
    assert bank.run_name(key(task="ppl:heldout", rank_vector=[8, 10, 6, 8]), "search", 3) == \
        "ppl:heldout search #3 [8,10,6,8]"
    assert bank.run_name(key(task="ppl:piqa", rank_vector=[2, 4]), "bootstrap") == "ppl:piqa bootstrap [2,4]"


def test_trial_times_span_the_trial_and_end_now():
    assert bank.trial_times(2.5, now=100.0) == (97_500, 100_000)
    assert bank.trial_times(None, now=100.0) == (100_000, 100_000)


def test_a_banked_trial_is_a_readable_run_of_a_training_runs_experiment(tmp_path):
    uri = copy_store(empty_mlflow_db(tmp_path / "template"), tmp_path / "store")
    bank.record_trial(key(rank_vector=[8, 10, 6, 8]), score=-2.2, predicted=-2.3, seconds=4.0, number=3,
                      tracking_uri=uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(bank.DEFAULT_EXPERIMENT)
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.TRAINING_RUNS
    run = client.search_runs([experiment.experiment_id])[0]
    assert run.info.run_name == "boolq search #3 [8,10,6,8]"
    assert run.data.tags["role"] == "search" and run.data.tags["task"] == "boolq"
    assert run.data.params["rank_vector"] == "[8,10,6,8]" and run.data.metrics["score"] == -2.2
    assert 3_900 <= run.info.end_time - run.info.start_time <= 4_100
    assert {m.step for m in client.get_metric_history(run.info.run_id, "score")} == {3}


def test_the_version_description_says_what_was_registered_and_why():
    report = {**report_for(-2.4), "stop_reason": "max_iterations reached"}
    text = version_description(report)
    gain = report["comparisons"][report["anchor"]]["ppl:heldout"]
    assert f"{gain['diff']:+.4f}" in text and f"{gain['low']:+.4f} .. {gain['high']:+.4f}" in text
    assert "held-out report split" in text and "max_iterations reached" in text
    registered = "searched per-layer" if report["decision"]["register"] == "searched" else "uniform LoRA r=4 adapter"
    assert registered in text
    no_go = {**report, "iterations": 0, "stop_reason": "not run, no-go: headroom -0.0310, needed 0.0120"}
    text = version_description(no_go)
    assert "uniform LoRA r=4 adapter" in text and "without a search: not run, no-go: headroom" in text
    assert "searched vector" not in text
    assert "champion" in model_description("org/tiny", "width, ratio 0.2", "ppl:heldout", "champion")


def test_the_register_run_metrics_are_flat_and_valid_and_params_are_the_main_settings():
    report = {**report_for(-2.4), "registration": {"version": 2}}
    metrics = run_metrics(report)
    assert all(re.fullmatch(METRIC_NAME, name) for name in metrics), sorted(metrics)
    assert {"gain over uniform/report/ppl:heldout/low", "gain over uniform/report/ppl:heldout/high",
            "rankadaptor/ppl:heldout/report", "lora_uniform/ppl:heldout/report",
            "registered/ppl:heldout/report", "registered version", "noise sd"} <= set(metrics)
    job = load_job(None, {"registry": {"model_name": "tiny"}})
    params = run_params(job)
    assert params["target_task"] == job.target_task and params["prune_ratio"] == job.prune.ratio
    assert params["registry_model_name"] == "tiny" and "stage_options" not in params
    assert pruning_label(job) == f"width, ratio {job.prune.ratio:g}"
