"""A multi-fidelity job killed in each of its paid stages (the go/no-go's short trials, the bootstrap's
source-task trials, the search's full target trials, evaluate-best's finalists at a second seed) and rerun from
scratch pays no trial twice, at any fidelity: every recovery it runs is a (rank vector, seed, step fraction) no
earlier attempt finished. The search steps run as the search-pays branch runs them, on a go (the decision itself
is test_go's): the screen's finalists first, the one killed in its recovery measured by the rerun, the one
measured never again; then the best is chosen by seed mean over the two searched vectors and uniform."""

import pytest

from rankadaptor.flows.go import cheap_plan
from rankadaptor.infra import storage
from rankadaptor.job import load_job
from rankadaptor.models.structure import trial_context
from rankadaptor.steps import model as steps
from rankadaptor.steps import register as register_steps
from rankadaptor.steps import search as search_steps

pytestmark = pytest.mark.slow

JOB = {
    "corpus_docs": 40, "corpus_tokens": 48, "bootstrap_trials": 3, "source_tasks": ["ppl:piqa"], "report_tasks": [],
    "prune": {"ratio": 0.2, "layer_start": 1, "layer_end": 3, "num_samples": 4, "seq_len": 32},
    "recover": {"cutoff": 32, "batch_size": 4, "epochs": 1, "max_steps": 3, "lr": 0.002},
    "evaluate": {"limit": 8, "batch_size": 8},
    "runtime": {"micro_batch_tokens": 128, "device": "cpu"},
    "search": {"go": "auto", "go_candidates": 3, "num_samples": 200, "max_iterations": 2},
}


class Killed(Exception):
    """The process dying mid-recovery (a preemption): what it was training is lost, nothing after it runs."""


class Recoveries:
    """steps.model.recover, counted by what a recovery pays for, dying when told at the start of the n-th one."""

    def __init__(self, real):
        self.real, self.finished, self.kill_at = real, [], None

    def __call__(self, job, pruned_uri, data_uri, rank_vector, output_uri, *args, seed=None, step_fraction=1.0,
                 **kwargs):
        if self.kill_at is not None and len(self.finished) + 1 == self.kill_at:
            self.kill_at = None
            raise Killed
        result = self.real(job, pruned_uri, data_uri, rank_vector, output_uri, *args, seed=seed,
                           step_fraction=step_fraction, **kwargs)
        self.finished.append((tuple(rank_vector or ()), job.seed if seed is None else seed, step_fraction))
        return result

    def killing_at(self, n: int) -> "Recoveries":
        """Die at the start of the n-th recovery from now."""
        self.kill_at = len(self.finished) + n
        return self


