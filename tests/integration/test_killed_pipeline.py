"""A pipeline killed between search iterations continues from the bank (docs/reliability.md)."""


import pytest
from mlflow import MlflowClient

from rankadaptor.flows.trials import trial_key
from rankadaptor.infra import storage
from rankadaptor.job import load_job
from rankadaptor.report import UNIFORM
from rankadaptor.search.state import load_state
from rankadaptor.steps import model as steps
from rankadaptor.steps import search as search_steps


# ---------------------------------------------------------------------------------------------------------
# A pipeline killed between search iterations

TINY_JOB = {
    "corpus_docs": 40, "corpus_tokens": 48, "bootstrap_trials": 0, "report_tasks": [],
    "prune": {"ratio": 0.2, "layer_start": 1, "layer_end": 3, "num_samples": 4, "seq_len": 32},
    "recover": {"cutoff": 32, "batch_size": 4, "epochs": 1, "max_steps": 2, "lr": 0.002},
    "evaluate": {"limit": 8, "batch_size": 8},
    "runtime": {"micro_batch_tokens": 128, "device": "cpu"},
    "search": {"go": "always", "num_samples": 200, "max_iterations": 3},
}


def bank_runs(job, trial_id: str | None = None) -> list:
    client = MlflowClient()
    experiment = client.get_experiment_by_name(job.bank.experiment)
    query = "attributes.status = 'FINISHED'" + (f" and tags.trial_id = '{trial_id}'" if trial_id else "")
    return client.search_runs([experiment.experiment_id], filter_string=query)


@pytest.mark.slow
def test_a_pipeline_killed_between_iterations_continues_from_the_bank(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    job = load_job(None, TINY_JOB)
    uri = {name: str(tmp_path / name) for name in ("data", "pruned", "baselines", "state-0", "proposal-1",
                                                   "adapter-1", "metrics-1", "state-1", "state-rerun",
                                                   "proposal-rerun", "state-1-retried", "structure")}
    steps.prepare_data(job, uri["data"])
    steps.prune(job, uri["data"], uri["pruned"], uri["structure"])
    steps.baselines(job, uri["pruned"], uri["data"], uri["baselines"])
    # First run: one full iteration of the loop, then the process dies.
    search_steps.meta_pretrain(job, uri["structure"], uri["data"], uri["baselines"], uri["state-0"])
    first = search_steps.propose(job, uri["state-0"], uri["proposal-1"])["rank_vector"]
    steps.recover(job, uri["pruned"], uri["data"], first, uri["adapter-1"])
    steps.evaluate(job, uri["pruned"], uri["data"], uri["adapter-1"], uri["metrics-1"])
    score = search_steps.update(job, uri["state-0"], uri["proposal-1"], uri["metrics-1"], uri["adapter-1"],
                                uri["state-1"])["score"]
    # Rerun from scratch: its state is rebuilt from the bank, with the trial, its score and its adapter.
    rerun = search_steps.meta_pretrain(job, uri["structure"], uri["data"], uri["baselines"], uri["state-rerun"])
    state, context = load_state(uri["state-rerun"])
    uniform = [job.baseline_rank] * len(first)
    assert rerun["target_trials"] == 2
    anchor = str(tmp_path / "baselines" / UNIFORM)
    assert [(o.rank_vector, o.artifact) for o in state.measured()] == [(uniform, anchor), (first, uri["adapter-1"])]
    assert state.measured()[1].score == pytest.approx(score)
    proposed = search_steps.propose(job, uri["state-rerun"], uri["proposal-rerun"])["rank_vector"]
    assert proposed not in (first, uniform)
    # A retried update step (killed after banking, before writing its state) adds no second run.
    search_steps.update(job, uri["state-0"], uri["proposal-1"], uri["metrics-1"], uri["adapter-1"],
                        uri["state-1-retried"])
    trial_id = trial_key(job, context, job.target_task, "select", first).id
    assert len(bank_runs(job, trial_id)) == 1 and len(bank_runs(job)) == 2
    # A trial whose adapter is gone cannot be reused whole: the rerun leaves it out (it will be measured again).
    storage.remove(uri["adapter-1"])
    search_steps.meta_pretrain(job, uri["structure"], uri["data"], uri["baselines"], uri["state-rerun"])
    assert [o.rank_vector for o in load_state(uri["state-rerun"])[0].measured()] == [uniform]
