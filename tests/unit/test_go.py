"""The go/no-go (search.go): a real gain goes on to search, a flat one stops; always/never; the cost section."""

import dataclasses
import itertools

import numpy as np
import pytest

from rankadaptor.config import from_dict
from rankadaptor.errors import UserError
from rankadaptor.search.config import SearchConfig
from rankadaptor.search.cost import cost_markdown, cost_section
from rankadaptor.search.go import decide, decision_line
from rankadaptor.trial import Observation, TrialKey, fidelity, step_fraction

NOISE = 0.005  # one cheap trial's seed-to-seed sd in these synthetic jobs
CONFIG = SearchConfig(threshold=NOISE)  # the job states its trial noise, as search.threshold asks


def synthetic(gain: float, seed: int) -> tuple[list[float], list[float]]:
    """Cheap scores of uniform at 2 seeds and of 4 random vectors, when the best vector gains `gain`: the
    'additive' family (a gain exists) and the 'flat' one (gain 0)."""
    rng = np.random.default_rng(seed)
    uniform = (0.50 + NOISE * rng.standard_normal(2)).tolist()
    candidates = (0.50 + np.linspace(0, gain, 4) + NOISE * rng.standard_normal(4)).tolist()
    return uniform, candidates


def test_a_real_gain_goes_on_to_search():
    decisions = [decide(CONFIG, *synthetic(0.08, seed), trials_skipped=10, full_trial_seconds=60.0)
                 for seed in range(20)]
    assert all(d.go for d in decisions)
    assert all(d.seconds_not_spent == 0 and d.trials_skipped == 0 for d in decisions)
    assert decision_line(decisions[0]).startswith("go/no-go: go: headroom +0.0")


def test_a_flat_job_stops_and_says_what_it_saved():
    decisions = [decide(CONFIG, *synthetic(0.0, seed), trials_skipped=10, full_trial_seconds=60.0)
                 for seed in range(20)]
    assert sum(d.go for d in decisions) <= 2  # a false go at most rarely (z = 2 standard errors)
    stopped = next(d for d in decisions if not d.go)
    assert stopped.seconds_not_spent == 600.0 and stopped.fidelity == "short:0.34"
    assert stopped.headroom <= stopped.needed and stopped.noise >= CONFIG.threshold
    line = decision_line(stopped)
    assert "no-go: headroom" in line and "needed" in line and "about 600 s of recovery not spent (10 trials x 60.0 s)" in line


def test_the_noise_never_falls_below_the_jobs_threshold():
    # two seeds that agree by chance: the job's stated noise (threshold) still holds the bar
    decision = decide(SearchConfig(threshold=0.01), [0.5, 0.5], [0.51], trials_skipped=3, full_trial_seconds=1.0)
    assert decision.noise == 0.01 and not decision.go


def test_always_and_never_need_no_cheap_trials():
    always = decide(dataclasses.replace(CONFIG, go="always"), [], [], trials_skipped=10, full_trial_seconds=5.0)
    never = decide(dataclasses.replace(CONFIG, go="never"), [], [], trials_skipped=10, full_trial_seconds=5.0)
    assert always.go and always.seconds_not_spent == 0
    assert not never.go and never.seconds_not_spent == 50.0 and never.headroom is None
    with pytest.raises(UserError, match="2 or more seeds"):
        decide(CONFIG, [0.5], [0.6], trials_skipped=1, full_trial_seconds=None)


@pytest.mark.parametrize("options, message", [
    ({"go": "maybe"}, "go='maybe' is not accepted"), ({"cheap_fraction": 1.0}, "cheap_fraction=1.0 must be in"),
    ({"go_candidates": 0}, "go_candidates=0"), ({"go_seeds": 1}, "go_seeds=1"), ({"go_z": -1.0}, "go_z=-1.0")])
def test_bad_go_options_are_one_line(options, message):
    with pytest.raises(UserError, match=message):
        from_dict(SearchConfig, options)


def test_fidelity_names_and_keys():
    assert fidelity(1.0) == "full" and fidelity(0.34) == "short:0.34" and step_fraction("short:0.34") == 0.34
    with pytest.raises(UserError, match="fidelity='half' is not accepted"):
        step_fraction("half")
    full = TrialKey("m", "a" * 64, {}, "t", "select", [8, 8], {}, "d" * 64, 0)
    short = dataclasses.replace(full, fidelity="short:0.34")
    assert short.id != full.id and "fidelity" not in full.params()  # a full trial keeps its earlier id


