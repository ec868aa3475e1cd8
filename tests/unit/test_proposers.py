"""search.proposer: the surrogate, TPE and random proposers keep the budget, never repeat a trial, rerun the same,
and the option reaches the job's propose step."""

import numpy as np
import pytest

from rankadaptor.config import from_dict, to_dict
from rankadaptor.errors import UserError
from rankadaptor.search.config import PROPOSERS, SearchConfig
from rankadaptor.search.loop import SearchState, converged, propose, stop_reason, update
from rankadaptor.search.proposers import random_vector, tpe_vector
from rankadaptor.search.surrogate import SurrogateConfig, new_surrogate
from rankadaptor.trial import Observation
from rankadaptor.widths import lora_parameters

COST = [100, 60, 40, 80, 50, 100]  # LoRA parameters per unit rank of 6 layers
BUDGET = 8 * sum(COST)  # uniform rank 8


def measured_state(config: SearchConfig, trials: int = 4) -> SearchState:
    """A search with the uniform anchor and a few trials measured (proposed by `config`'s own proposer)."""
    surrogate = new_surrogate(SurrogateConfig(adapt_steps=5), config.candidates)
    state = SearchState("t", surrogate, list(COST), None, [Observation("t", [8] * len(COST), 0.5, None)])
    for _ in range(trials):
        proposal = propose(state, config)
        state, _ = update(state, proposal, float(np.dot(proposal.rank_vector, [3, 1, 2, 1, 1, 2]) / 100), config)
    return state


@pytest.mark.parametrize("proposer", PROPOSERS)
def test_each_proposer_proposes_a_new_vector_under_the_budget_and_reruns_the_same(proposer):
    config = SearchConfig(proposer=proposer, num_samples=300, budget=BUDGET)
    state = measured_state(config)
    proposal = propose(state, config)
    assert lora_parameters(proposal.rank_vector, COST) == proposal.trainable_params <= BUDGET
    assert set(proposal.rank_vector) <= set(config.candidates)
    assert proposal.rank_vector not in [o.rank_vector for o in state.measured()]
    assert np.isfinite(proposal.predicted)  # tpe/random: the surrogate's prediction, for the report
    assert propose(state, config) == proposal  # seeded from (seed, trial count): a rerun proposes the same
    assert len({tuple(o.rank_vector) for o in state.measured()}) == len(state.measured())  # no trial twice


def test_tpe_keeps_unsearched_layers_at_fixed_rank():
    config = SearchConfig(proposer="tpe", searched_layers=[1, 3], fixed_rank=4, budget=BUDGET)
    vector = tpe_vector([], config, COST)
    assert vector[0] == vector[2] == vector[4] == vector[5] == 4 and lora_parameters(vector, COST) <= BUDGET


def planted(vector: list[int]) -> float:
    """Layer 2 at rank 4 is worth much more than anything else; the other layers add a little."""
    return float(vector[2] == 4) + 0.01 * sum(vector) / len(vector)


def share_planted(vector_fn, trials: int = 40, last: int = 15) -> float:
    """The share of the last proposals with the planted layer value, after `trials` measured trials."""
    measured: list[Observation] = []
    for _ in range(trials):
        vector = vector_fn(measured)
        measured.append(Observation("t", vector, planted(vector), None))
    return float(np.mean([o.rank_vector[2] == 4 for o in measured[-last:]]))


def test_tpe_concentrates_on_a_planted_good_layer_value_where_random_does_not():
    config = SearchConfig(proposer="tpe", budget=12 * sum(COST), seed=3)
    tpe = share_planted(lambda measured: tpe_vector(measured, config, COST))
    rand = share_planted(lambda measured: random_vector(measured, config, COST))
    assert tpe >= 0.5, f"TPE proposed layer 2 at rank 4 in only {tpe:.0%} of its last 15 trials"
    assert rand <= 0.35  # one candidate of 6 at random (0.07-0.27 over seeds 0-5; TPE 0.53-0.80)


