"""benchmarks/search/search_replay.py on small made-up pools, run as a script (as a user runs it)."""

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

MODULE = "benchmarks.search.search_replay"


def run(*args):
    done = subprocess.run([sys.executable, "-m", MODULE, *map(str, args)], capture_output=True, text=True, cwd=ROOT, check=False,
                          timeout=600)
    return done


def write_pool(path, vectors, scores, flat=False):
    """A pool with one split (select) and one seed; `flat` uses the {split, scores: {task: value}} row form."""
    with path.open("w") as f:
        for v, s in zip(vectors, scores):
            row = {"schema": "rankadaptor-pool/1", "rank_vector": v, "seed": 0, "target_task": "acc"}
            if flat:
                row.update(split="select", scores={"acc": s, "src": -s})
            else:
                row["scores"] = {"select": {"acc": s, "src": -s}}
            f.write(json.dumps(row) + "\n")


def brute_force_random_regret(scores, baseline, trials):
    """Expected regret of random search that measures the baseline first, then trials-1 distinct others,
    averaged over every possible subset."""
    others = [i for i in range(len(scores)) if i != baseline]
    regrets = [max(scores) - max(scores[i] for i in (baseline, *subset))
               for subset in itertools.combinations(others, trials - 1)]
    return float(np.mean(regrets))


@pytest.mark.parametrize("flat", [False, True])
def test_random_search_regret_matches_brute_force(tmp_path, flat):
    rng = np.random.default_rng(3)
    vectors = [[8, 8, 8]] + [list(map(int, v)) for v in rng.choice([2, 4, 6, 12], size=(7, 3))]
    vectors = [list(v) for v in dict.fromkeys(map(tuple, vectors))]
    scores = [float(s) for s in rng.normal(0.5, 0.05, len(vectors))]
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, vectors, scores, flat)
    done = run("--pool", pool, "--methods", "uniform r8,random", "--seeds", 600, "--trials", 4, "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["pool"]["vectors"] == len(vectors) and out["pool"]["layers"] == 3
    for t in (1, 2, 3, 4):
        expected = brute_force_random_regret(scores, 0, t)
        mean, low, high = out["methods"]["random"]["regret"][t - 1]
        assert low <= expected <= high and abs(mean - expected) < 0.02, (t, mean, expected)
        assert out["methods"]["uniform r8"]["regret"][t - 1][0] == pytest.approx(max(scores) - scores[0])
    # each replayed random search measures distinct vectors, uniform r8 first
    first = out["pool"]["rank_vectors"][out["pool"]["baseline_index"]]
    assert first == [8, 8, 8]
    for order in out["methods"]["random"]["orders"]:
        assert order[0] == out["pool"]["baseline_index"] and len(set(order)) == len(order) == 4


@pytest.mark.slow  # every method over a pool (~15 s)
def test_every_method_prints_a_row_and_a_curve_on_a_pool_of_another_depth(tmp_path):
    rng = np.random.default_rng(0)
    vectors = [[8] * 5] + [list(map(int, v)) for v in rng.choice([4, 8, 12], size=(30, 5))]
    vectors = [list(v) for v in dict.fromkeys(map(tuple, vectors))]
    weights = rng.normal(0, 1, 5)
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, vectors, [float(np.dot(v, weights)) for v in vectors])
    done = run("--pool", pool, "--seeds", 2, "--trials", 5, "--png", tmp_path / "curve.png")
    assert done.returncode == 0, done.stderr
    for method in ("uniform r8", "random", "mutation", "optuna TPE", "loop", "loop kappa=1", "paper: ranks-only greedy"):
        assert f"| {method} |" in done.stdout
    assert "regret T=5" in done.stdout and (tmp_path / "curve.png").stat().st_size > 1000


def test_a_pool_without_uniform_r8_is_refused_in_one_line(tmp_path):
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, [[4, 4], [2, 12]], [0.1, 0.2])
    done = run("--pool", pool)
    assert done.returncode != 0 and "no uniform rank-8 vector" in done.stderr and "Traceback" not in done.stderr