def test_a_killed_multi_fidelity_search_rerun_pays_no_trial_twice_at_any_fidelity(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    job = load_job(None, JOB)
    uri = {name: str(tmp_path / name) for name in ("data", "pruned", "structure", "baselines", "bootstrap")}
    steps.prepare_data(job, uri["data"])
    steps.prune(job, uri["data"], uri["pruned"], uri["structure"])
    steps.baselines(job, uri["pruned"], uri["data"], uri["baselines"])
    recoveries = Recoveries(steps.recover)
    monkeypatch.setattr(steps, "recover", recoveries)
    planned = cheap_plan(job, trial_context(uri["structure"], uri["data"]))

    def go_check(attempt: str) -> dict:
        return steps.go_check(job, uri["pruned"], uri["structure"], uri["data"], uri["baselines"],
                              str(tmp_path / f"go-{attempt}"), str(tmp_path / f"go-work-{attempt}"))

    searched = []

    def iteration(attempt: str) -> None:
        """One search iteration from a fresh state (what a rerun's meta-pretrain rebuilds from the bank)."""
        state, proposal, adapter, metrics = (str(tmp_path / f"{name}-{attempt}")
                                             for name in ("state", "proposal", "adapter", "metrics"))
        search_steps.meta_pretrain(job, uri["structure"], uri["data"], uri["baselines"], state,
                                   decision_uri=uri["go"])
        vector = search_steps.propose(job, state, proposal)["rank_vector"]
        searched.append(vector)
        steps.recover(job, uri["pruned"], uri["data"], vector, adapter)
        steps.evaluate(job, uri["pruned"], uri["data"], adapter, metrics)
        search_steps.update(job, state, proposal, metrics, adapter, str(tmp_path / f"state-after-{attempt}"))

    # The go/no-go dies at its third short trial; the rerun measures the rest and decides from all of them.
    recoveries.killing_at(3)
    with pytest.raises(Killed):
        go_check("killed")
    assert len(recoveries.finished) == 2
    decision = go_check("rerun")
    assert decision["cheap_trials_paid"] == len(planned) - 2
    assert go_check("again")["cheap_trials_paid"] == 0  # everything is banked now: nothing paid
    finalists = decision["finalists"]
    assert len(finalists) == 2
    uri["go"] = str(tmp_path / "go-said-go")  # the tiny model's decision may be either: the search runs on a go
    with storage.writing_dir(uri["go"]) as out:
        storage.write_json_atomic(out / search_steps.GO_DECISION, {**decision, "go": True})
    # The bootstrap dies at its second source-task trial; the rerun pays only that one and the third.
    recoveries.killing_at(2)
    with pytest.raises(Killed):
        steps.bootstrap(job, uri["pruned"], uri["structure"], uri["data"], uri["bootstrap"])
    assert steps.bootstrap(job, uri["pruned"], uri["structure"], uri["data"], uri["bootstrap"]) == 2
    # The search: one iteration lands, the next dies in its recovery; the rerun's proposal is that same
    # unmeasured vector (nothing of it was banked), never the measured one.
    iteration("first")
    recoveries.killing_at(1)
    with pytest.raises(Killed):
        iteration("killed")
    iteration("rerun")
    assert searched == [finalists[0], finalists[1], finalists[1]]  # the killed finalist again, never the measured one
    assert "search #1 (the go/no-go screen's finalist 1 of 2)" in capsys.readouterr().out

    # evaluate-best re-measures the finalists (both searched vectors and uniform) at the second seed: killed at
    # the second of those recoveries, the rerun pays only the two left, and chooses by the seed mean.
    def evaluate_best(attempt: str) -> dict:
        return register_steps.evaluate_best(job, str(tmp_path / "state-after-rerun"), uri["pruned"], uri["data"],
                                            uri["baselines"], str(tmp_path / f"evaluated-{attempt}"),
                                            go_uri=uri["go"], work_uri=str(tmp_path / "evaluated-work"))

    recoveries.killing_at(2)
    with pytest.raises(Killed):
        evaluate_best("killed")
    report = evaluate_best("rerun")
    uniform = [job.baseline_rank] * len(finalists[0])
    table = report["finalists"]
    assert sorted(r["rank_vector"] for r in table[:2]) == sorted(finalists) and table[2]["rank_vector"] == uniform
    assert [len(r["scores"]) for r in table] == [2, 2, 2]
    assert report["best"]["rank_vector"] == max(table, key=lambda r: r["mean"])["rank_vector"]
    assert report["cost"]["stages"]["finalists at more seeds"]["trials"] == 3
    assert "finalists by mean of 2 seeds" in capsys.readouterr().out

    paid = recoveries.finished
    assert len(paid) == len(planned) + job.bootstrap_trials + 2 + 3
    assert len(set(paid)) == len(paid), f"a trial was paid twice: {paid}"
    go, boot, search, confirm = (paid[:len(planned)], paid[len(planned):-5], paid[-5:-3], paid[-3:])
    assert sorted(confirm) == sorted((tuple(v), job.seed + 1, 1.0) for v in [*finalists[:2], uniform])
    assert {(v, s) for v, s, _ in go} == {(tuple(k.rank_vector), k.seed) for k in planned}
    assert {f for *_, f in go} == {job.search.cheap_fraction} and {f for *_, f in boot} == {job.bootstrap_fraction}
    # a vector measured short is not thereby measured full: the two fidelities are separate trials
    assert {f for *_, f in search} == {1.0}