def test_tpe_snaps_to_the_nearest_unmeasured_pool_vector():
    pool = np.asarray([[8, 8, 8], [2, 4, 6], [4, 4, 4], [12, 2, 2]])
    measured = [Observation("t", [8, 8, 8], 0.0, None), Observation("t", [2, 4, 6], 0.1, None)]
    config = SearchConfig(proposer="tpe", seed=1)
    picks = {tuple(tpe_vector(measured, SearchConfig(proposer="tpe", seed=s), [1, 1, 1], pool)) for s in range(8)}
    assert picks <= {(4, 4, 4), (12, 2, 2)}
    assert tpe_vector(measured, config, [1, 1, 1], pool) == tpe_vector(measured, config, [1, 1, 1], pool)


def test_tpe_without_a_new_vector_under_the_budget_stops_with_one_clear_line():
    config = SearchConfig(proposer="tpe", searched_layers=[0], candidates=[2, 4], fixed_rank=2, budget=sum(COST) * 2)
    measured = [Observation("t", [r, 2, 2, 2, 2, 2], 0.1, None) for r in (2, 4)]
    with pytest.raises(UserError, match="proposer tpe found no new rank vector") as error:
        tpe_vector(measured, config, COST)
    assert "\n" not in str(error.value)


def test_a_bad_proposer_name_is_refused_in_one_line_naming_the_accepted_values():
    with pytest.raises(UserError, match=r"proposer='bayes' is not accepted; use one of \('surrogate', 'tpe', "
                                        r"'random'\)") as error:
        from_dict(SearchConfig, {"proposer": "bayes"})
    assert "\n" not in str(error.value)
    from rankadaptor.job import load_job

    with pytest.raises(UserError, match=r"^search: proposer='bayes' is not accepted"):  # a job names the section
        load_job(None, {"search": {"proposer": "bayes"}})


def test_tpe_and_random_run_max_iterations_and_say_why_they_stopped():
    anchor = Observation("t", [8, 8], 0.5, None)
    exact = [Observation("t", [r, 8], 0.5, None, predicted=0.5) for r in (2, 4, 6)]  # predictions spot on
    state = SearchState("t", None, [1, 1], None, [anchor, *exact])
    assert converged(state, SearchConfig())
    for proposer in ("tpe", "random"):
        config = SearchConfig(proposer=proposer, max_iterations=3)
        assert not converged(state, config)
        reason = stop_reason(state, config)
        assert reason.startswith("max_iterations reached") and "does not apply" in reason and proposer in reason


def test_the_job_option_reaches_the_propose_step(tmp_path):
    from rankadaptor.job import job_from_json, job_to_json, load_job
    from rankadaptor.search.state import save_state
    from rankadaptor.steps.search import propose as propose_step
    from rankadaptor.trial import TrialContext

    context = TrialContext("m" * 64, {"ratio": 0.2}, [300, 250, 250, 300], [[1.0, 0.5]] * 4, "d" * 64)
    proposals = {}
    for proposer in PROPOSERS:
        job = job_from_json(job_to_json(load_job(None, {"search": {"num_samples": 200, "proposer": proposer}})))
        assert job.search_config(context.cost_per_rank).proposer == proposer
        anchor = Observation(job.target_task, [job.baseline_rank] * 4, -2.5, context.layer_features)
        surrogate = new_surrogate(job.surrogate_config(), job.search.candidates, 4, 2)
        save_state(SearchState(job.target_task, surrogate, context.cost_per_rank, context.layer_features, [anchor]),
                   context, str(tmp_path / proposer / "state"))
        proposals[proposer] = propose_step(job, str(tmp_path / proposer / "state"), str(tmp_path / proposer / "out"))
        config = job.search_config(context.cost_per_rank)
        state = SearchState(job.target_task, surrogate, context.cost_per_rank, context.layer_features, [anchor])
        assert proposals[proposer] == to_dict(propose(state, config))  # the step used this proposer
    assert len({tuple(p["rank_vector"]) for p in proposals.values()}) >= 2  # the proposers differ