def test_cost_section_sums_seconds_by_fidelity():
    trials = [Observation("t", [8, 8], 0.5, cost=10.0),  # the uniform anchor: not search
              Observation("t", [4, 12], 0.51, cost=11.0, predicted=0.5),
              Observation("t", [12, 4], 0.49, cost=12.0, predicted=0.5)]
    go = {"go": True, "mode": "auto", "reason": "go: ...", "uniform_scores": [0.5, 0.5], "candidate_scores": [0.5],
          "cheap_seconds": 9.0, "fidelity": "short:0.34", "seconds_not_spent": 0.0, "trials_skipped": 0}
    cost = cost_section(trials, 10.0, go, bootstrap_seconds=[10.0, 10.0])
    assert cost["by_fidelity"] == {"short:0.34": 9.0, "full": 43.0} and cost["search_seconds"] == 52.0
    assert cost["ratio_to_uniform"] == 5.2 and cost["stages"]["go/no-go"]["trials"] == 3
    stopped = cost_section(trials[:1], 10.0, {**go, "go": False, "seconds_not_spent": 70.0, "trials_skipped": 7})
    assert stopped["by_fidelity"] == {"short:0.34": 9.0} and stopped["seconds_not_spent"] == 70.0
    text = cost_markdown(stopped)
    assert "The search spent 9.0 s of trials (short:0.34 9.0 s) against 10.0 s for the uniform adapter alone" in text
    assert "70.0 s of recovery not spent (7 trials skipped)" in text


def test_where_a_gain_exists_the_go_no_go_says_go_the_loop_finds_it_and_it_is_registered():
    """The 'additive' family through the product's own functions: the cheap trials (go/no-go), the search
    loop (search.loop.run_loop), the paired report-split comparison and champion.choose_adapter."""
    from rankadaptor.champion import SEARCHED, choose_adapter
    from rankadaptor.search.loop import SearchState, run_loop
    from rankadaptor.search.surrogate import SurrogateConfig, new_surrogate
    from rankadaptor.stats import paired_bootstrap
    from rankadaptor.widths import lora_parameters

    cost, weights = [100, 60, 40, 80], np.array([3.0, -1.0, 2.0, -2.0]) / 400  # a rank moved to layers 0, 2 pays
    config = SearchConfig(budget=8 * sum(cost), num_samples=400, threshold=NOISE, max_iterations=6)
    rng = np.random.default_rng(0)

    def true_score(vector) -> float:
        return 0.5 + float(np.dot(np.asarray(vector) - 8, weights))

    def trial(vector) -> float:
        return true_score(vector) + NOISE * rng.standard_normal()

    uniform = [8] * 4
    candidates = [[12, 6, 12, 2], [10, 8, 10, 4], [4, 10, 4, 12], [8, 12, 6, 6]]
    assert all(lora_parameters(v, cost) <= config.budget for v in candidates)
    decision = decide(config, [trial(uniform) for _ in range(2)], [trial(v) for v in candidates], 6, 60.0)
    assert decision.go, decision.reason

    state = SearchState("t", new_surrogate(SurrogateConfig(adapt_steps=5), [2, 4, 6, 8, 10, 12]), cost)
    state, _ = run_loop(trial, state, config, progress=False)
    best = max(state.observations, key=lambda o: o.score).rank_vector
    rows = 400  # the report split: per-row scores of the best searched vector and of uniform on the same rows

    def report_rows(vector) -> dict:
        scores = true_score(vector) + 0.05 * np.random.default_rng(1).standard_normal(rows)
        return {"t": {"rows": scores.tolist(), "row_ids": list(range(rows))}}

    diff, low, high = paired_bootstrap(report_rows(best), report_rows(uniform))
    assert choose_adapter(diff, low, high, noise=decision.noise).register == SEARCHED, (best, diff, low)


# ----------------------------------------------------------------------------- the screening design (job's)

def _screen_job(gain_per_rank: np.ndarray, seed: int, runs: int = 8):
    """Cheap trials of an additive job (score linear in each layer's rank) on 6 equal-cost layers: uniform at 2
    seeds and `runs` screening vectors, each with NOISE; gain_per_rank 0 is the flat family."""
    from rankadaptor.search.go import screening_vectors

    config = SearchConfig(threshold=NOISE, go_candidates=runs)
    cost, uniform = [1] * 6, [8] * 6
    design = screening_vectors(config, cost, uniform, runs)
    rng = np.random.default_rng(seed)

    def score(v):
        return 0.5 + float(np.dot(np.asarray(v) - 8, gain_per_rank)) + NOISE * rng.standard_normal()

    candidates = [list(v) for v in itertools.product([4, 6, 8, 10, 12], repeat=6) if sum(v) <= 48]
    return config, uniform, [score(uniform) for _ in range(2)], design, [score(v) for v in design], candidates


