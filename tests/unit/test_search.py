"""Budgeted proposal, update/convergence and the search loop."""

import dataclasses

import numpy as np
import pytest

from rankadaptor.config import from_dict
from rankadaptor.errors import UserError
from rankadaptor.search.config import SearchConfig
from rankadaptor.search.loop import (
    Proposal,
    SearchState,
    converged,
    load_search,
    propose,
    run_loop,
    save_search,
    update,
)
from rankadaptor.search.sampling import sample_rank_vectors
from rankadaptor.search.surrogate import SurrogateConfig, new_surrogate
from rankadaptor.widths import budget, lora_cost_per_rank, lora_parameters

COST = [100, 60, 40, 80, 50, 100]  # LoRA parameters per unit rank of 6 layers


def fresh_state(cost=COST, task="t"):
    return SearchState(task, new_surrogate(SurrogateConfig(adapt_steps=5), [2, 4, 6, 8, 10, 12]), list(cost))


@pytest.mark.parametrize("values, match", [({"threshold": -0.1}, "never be met"), ({"threshold": 0.0}, "never be met"),
                                           ({"threshold": float("inf")}, "never be met"), ({"kappa": -1.0}, "kappa"),
                                           ({"candidates": []}, "candidates"), ({"num_samples": 0}, "num_samples"),
                                           ({"searched_layers": [1, 1]}, "searched_layers"),
                                           ({"local_fraction": 1.5}, "local_fraction")])
def test_config_rejects_absurd_settings(values, match):
    with pytest.raises(UserError, match=match):
        from_dict(SearchConfig, values)


def test_samples_respect_budget_candidates_and_fixed_layers_even_when_tight():
    config = SearchConfig(budget=6 * sum(COST), searched_layers=[1, 2, 3, 4], num_samples=3000)
    parents = [[8, 2, 2, 4, 2, 8], [8, 12, 2, 2, 2, 8], [1, 2, 3, 4, 5, 6]]  # the last is not valid: ignored
    vectors = sample_rank_vectors(config, COST, np.random.default_rng(0), parents)
    assert len(vectors) > 50 and len(np.unique(vectors, axis=0)) == len(vectors)
    assert (vectors @ np.asarray(COST) <= config.budget).all()
    assert np.isin(vectors[:, 1:5], config.candidates).all() and (vectors[:, [0, 5]] == 8).all()
    assert budget(COST, SearchConfig().budget) == 8 * sum(COST)


def test_a_budget_that_cannot_be_met_is_refused_clearly():
    with pytest.raises(UserError, match="cannot be met"):
        sample_rank_vectors(SearchConfig(budget=sum(COST)), COST, np.random.default_rng(0))
    with pytest.raises(UserError, match="layer >= 6"):
        sample_rank_vectors(SearchConfig(searched_layers=[6]), COST, np.random.default_rng(0))


def test_loop_proposes_only_budgeted_new_vectors_and_stops_at_max_iterations():
    config = SearchConfig(budget=6 * sum(COST), num_samples=500, threshold=1e-12, max_iterations=6, kappa=1.0)
    seen = []

    def trial(vector):
        assert lora_parameters(vector, COST) <= config.budget and set(vector) <= set(config.candidates)
        seen.append(tuple(vector))
        return float(np.dot(vector, [3, 1, 2, 1, 1, 2]) / 100)

    state, history = run_loop(trial, fresh_state(), config, progress=False)
    assert len(history) == 6 and len(set(seen)) == 6 and len(state.observations) == 6
    assert [h["iteration"] for h in history] == list(range(1, 7))
    assert history[-1]["best"] == max(h["measured"] for h in history)
    assert all(h["abs_error"] == pytest.approx(abs(h["predicted"] - h["measured"])) for h in history)


def test_loop_stops_when_the_prediction_is_within_threshold():
    state, history = run_loop(lambda v: 0.5, fresh_state(), SearchConfig(num_samples=200, threshold=1e9),
                              progress=False)
    assert len(history) == 3  # patience: the last 3 predictions must be within the threshold
    config = SearchConfig(num_samples=200, threshold=0.002, patience=1)
    proposal = propose(fresh_state(), config)
    assert update(fresh_state(), proposal, proposal.predicted + 0.001, config)[1].converged
    _, outcome = update(fresh_state(), proposal, proposal.predicted - 0.003, config)
    assert not outcome.converged and outcome.abs_error == pytest.approx(0.003)
    assert outcome.best.rank_vector == proposal.rank_vector and outcome.best.predicted == proposal.predicted


