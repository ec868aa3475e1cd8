"""The performance model: data model, meta-pretraining, online adaptation, storage, ranking quality."""

import json

import numpy as np
import pytest

from rankadaptor.config import from_dict, to_dict
from rankadaptor.errors import UserError
from rankadaptor.search.config import SearchConfig
from rankadaptor.search.sampling import sample_rank_vectors
from rankadaptor.search.surrogate import (
    SurrogateConfig,
    adapt,
    group_key,
    load_surrogate,
    meta_pretrain,
    new_surrogate,
    predict,
    predict_observations,
    ranking_quality,
    save_surrogate,
)
from rankadaptor.trial import Observation

CANDIDATES = [2, 4, 6, 8, 10, 12]


def related_tasks(seed, layers=8, source_tasks=3, per_source=30, target_obs=66):
    """Additive scores over `layers` layers: source tasks share the target's per-layer weights up to noise
    (related tasks on one model), so meta-pretraining has something to transfer."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 1, layers)
    def task(name, n, noise):
        w = weights + noise * rng.normal(0, 1, layers)
        ranks = rng.choice(CANDIDATES, size=(n, layers))
        return [Observation(name, [int(r) for r in row], float(row @ w)) for row in ranks]
    sources = [o for k in range(source_tasks) for o in task(f"task{k}", per_source, 0.3)]
    return sources, task("target", target_obs, 0.0)


def test_observation_round_trips_through_json_and_is_checked():
    obs = Observation("boolq", [8, 4, 12], 0.61, [[1.0, 0.5], [0.7, 0.5], [1.0, 1.0]], cost=3.5, predicted=0.6)
    assert from_dict(Observation, json.loads(json.dumps(to_dict(obs)))) == obs
    with pytest.raises(UserError, match="score"):
        from_dict(Observation, {"task": "boolq", "rank_vector": [8], "score": float("nan")})
    with pytest.raises(UserError, match="layer_features"):
        from_dict(Observation, {"task": "boolq", "rank_vector": [8, 8], "score": 0.5, "layer_features": [[1.0]]})
    with pytest.raises(UserError, match="unknown option"):
        from_dict(Observation, {"task": "boolq", "rank_vector": [8], "score": 0.5, "acc": 1})


@pytest.mark.parametrize("values, match", [({"feature_mode": "rank"}, "feature_mode"), ({"hidden": []}, "hidden"),
                                           ({"ensemble": 0}, "ensemble"), ({"inner_lr": 0.0}, "inner_lr")])
def test_config_rejects_bad_values(values, match):
    with pytest.raises(UserError, match=match):
        from_dict(SurrogateConfig, values)


@pytest.mark.slow
def test_meta_pretraining_ranks_a_new_related_task_better_than_no_meta_pretraining():
    gains = []
    for seed in (0, 1, 2):
        sources, trials = related_tasks(seed)
        taus = {}
        for meta in (False, True):
            state = new_surrogate(SurrogateConfig(seed=seed, meta_iterations=80), CANDIDATES, num_layers=8)
            if meta:
                state = meta_pretrain(state, sources, progress=False)
                assert state.source_tasks == ["task0", "task1", "task2"] and state.fit_loss < 1.0
            for n in range(1, 7):  # online, one trial at a time as in the search
                state = adapt(state, trials[:n], "target")
            taus[meta] = ranking_quality(state, trials[6:], "target")["kendall_tau"]
        gains.append(taus[True] - taus[False])
    assert np.mean(gains) > 0.1, gains


def test_online_adaptation_moves_the_prediction_towards_the_observed_point():
    sources, trials = related_tasks(3, target_obs=6)
    state = new_surrogate(SurrogateConfig(seed=3, meta_iterations=40), CANDIDATES, num_layers=8)
    state = meta_pretrain(state, sources, progress=False)
    state = adapt(state, trials[:5], "target")
    spread = state.task_stats["target"][1]
    surprise = Observation("target", trials[5].rank_vector, trials[5].score + 3 * spread)
    before = predict_observations(state, [surprise])[0]
    stats_only = adapt(state, [*trials[:5], surprise], "target", steps=0)  # renormalised, weights unchanged
    adapted = adapt(state, [*trials[:5], surprise], "target")
    after, after_stats_only = (predict_observations(s, [surprise])[0] for s in (adapted, stats_only))
    assert abs(after - surprise.score) < 0.9 * abs(after_stats_only - surprise.score)
    assert abs(after - surprise.score) < abs(before - surprise.score)
    assert adapted.task_stats["target"][2] == 6


@pytest.mark.parametrize("mode", ["ranks", "ranks+structure"])
def test_save_load_round_trip_gives_identical_predictions(tmp_path, mode):
    sources, trials = related_tasks(4, per_source=10, target_obs=3)
    state = new_surrogate(SurrogateConfig(feature_mode=mode, meta_iterations=5), CANDIDATES, num_layers=8)
    state = adapt(meta_pretrain(state, sources, progress=False), trials, "target")
    save_surrogate(state, str(tmp_path / "surrogate"))
    assert sorted(p.name for p in (tmp_path / "surrogate").iterdir()) == [
        "manifest.json", "surrogate.json", "surrogate.safetensors"]
    meta = json.loads((tmp_path / "surrogate" / "surrogate.json").read_text())
    assert meta["config"]["feature_mode"] == mode and meta["input_scaling"]["rank_range"] == [2, 12]
    assert meta["source_tasks"] == ["task0", "task1", "task2"] and set(meta["normalisation"]) >= {"target", "task0"}
    loaded = load_surrogate(str(tmp_path / "surrogate"))
    vectors = sample_rank_vectors(SearchConfig(num_samples=200), [1] * 8, np.random.default_rng(0))
    for a, b in zip(predict(state, vectors, None, "target"), predict(loaded, vectors, None, "target")):
        np.testing.assert_array_equal(a, b)


def test_load_refuses_what_is_not_a_surrogate(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(UserError):
        load_surrogate(str(tmp_path / "x"))


def test_structure_input_transfers_across_layer_counts_and_ranks_input_says_it_cannot():
    rng = np.random.default_rng(0)

    def observations(task, layers, n):
        features = rng.random((layers, 2)).round(3).tolist()
        return [Observation(task, rng.choice(CANDIDATES, layers).tolist(), float(rng.random()), features)
                for _ in range(n)]

    mixed = observations("a", 6, 8) + observations("b", 9, 8)
    state = meta_pretrain(new_surrogate(SurrogateConfig(meta_iterations=5), CANDIDATES, num_features=2), mixed,
                          progress=False)
    mean, std = predict(state, rng.choice(CANDIDATES, (4, 7)), rng.random((7, 2)))
    assert mean.shape == std.shape == (4,) and np.isfinite(mean).all() and (std >= 0).all()
    ranks_only = new_surrogate(SurrogateConfig(feature_mode="ranks", meta_iterations=5), CANDIDATES, num_layers=6)
    with pytest.raises(UserError, match="ranks\\+structure"):
        meta_pretrain(ranks_only, mixed, progress=False)
    with pytest.raises(UserError, match="structural features"):
        predict(state, rng.choice(CANDIDATES, (4, 7)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learns_per_layer_effects_of_an_additive_score_held_out(seed):
    """A noiseless additive score with random per-layer weights over 32-layer rank vectors: 40 observations
    must order 200 held-out vectors with Kendall tau >= 0.8 (a centred ridge regression reaches ~0.99;
    the mean-pooled encoder alone reached 0.16-0.18)."""
    from scipy.stats import kendalltau

    layers, candidates = 32, [2, 4, 6, 8, 10, 12]
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 1, layers)
    ranks = rng.choice(candidates, size=(240, layers))
    scores = ranks @ weights
    observations = [Observation("t", [int(r) for r in row], float(v)) for row, v in zip(ranks, scores)]
    train, held_out = observations[:40], observations[40:]
    state = adapt(new_surrogate(SurrogateConfig(seed=seed), candidates, num_layers=layers), train, "t", steps=400)
    assert ranking_quality(state, held_out, "t")["kendall_tau"] >= 0.8
    centred = ranks[:40] - ranks[:40].mean(axis=0)
    ridge = np.linalg.solve(centred.T @ centred + 0.1 * np.eye(layers), centred.T @ (scores[:40] - scores[:40].mean()))
    assert kendalltau(ranks[40:] @ ridge, scores[40:]).statistic > 0.95  # the task is learnable from 40 points


def test_meta_pretraining_skips_thin_and_constant_groups_and_reports_a_held_out_loss():
    rng = np.random.default_rng(0)
    vectors = rng.choice([2, 4, 8], size=(24, 4)).tolist()
    good = [Observation("a", v, float(np.dot(v, [1, 2, 3, 4])), group="m1") for v in vectors]
    same_task_other_model = [Observation("a", v, float(np.dot(v, [1, 2, 3, 4]) * 10), group="m2") for v in vectors]
    thin = [Observation("b", v, 1.0, group="m1") for v in vectors[:2]]
    constant = [Observation("c", v, 0.5, group="m1") for v in vectors]
    state = new_surrogate(SurrogateConfig(meta_iterations=30), [2, 4, 8], num_layers=4)
    with pytest.warns(UserWarning, match="skipped 2 group"):
        meta = meta_pretrain(state, good + same_task_other_model + thin + constant, progress=False)
    assert meta.source_tasks == ["m1::a", "m2::a"]  # grouped by (model, task), z-scored apart
    assert meta.task_stats["m2::a"][1] == pytest.approx(10 * meta.task_stats["m1::a"][1])
    assert meta.fit_loss is not None and np.isfinite(meta.fit_loss)
    with pytest.warns(UserWarning, match="no usable source group"):
        assert meta_pretrain(state, thin, progress=False) is state


def test_ensemble_members_disagree_away_from_the_data():
    rng = np.random.default_rng(0)
    vectors = rng.choice([2, 4, 8], size=(12, 4)).tolist()
    obs = [Observation("t", v, float(np.dot(v, [1, 2, 3, 4]))) for v in vectors]
    state = adapt(new_surrogate(SurrogateConfig(), [2, 4, 8], num_layers=4), obs, "t", steps=200)
    _, std = predict(state, rng.choice([2, 4, 8], size=(50, 4)), None, "t")
    assert (std > 0).all()  # no member collapsed to a constant, no two members identical


def test_meta_pretraining_keeps_each_fidelity_of_a_task_a_group_of_its_own():
    """A short recovery's scores sit at another level than a full one's: z-scored apart, never mixed."""
    full = Observation(task="ppl:piqa", rank_vector=[8, 8], score=-2.0)
    short = Observation(task="ppl:piqa", rank_vector=[8, 8], score=-2.6, fidelity="short:0.34")
    assert group_key(full) == "ppl:piqa" and group_key(short) == "ppl:piqa@short:0.34"
