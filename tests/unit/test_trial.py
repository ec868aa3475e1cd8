"""Trial context and identity: computed once per job, stable across re-pruning, carried in the search state."""

import json

from rankadaptor.infra import storage
from rankadaptor.job import load_job
from rankadaptor.models.structure import trial_context
from rankadaptor.search.loop import SearchState
from rankadaptor.search.state import best_trial, load_state, save_state
from rankadaptor.search.surrogate import SurrogateConfig, new_surrogate
from rankadaptor.steps.model import prepare_data, prune
from rankadaptor.trial import Observation, TrialContext


def test_a_repruned_model_keeps_its_trial_identity(tmp_path):
    """Reruns find their trials in the bank only if pruning the same model again gives the same identity,
    although the prune report (timings) differs."""
    job = load_job(None, {"corpus_docs": 20})
    prepare_data(job, str(tmp_path / "data"))
    for name in ("a", "b"):
        prune(job, str(tmp_path / "data"), str(tmp_path / name), str(tmp_path / f"{name}-structure"))
    first, second = (trial_context(str(tmp_path / f"{name}-structure"), str(tmp_path / "data")) for name in "ab")
    reports = [json.loads((tmp_path / name / "prune_report.json").read_text()) for name in ("a", "b")]
    assert reports[0]["seconds"] != reports[1]["seconds"]
    assert storage.checksum(tmp_path / "a") != storage.checksum(tmp_path / "b")
    assert first == second and first.num_layers == 4 and len(first.layer_features) == 4
    assert first.pruning["ratio"] == job.prune.ratio


def test_the_search_state_carries_the_context_and_its_best_trial(tmp_path):
    context = TrialContext("m" * 64, {"ratio": 0.2}, [10, 20, 30, 40], [[1.0, 0.5]] * 4, "d" * 64)
    trials = [Observation("t", [8] * 4, -2.5), Observation("t", [4, 8, 8, 12], -2.2, predicted=-2.3, artifact="a"),
              Observation("other", [2] * 4, 9.0)]
    state = SearchState("t", new_surrogate(SurrogateConfig(ensemble=1), [2, 4, 8, 12]), context.cost_per_rank,
                        context.layer_features, trials)
    save_state(state, context, str(tmp_path / "state"))
    loaded, loaded_context = load_state(str(tmp_path / "state"))
    assert loaded_context == context and loaded.observations == trials
    best, measured, _ = best_trial(str(tmp_path / "state"))
    assert best.rank_vector == [4, 8, 8, 12] and len(measured) == 2  # the other task's trial is not the target's