def test_no_vector_is_measured_twice_and_an_exhausted_space_is_reported():
    config = SearchConfig(candidates=[2, 4], searched_layers=[0, 1], budget=10**6, num_samples=200,
                          threshold=1e-12, max_iterations=4)
    state, history = run_loop(lambda v: float(sum(v)), fresh_state([10, 10, 10]), config, progress=False)
    assert sorted(tuple(h["rank_vector"]) for h in history) == [(2, 2, 8), (2, 4, 8), (4, 2, 8), (4, 4, 8)]
    with pytest.raises(UserError, match="exhausted"):
        propose(state, config)
    with pytest.raises(UserError, match="measured already"):
        update(state, Proposal([2, 4, 8], 0.0, 0.0, 0), 1.0, config)


def test_search_state_round_trips_and_proposes_the_same_vector(tmp_path):
    config = SearchConfig(num_samples=300, threshold=1e-12, max_iterations=3)
    state, _ = run_loop(lambda v: float(np.dot(v, COST)) / 1e4, fresh_state(), config, progress=False)
    save_search(state, str(tmp_path / "search"))
    loaded = load_search(str(tmp_path / "search"))
    assert loaded.observations == state.observations and loaded.cost_per_rank == COST
    assert propose(loaded, config) == propose(state, config)


def test_lora_cost_per_rank_counts_what_peft_trains(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from rankadaptor.models.loading import load_model
    from rankadaptor.widths import attn_head_dim, layer_widths

    model, _ = load_model(str(tiny_model_dir))
    cost = lora_cost_per_rank(layer_widths(model), model.config.hidden_size, attn_head_dim(model.config))
    ranks = [2, 12, 4, 8]
    modules = r"self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj"
    lora = LoraConfig(r=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                      rank_pattern={rf"model\.layers\.{i}\.({modules})": r for i, r in enumerate(ranks)})
    peft_model = get_peft_model(model, lora)
    trained = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trained == lora_parameters(ranks, cost)


def test_stopping_rule_ignores_one_lucky_trial_after_poor_predictions():
    """Noise sd 0.01 (the threshold): two trials predicted 0.05 off, then one predicted within 0.001 by
    luck. The old rule (last |error| < threshold) stopped here; the noise-aware rule must not, and must
    stop once the last `patience` predictions are all within the noise."""
    from rankadaptor.trial import Observation

    config = SearchConfig(threshold=0.01, patience=3)
    state = fresh_state()
    trials = [([8, 8, 8, 8, 8, 8], 0.50, None), ([4, 8, 8, 12, 8, 8], 0.52, 0.57),
              ([8, 4, 8, 8, 12, 8], 0.49, 0.44), ([8, 8, 4, 8, 8, 12], 0.51, 0.511)]
    observations = [Observation("t", v, score, predicted=pred) for v, score, pred in trials]
    lucky = dataclasses.replace(state, observations=observations)
    assert abs(observations[-1].predicted - observations[-1].score) < config.threshold
    assert not converged(lucky, config)
    calm = [*observations, Observation("t", [12, 8, 8, 4, 8, 8], 0.505, predicted=0.50),
            Observation("t", [8, 12, 8, 8, 4, 8], 0.50, predicted=0.508)]
    assert converged(dataclasses.replace(state, observations=calm), config)
    assert not converged(dataclasses.replace(state, observations=calm[:1]), config)  # the anchor alone: never


def test_the_stop_reason_says_whether_the_threshold_was_met_or_max_iterations_ran_out():
    from rankadaptor.search.config import SearchConfig
    from rankadaptor.search.loop import SearchState, stop_reason
    from rankadaptor.trial import Observation

    anchor = Observation("t", [8, 8], -2.5)  # the uniform baseline: no prediction, not counted
    close = [Observation("t", [v, 8], -2.4, predicted=-2.4 + 0.001) for v in (2, 4, 6)]
    far = [Observation("t", [v, 8], -2.4, predicted=-2.0) for v in (2, 4, 6)]
    config = SearchConfig(threshold=0.005, patience=3, max_iterations=3)
    met = stop_reason(SearchState("t", None, [1, 1], None, [anchor, *close]), config)
    assert met.startswith("threshold met: RMS prediction error of the last 3 trials 0.0010 < threshold 0.0050")
    ran_out = stop_reason(SearchState("t", None, [1, 1], None, [anchor, *far]), config)
    assert ran_out.startswith("max_iterations reached: 3 search trials (max_iterations=3)")