def test_equal_cost_replay_stays_within_each_budget_and_prices_fidelities(tmp_path):
    """search_replay --cost on a small synthetic pool with short and full rows: each method spends at most its
    budget, uniform r8 spends one full trial and claims nothing, and a short trial costs its rows' cost_fraction."""
    from benchmarks.search import search_replay, search_synthetic

    path = tmp_path / "additive.jsonl"
    search_synthetic.write_pool(path, "additive", 4, 30, 2, 0.3, seed=1, cheap_corr=0.8)
    fid = search_replay.load_fidelities(str(path))
    assert fid.cost == {"full": 1.0, "short": pytest.approx(search_synthetic.CHEAP_COST)}
    result = search_replay.cost_replay(fid, seeds=2, budgets=(4, 12),
                                       methods=("uniform r8", "TPE + Hyperband", "halving + go/no-go",
                                                "screen + go/no-go"))
    for method, rows in result.items():
        for budget, r in rows.items():
            assert r["cost"][0] <= float(budget) + 1e-9, (method, budget)
            assert r["regret"][0] >= 0
    assert result["uniform r8"]["12"]["cost"][0] == 1.0 and result["uniform r8"]["12"]["p_claim"][0] == 0.0
    assert "halving + go/no-go" in search_replay.cost_table(result, fid, 2)
    # budget 4: uniform full, 2 uniform and 3 screening vectors cheap (0.34 each), a finalist's full trial on a go
    assert 2.7 - 1e-6 <= result["screen + go/no-go"]["4"]["cost"][0] <= 3.7 + 1e-6


def test_the_screen_loop_row_measures_the_screens_finalists_first_within_its_budget(tmp_path, monkeypatch):
    """search_replay --cost's "screen + loop": on a go, the fit's finalists are the first full trials after uniform
    (best first), then the loop; the screen, the finalists and the loop together stay within the budget."""
    import numpy as np

    from benchmarks.search import search_replay, search_synthetic
    from rankadaptor.search import go

    path = tmp_path / "additive.jsonl"
    search_synthetic.write_pool(path, "additive", 6, 60, 2, 0.01, seed=1, cheap_corr=0.999)  # a clear gain
    fid = search_replay.load_fidelities(str(path))
    real, decisions = go.decide_screen, []

    def decide_screen(*args, **kwargs):  # the real decision, kept to compare with what was measured
        decisions.append(real(*args, **kwargs))
        return decisions[-1]

    monkeypatch.setattr(go, "decide_screen", decide_screen)
    meter = search_replay.Meter(fid, np.random.default_rng(0))
    measured, searched = search_replay.cost_screen_loop(fid, 8.0, meter, np.random.default_rng(1), per_task=2)
    assert searched and decisions[0].go and meter.spent <= 8.0 + 1e-9
    vectors = fid.full.vectors.tolist()
    assert list(measured)[:3] == [fid.full.baseline, *(vectors.index(v) for v in decisions[0].finalists)]
    # with the job's confirmation: 3 full trials kept for the loop's 2 best searched vectors and uniform at another
    # seed; the pick is among those three by seed mean, within the budget
    meter = search_replay.Meter(fid, np.random.default_rng(0))
    confirmed, searched = search_replay.cost_screen_loop(fid, 10.0, meter, np.random.default_rng(1), per_task=2,
                                                         confirm=2)
    assert searched and meter.spent <= 10.0 + 1e-9 and len(confirmed) == 3 and fid.full.baseline in confirmed
    for i, (select, _) in confirmed.items():
        assert any(np.isclose(select, (a + b) / 2) for a in fid.full.draws[i] for b in fid.full.draws[i]
                   if a is not b), (i, select)


def test_cost_replay_refuses_a_pool_without_full_rows_in_one_line(tmp_path):
    path = tmp_path / "pool.jsonl"
    write_pool(path, [[8, 8], [4, 12], [12, 4]], [0.5, 0.4, 0.6])
    done = run("--pool", path, "--cost", "--seeds", 1)
    assert done.returncode != 0 and "needs 'full'" in done.stderr and "Traceback" not in done.stderr