def test_screening_vectors_move_each_layer_up_and_down_within_the_budget():
    from rankadaptor.search.go import screening_vectors

    config = SearchConfig(budget=8 * 10)
    design = screening_vectors(config, [1, 2, 3, 4], [8] * 4, 14)
    assert len(design) == len({tuple(v) for v in design}) >= 10 and [8] * 4 not in design
    assert all(np.dot(v, [1, 2, 3, 4]) <= 80 for v in design)
    for layer in range(4):  # every layer is seen both above and below uniform
        assert {v[layer] > 8 for v in design} == {True, False} and any(v[layer] < 8 for v in design)
    assert screening_vectors(SearchConfig(searched_layers=[1, 2]), [1] * 4, [8] * 4, 10) == \
        [[8, 4, 12, 8], [8, 12, 4, 8]]  # the fixed layers stay; 2 layers: 2 balanced rows (+ fold-over)


def test_the_screen_finds_a_gain_spread_over_layers_and_names_its_finalist():
    from rankadaptor.search.go import decide_screen

    # one layer moved 4 ranks gains at most 1.5 noise sd; the best vector, all six moved, 6 sd
    weights = np.array([3.0, -1.0, 2.0, -2.0, 1.0, -3.0]) * NOISE / 8
    decisions = [decide_screen(*_screen_job(weights, seed), trials_skipped=5, full_trial_seconds=10.0)
                 for seed in range(20)]
    assert sum(d.go for d in decisions) >= 18, [d.reason for d in decisions if not d.go][:1]
    best = [12, 4, 12, 4, 12, 4]  # the true best budget vector: up where the weight is positive
    assert sum(d.finalists[0] == best for d in decisions if d.go) >= 16
    assert decisions[0].reason.startswith("go: headroom +") and "widened for the best of 5 directions" in \
        decisions[0].reason  # 6 layers at a fixed budget: 5 contrasts
    assert all(d.seconds_not_spent == 0 for d in decisions if d.go)


def test_the_screen_on_a_flat_job_says_no_go():
    from rankadaptor.search.go import decide_screen

    decisions = [decide_screen(*_screen_job(np.zeros(6), seed), trials_skipped=5, full_trial_seconds=10.0)
                 for seed in range(40)]
    assert sum(d.go for d in decisions) <= 2  # the Scheffe bar: about 2% false go
    stopped = decisions[0]
    assert stopped.headroom <= stopped.needed and stopped.seconds_not_spent == 50.0
    assert len(stopped.uniform_scores) == 2 and len(stopped.candidate_scores) == 8


def test_the_scheffe_bar_is_go_z_for_one_direction_and_wider_for_more():
    from rankadaptor.search.go import scheffe_z

    assert scheffe_z(2.0, 0) == 2.0
    assert 2.0 < scheffe_z(2.0, 1) < 2.4 < scheffe_z(2.0, 5) < 4.0


def test_bad_go_step_is_one_line():
    with pytest.raises(UserError, match="go_step=0 must be in"):
        from_dict(SearchConfig, {"go_step": 0})


def test_the_jobs_cheap_plan_is_uniform_at_its_seeds_then_the_screening_design():
    from rankadaptor.flows.go import cheap_plan, screen_candidates
    from rankadaptor.job import load_job
    from rankadaptor.trial import TrialContext

    job = load_job()
    context = TrialContext("a" * 64, {}, [300, 200, 200, 300], [[1.0]] * 4, "d" * 64)
    keys = cheap_plan(job, context)
    assert [k.rank_vector for k in keys[:2]] == [[8] * 4] * 2 and [k.seed for k in keys[:2]] == [job.seed, job.seed + 1]
    design = [k.rank_vector for k in keys[2:]]
    assert len(keys) == 2 + job.search.go_candidates and all(k.fidelity == "short:0.34" for k in keys)
    assert all(np.dot(v, context.cost_per_rank) <= 8 * 1000 for v in design) and [8] * 4 not in design
    candidates = screen_candidates(job, context, design)
    assert candidates and all(min(map(min, design)) <= r <= max(map(max, design)) for v in candidates for r in v)


def test_the_screens_go_sends_its_finalists_first_and_the_planted_gain_is_registered():
    """The screen's go (decide_screen) -> its finalists measured first at full fidelity (search.loop.run_loop on a
    state queuing them) -> the loop -> the paired report-split rule registers the planted-gain vector."""
    from rankadaptor.champion import SEARCHED, choose_adapter
    from rankadaptor.search.go import decide_screen
    from rankadaptor.search.loop import SearchState, run_loop
    from rankadaptor.search.surrogate import SurrogateConfig, new_surrogate
    from rankadaptor.stats import paired_bootstrap
    from rankadaptor.trial import Observation

    weights = np.array([3.0, -1.0, 2.0, -2.0, 1.0, -3.0]) * NOISE / 8
    config, uniform, *cheap = _screen_job(weights, seed=0)
    decision = decide_screen(config, uniform, *cheap, trials_skipped=5, full_trial_seconds=10.0)
    assert decision.go and len(decision.finalists) == 2, decision.reason
    rng = np.random.default_rng(1)

    def true_score(vector) -> float:
        return 0.5 + float(np.dot(np.asarray(vector) - 8, weights))

    full = dataclasses.replace(config, budget=48, num_samples=300, max_iterations=4)
    state = SearchState("t", new_surrogate(SurrogateConfig(adapt_steps=5), full.candidates), [1] * 6, None,
                        [Observation("t", uniform, true_score(uniform))], decision.finalists)
    state, trials = run_loop(lambda v: true_score(v) + NOISE * rng.standard_normal(), state, full, progress=False)
    assert [t["rank_vector"] for t in trials[:2]] == decision.finalists and len(trials) == 4
    assert len({tuple(t["rank_vector"]) for t in trials}) == 4  # each finalist once, then the proposer's own
    best = max(state.measured(), key=lambda o: o.score).rank_vector
    assert true_score(best) - true_score(uniform) > 4 * NOISE, best  # the planted gain, not noise
    rows = 400

    def report_rows(vector) -> dict:
        scores = true_score(vector) + 0.05 * np.random.default_rng(2).standard_normal(rows)
        return {"t": {"rows": scores.tolist(), "row_ids": list(range(rows))}}

    diff, low, high = paired_bootstrap(report_rows(best), report_rows(uniform))
    assert choose_adapter(diff, low, high, noise=decision.noise).register == SEARCHED, (best, diff, low)


def test_the_decision_says_what_earlier_tasks_screens_on_this_model_said(tmp_path, monkeypatch):
    """A real bank (sqlite MLflow): task A's screen has an additive gain, task B's is flat. B's decision is its
    own (no-go) and names A's screen as one that showed headroom; A's decision is the same with B's rows banked."""
    from rankadaptor.flows.go import cheap_plan, decide_from_bank
    from rankadaptor.flows.trials import record
    from rankadaptor.job import load_job
    from rankadaptor.trial import TrialContext

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    context = TrialContext("a" * 64, {"mode": "width"}, [100] * 4, [[0.0]] * 4, "d" * 64)
    rng = np.random.default_rng(0)

    def screened(task: str, slope: float):
        job = load_job(None, {"target_task": task, "source_tasks": ["ppl:hellaswag"], "search": {"threshold": NOISE}})
        for key in cheap_plan(job, context):
            gain = slope * sum(r - job.baseline_rank for r in key.rank_vector[:2])  # layers 0 and 1 reward rank
            record(job, context, key, 0.5 + gain + NOISE * rng.standard_normal(), "go", seconds=1.0)
        return job

    a = screened("ppl:piqa", 0.01)
    alone = decide_from_bank(a, context, 10.0)
    assert alone.go and alone.earlier == []
    b = screened("ppl:boolq", 0.0)
    decision = decide_from_bank(b, context, 10.0)
    assert not decision.go and [e["task"] for e in decision.earlier] == ["ppl:piqa"] and decision.earlier[0]["go"]
    assert decision_line(decision).endswith(
        "; earlier tasks on this model and pruning: 1 of 1 screens showed headroom beyond their noise (ppl:piqa)")
    again = decide_from_bank(a, context, 10.0)
    assert (again.go, again.headroom, again.needed) == (alone.go, alone.headroom, alone.needed)
    assert [(e["task"], e["go"]) for e in again.earlier] == [("ppl:boolq", False)]
