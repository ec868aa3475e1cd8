"""Replay rank searches against a measured pool: is the search worth its trials, on real measurements?

A trial returns the pool's measured score of a vector (one of its recorded seeds, drawn at random when
it has several) and a method may only pick vectors the pool has. Every method starts from uniform rank 8
(the job measures it first, as its baseline) and gets the same number of trials T = 1..max. Methods:

- uniform r8: no search (the simple choice);
- random: the other trials uniformly from the pool, without repeats;
- mutation: a random pool vector at Hamming distance <= 2 of one of the 3 best measured (the search's
  local sampler, without a surrogate);
- optuna TPE: Optuna's TPE sampler over one categorical per layer, its suggestion snapped to the nearest
  unmeasured pool vector (what an Optuna or Katib user would run), through the job's `search.proposer: tpe`
  (search.proposers.tpe_vector);
- loop: the job's search (ranks+structure surrogate, meta-pretrained on the pool's source tasks at the
  job's size: `--bootstrap` vectors per source task; greedy, kappa 0), proposing among unmeasured pool
  vectors with search.propose_from and updating with search.update; "loop kappa=1" adds the ensemble
  spread (UCB);
- paper: ranks-only surrogate, meta-pretrained the same way, greedy.

Reported per method and T: regret = best pool value minus the pool value of the vector the method
would pick (its best measured), on the select split (what the search sees), and the probability that
the pick beats uniform r8 on the report split by more than the measured seed-to-seed noise, each with a
95% bootstrap CI over replay seeds; the probability that the job would claim a gain (register the
pick over uniform r8 by champion.choose_adapter, from the measured report-split difference and the
noise); and for the surrogate loops where the noise-aware stopping rule (search.converged, threshold =
the noise) stops. Pool schema: benchmarks/search/POOL.md.

    python -m benchmarks.search.search_replay --pool benchmarks/search/pool_aidreams260k.jsonl [--json] [--png curve.png]

With --cost, the equal-cost replay instead: each trial is priced at its fidelity's mean `seconds` (a synthetic
row's `cost_fraction` where it has none), budgets in full-trial equivalents, candidates only the vectors with
full rows; methods uniform r8, random, optuna TPE, TPE + Optuna's HyperbandPruner, the loop, search.halving
gated by the go/no-go, the screen (search.halving.screen_search) and the job's path on a go, the screen's
finalists then the loop at full fidelity (COST_METHODS). Results: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rankadaptor.champion import SEARCHED, choose_adapter
from rankadaptor.errors import UserError, check
from rankadaptor.search.config import SearchConfig
from rankadaptor.search.loop import SearchState, converged, pending_finalists, propose_from, update
from rankadaptor.search.proposers import tpe_vector
from rankadaptor.search.sampling import nearest
from rankadaptor.search.surrogate import SurrogateConfig, adapt, meta_pretrain, new_surrogate
from rankadaptor.trial import Observation

SCHEMA = "rankadaptor-pool/1"
REPORT_TS = (5, 10, 20)
METHODS = ("uniform r8", "random", "mutation", "optuna TPE", "loop", "loop kappa=1", "paper: ranks-only greedy")


@dataclass
class Pool:
    vectors: np.ndarray  # [N, L] distinct rank vectors
    draws: list[list[float]]  # per vector: the target's select-split score of each measured seed
    report_draws: list[list[float]]  # per vector: the report-split score of the same seeds
    select: np.ndarray  # [N] mean over seeds, select split (what the search optimises)
    report: np.ndarray  # [N] mean over seeds, report split (select when the pool has no report split)
    sources: dict[str, np.ndarray]  # source task -> [N] select-split score (seed mean; NaN where missing)
    layer_features: list[list[float]] | None
    baseline: int  # index of uniform r8
    noise_select: float  # pooled seed-to-seed sd of the target score
    noise_report: float
    target: str
    seeds_per_vector: np.ndarray
    has_report: bool


def _split_scores(row: dict) -> dict[str, dict[str, float]]:
    """{split: {task: score}} from either schema form: nested scores, or a flat row with `split`."""
    scores = row.get("scores")
    check(isinstance(scores, dict) and scores, f"pool row {row.get('rank_vector')} has no scores")
    if all(isinstance(v, dict) for v in scores.values()):
        return scores
    return {row.get("split", "select"): scores}


def load_pool(path: str, target: str | None = None, fidelity: str | None = "short",
              baseline_rank: int = 8) -> Pool:
    """Read a pool file (JSONL, schema in benchmarks/search/POOL.md); rows of other fidelities are left out."""
    file = Path(path)
    check(file.is_file(), f"pool file {path!r} does not exist")
    rows = []
    for n, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path}:{n} is not a JSON line") from None
        check(row.get("schema", SCHEMA) == SCHEMA, f"{path}:{n} has schema {row.get('schema')!r}; this reads {SCHEMA}")
        check(isinstance(row.get("rank_vector"), list) and row["rank_vector"],
              f"{path}:{n} needs a rank_vector (list of ints)")
        rows.append(row)
    check(bool(rows), f"pool file {path!r} holds no rows")
    fidelities = {r.get("fidelity") for r in rows}
    if fidelity is not None and fidelity in fidelities:
        rows = [r for r in rows if r.get("fidelity") == fidelity]
    target = target or rows[0].get("target_task")
    check(target is not None, "the pool rows name no target_task: pass --target")
    layers = {len(r["rank_vector"]) for r in rows}
    check(len(layers) == 1, f"pool rows have rank vectors of different lengths {sorted(layers)}: one model per pool")
    per: dict[tuple, dict] = {}
    for r in rows:
        entry = per.setdefault(tuple(r["rank_vector"]), {"seeds": {}, "features": r.get("layer_features")})
        entry["seeds"][r.get("seed", 0)] = _split_scores(r)
    keys = sorted(per)
    check(all(target in s.get("select", {}) for e in per.values() for s in e["seeds"].values()),
          f"every pool row needs the target task {target!r} on the select split")
    has_report = all("report" in s and target in s["report"] for e in per.values() for s in e["seeds"].values())
    draws = [[s["select"][target] for s in per[k]["seeds"].values()] for k in keys]
    report_draws = [[s["report"][target] for s in per[k]["seeds"].values()] if has_report else d
                    for k, d in zip(keys, draws)]
    source_names = sorted({t for e in per.values() for s in e["seeds"].values() for t in s["select"] if t != target})
    sources = {t: np.asarray([np.mean([s["select"][t] for s in per[k]["seeds"].values() if t in s["select"]] or
                                      [np.nan]) for k in keys]) for t in source_names}
    vectors = np.asarray(keys, np.int64)
    check(baseline_rank in set(vectors.ravel().tolist()) and any((v == baseline_rank).all() for v in vectors),
          f"the pool has no uniform rank-{baseline_rank} vector: it is every method's starting point")
    baseline = int(np.flatnonzero((vectors == baseline_rank).all(axis=1))[0])

    def pooled_sd(values: list[list[float]]) -> float:
        groups = [np.asarray(v) for v in values if len(v) >= 2]
        dof = sum(len(g) - 1 for g in groups)
        return float(np.sqrt(sum(((g - g.mean()) ** 2).sum() for g in groups) / dof)) if dof else 0.0

    select, report = np.asarray([np.mean(d) for d in draws]), np.asarray([np.mean(d) for d in report_draws])
    if all("true_score" in r for r in rows):  # a synthetic pool knows the noiseless score: regret against it
        truth = {tuple(r["rank_vector"]): float(r["true_score"]) for r in rows}
        select = report = np.asarray([truth[k] for k in keys])
    return Pool(vectors, draws, report_draws, select, report, sources, per[keys[0]]["features"], baseline,
                pooled_sd(draws), pooled_sd(report_draws), target, np.asarray([len(d) for d in draws]), has_report)


# ------------------------------------------------------------------------------------------- methods

def draw_measurements(pool: Pool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """What a trial of each vector returns in one replay: one of its recorded seeds, at random; its
    select-split score (what the search sees) and the same adapter's report-split score."""
    seeds = [int(rng.integers(len(d))) for d in pool.draws]
    return (np.asarray([d[k] for d, k in zip(pool.draws, seeds)], float),
            np.asarray([d[k] for d, k in zip(pool.report_draws, seeds)], float))


def run_random(pool: Pool, trials: int, rng: np.random.Generator, measured: np.ndarray) -> list[int]:
    others = np.setdiff1d(np.arange(len(pool.vectors)), [pool.baseline])
    return [pool.baseline, *rng.permutation(others)[:trials - 1].tolist()]


def run_uniform(pool: Pool, trials: int, rng: np.random.Generator, measured: np.ndarray) -> list[int]:
    return [pool.baseline]


def run_mutation(pool: Pool, trials: int, rng: np.random.Generator, measured: np.ndarray) -> list[int]:
    order, scores = [pool.baseline], {pool.baseline: measured[pool.baseline]}
    while len(order) < min(trials, len(pool.vectors)):
        parents = sorted(scores, key=lambda i: -scores[i])[:3]
        distance = (pool.vectors[:, None, :] != pool.vectors[parents][None, :, :]).sum(axis=2).min(axis=1)
        fresh = np.ones(len(pool.vectors), bool)
        fresh[order] = False
        near = np.flatnonzero(fresh & (distance <= 2))
        pick = int(rng.choice(near if len(near) else np.flatnonzero(fresh)))
        order.append(pick)
        scores[pick] = measured[pick]
    return order


def run_tpe(pool: Pool, trials: int, rng: np.random.Generator, measured: np.ndarray) -> list[int]:
    """The job's proposer tpe (search.proposers.tpe_vector) over the pool: one categorical per layer over the
    pool's ranks of that layer, its suggestion snapped to the nearest unmeasured pool vector."""
    config = SearchConfig(proposer="tpe", seed=int(rng.integers(2 ** 31)), tpe_startup=min(10, max(1, trials // 2)))
    order = [pool.baseline]
    while len(order) < min(trials, len(pool.vectors)):
        order.append(_tpe_pick(pool, config, {i: float(measured[i]) for i in order}))
    return order


def _tpe_pick(pool: Pool, config: SearchConfig, scores: dict[int, float]) -> int:
    """The pool index proposer tpe picks next, given the measured pool indices and their select scores."""
    observations = [Observation(pool.target, [int(r) for r in pool.vectors[i]], s) for i, s in scores.items()]
    vector = tpe_vector(observations, config, [1] * pool.vectors.shape[1], pool.vectors)
    return int(np.flatnonzero((pool.vectors == vector).all(axis=1))[0])


def _source_observations(pool: Pool, per_task: int, rng: np.random.Generator) -> list[Observation]:
    """The job's meta-pretraining data: per_task random vectors (not uniform r8) measured on each source task."""
    others = np.setdiff1d(np.arange(len(pool.vectors)), [pool.baseline])
    obs = []
    for task, scores in pool.sources.items():
        have = others[np.isfinite(scores[others])]
        for i in rng.permutation(have)[:per_task]:
            obs.append(Observation(task, [int(r) for r in pool.vectors[i]], float(scores[i]), pool.layer_features))
    return obs


def run_loop(pool: Pool, trials: int, rng: np.random.Generator, measured: np.ndarray, surrogate: SurrogateConfig,
             search: SearchConfig, per_task: int, finalists: list[list[int]] = ()) -> tuple[list[int], int | None]:
    """The job's search over the pool: meta-pretrain, anchor on uniform r8, propose_from/update (first the
    go/no-go screen's `finalists`, pool vectors, as search.loop.propose queues them).
    Returns the trial order and the trial count at which search.converged first said stop (or None)."""
    candidates = sorted({int(r) for r in pool.vectors.ravel()})
    features = pool.layer_features if surrogate.feature_mode != "ranks" else None
    state = new_surrogate(surrogate, candidates, pool.vectors.shape[1], len(features[0]) if features else 0)
    sources = _source_observations(pool, per_task, rng)
    if sources:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = meta_pretrain(state, [dataclasses.replace(o, layer_features=features) for o in sources],
                                  progress=False)
    anchor = Observation(pool.target, [int(r) for r in pool.vectors[pool.baseline]],
                         measured[pool.baseline], features)
    cost = [1] * pool.vectors.shape[1]  # the pool already respects its budget; cost only labels proposals
    search_state = SearchState(pool.target, adapt(state, [anchor], pool.target), cost, features, [anchor],
                               [list(v) for v in finalists])
    order, stopped = [pool.baseline], None
    while len(order) < min(trials, len(pool.vectors)):
        fresh = np.ones(len(pool.vectors), bool)
        fresh[order] = False
        queued = pending_finalists(search_state)  # the screen's finalists first, as search.loop.propose does
        proposal = propose_from(search_state, search, np.asarray(queued[:1]) if queued else pool.vectors[fresh])
        pick = int(np.flatnonzero(fresh)[np.flatnonzero((pool.vectors[fresh] == proposal.rank_vector).all(axis=1))[0]])
        search_state, _ = update(search_state, proposal, measured[pick], search)
        order.append(pick)
        if stopped is None and converged(search_state, search):
            stopped = len(order)
    return order, stopped


# --------------------------------------------------------------------------------------------- scoring

def pick_curve(order: list[int], measured: np.ndarray, trials: int) -> np.ndarray:
    """The vector a method would pick (its best measured trial) after each of 1..trials trials; a method
    with fewer trials (uniform r8, or a pool smaller than T) keeps its last pick."""
    values = measured[order]
    return np.asarray([order[int(np.argmax(values[:min(t + 1, len(order))]))] for t in range(trials)])


def regret_curve(pool: Pool, picks: np.ndarray) -> np.ndarray:
    """Select-split regret of each pick: the pool's best seed-mean score minus the pick's."""
    return pool.select.max() - pool.select[picks]


def claims_gain(diff: float, noise: float, searched: bool) -> bool:
    """Whether the job would register the pick over uniform r8 (champion.choose_adapter) from one measured
    report-split difference, its CI from the trial noise (two independent trials: se = noise * sqrt 2)."""
    if not searched:
        return False
    half = 1.96 * math.sqrt(2.0) * noise
    return choose_adapter(diff, diff - half, diff + half, noise).register == SEARCHED


def bootstrap_ci(values: np.ndarray, rng: np.random.Generator, n_boot: int = 2000) -> tuple[float, float, float]:
    """Mean over replay seeds (axis 0) with a 95% percentile bootstrap interval (resampling seeds)."""
    values = np.asarray(values, float)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    means = values[idx].mean(axis=1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def replay(pool: Pool, methods: list[str], seeds: int, trials: int, per_task: int) -> dict:
    runners = {
        "uniform r8": lambda rng, m: (run_uniform(pool, trials, rng, m), None),
        "random": lambda rng, m: (run_random(pool, trials, rng, m), None),
        "mutation": lambda rng, m: (run_mutation(pool, trials, rng, m), None),
        "optuna TPE": lambda rng, m: (run_tpe(pool, trials, rng, m), None),
        "loop": lambda rng, m: run_loop(pool, trials, rng, m, SurrogateConfig(seed=int(rng.integers(1000))),
                                     SearchConfig(kappa=0.0, threshold=noise), per_task),
        "loop kappa=1": lambda rng, m: run_loop(pool, trials, rng, m, SurrogateConfig(seed=int(rng.integers(1000))),
                                             SearchConfig(kappa=1.0, threshold=noise), per_task),
        "paper: ranks-only greedy": lambda rng, m: run_loop(
            pool, trials, rng, m, SurrogateConfig(feature_mode="ranks", seed=int(rng.integers(1000))),
            SearchConfig(kappa=0.0, threshold=noise), per_task),
    }
    noise = max(pool.noise_select, 1e-9)
    result = {}
    for method in methods:
        check(method in runners, f"unknown method {method!r}; choose from {list(runners)}")
        started = time.perf_counter()
        regrets, beats, claims, stops, stop_regrets, orders = [], [], [], [], [], []
        for seed in range(seeds):
            measured, reported = draw_measurements(pool, np.random.default_rng([seed, 10_000]))  # same for all
            rng = np.random.default_rng([seed, METHODS.index(method)])
            order, stopped = runners[method](rng, measured)
            picks = pick_curve(order, measured, trials)
            regrets.append(regret_curve(pool, picks))
            beats.append(pool.report[picks] - pool.report[pool.baseline] > pool.noise_report)
            claims.append([claims_gain(reported[p] - reported[pool.baseline], pool.noise_report, p != pool.baseline)
                           for p in picks])
            orders.append([int(i) for i in order])
            if stopped is not None or method.startswith(("loop", "paper")):
                stops.append(stopped)
                if stopped is not None:
                    stop_regrets.append(regrets[-1][stopped - 1])
        regrets, beats, claims = np.asarray(regrets), np.asarray(beats, float), np.asarray(claims, float)
        ci_rng = np.random.default_rng(0)
        result[method] = {
            "regret": [bootstrap_ci(regrets[:, t], ci_rng) for t in range(trials)],
            "p_beat": [bootstrap_ci(beats[:, t], ci_rng) for t in range(trials)],
            "p_claim": [bootstrap_ci(claims[:, t], ci_rng) for t in range(trials)],
            "stopped_at": stops, "regret_at_stop": stop_regrets, "orders": orders,
            "seconds": time.perf_counter() - started}
    return result


def summary(pool: Pool) -> dict:
    between = float(pool.select[pool.seeds_per_vector >= 1].std(ddof=1)) if len(pool.select) > 1 else 0.0
    return {"vectors": len(pool.vectors), "layers": int(pool.vectors.shape[1]), "target": pool.target,
            "trials": int(pool.seeds_per_vector.sum()), "vectors_with_seeds": int((pool.seeds_per_vector >= 2).sum()),
            "noise_sd_select": pool.noise_select, "noise_sd_report": pool.noise_report,
            "between_vector_sd_select": between, "has_report_split": pool.has_report,
            "uniform_r8_select": float(pool.select[pool.baseline]), "best_select": float(pool.select.max()),
            "uniform_r8_regret": float(pool.select.max() - pool.select[pool.baseline]),
            "best_vector": pool.vectors[int(np.argmax(pool.select))].tolist(), "baseline_index": pool.baseline,
            "rank_vectors": pool.vectors.tolist(),  # what the indices in "orders" refer to
            "uniform_r8_rank": int((pool.select > pool.select[pool.baseline]).sum()) + 1,
            "source_tasks": sorted(pool.sources)}


def table(result: dict, pool_summary: dict, trials: int) -> str:
    ts = [t for t in REPORT_TS if t <= trials] or [trials]
    head = ("| method | " + " | ".join(f"regret T={t}" for t in ts) + " | "
            + " | ".join(f"P(beat r8) T={t}" for t in ts) + f" | P(claims gain) T={ts[-1]} | stops at (median) | "
            "regret at stop |")
    lines = [head, "|" + "---|" * (1 + 2 * len(ts) + 3)]
    for method, r in result.items():
        cells = [f"{r['regret'][t - 1][0]:.4f} [{r['regret'][t - 1][1]:.4f}, {r['regret'][t - 1][2]:.4f}]" for t in ts]
        cells += [f"{r['p_beat'][t - 1][0]:.2f} [{r['p_beat'][t - 1][1]:.2f}, {r['p_beat'][t - 1][2]:.2f}]" for t in ts]
        claim = r["p_claim"][ts[-1] - 1]
        cells.append(f"{claim[0]:.2f} [{claim[1]:.2f}, {claim[2]:.2f}]")
        stops = [s for s in r["stopped_at"] if s is not None]
        stop = "-" if not r["stopped_at"] else (f"{np.median(stops):.0f} ({len(stops)}/{len(r['stopped_at'])} stop)"
                                                if stops else f"never (0/{len(r['stopped_at'])})")
        at_stop = f"{np.mean(r['regret_at_stop']):.4f}" if r["regret_at_stop"] else "-"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {stop} | {at_stop} |")
    s = pool_summary
    lines.append("")
    lines.append(f"pool: {s['vectors']} vectors x {s['layers']} layers, {s['trials']} trials; target {s['target']}; "
                 f"noise sd (seed-to-seed) select {s['noise_sd_select']:.4f}, report {s['noise_sd_report']:.4f}; "
                 f"between-vector sd {s['between_vector_sd_select']:.4f}; uniform r8 ranks {s['uniform_r8_rank']} "
                 f"of {s['vectors']} (regret {s['uniform_r8_regret']:.4f})")
    return "\n".join(lines)


def plot(result: dict, trials: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = np.arange(1, trials + 1)
    for method, r in result.items():
        mean = np.asarray([v[0] for v in r["regret"]])
        ax.plot(xs, mean, label=method)
        ax.fill_between(xs, [v[1] for v in r["regret"]], [v[2] for v in r["regret"]], alpha=0.15)
    ax.set_xlabel("trials (fine-tune + evaluate), the first is uniform r8")
    ax.set_ylabel("regret on the select split (pool best - pick)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ------------------------------------------------------------------------------------- equal-cost replay

COST_BUDGETS = (2, 4, 8, 12)  # in full-trial equivalents
COST_METHODS = ("uniform r8", "random", "optuna TPE", "TPE + Hyperband", "loop", "halving + go/no-go",
                "screen + go/no-go", "screen + loop", "screen + loop + finalists x2")


@dataclass
class Fidelities:
    """The full pool (the candidate set: only vectors with full rows) with each vector's cheap draws beside it."""
    full: Pool
    cheap: list[list[float]]  # per full-pool vector: its select-split scores at the cheap fidelity
    cost: dict[str, float]  # fidelity -> mean seconds per trial, in units of one full trial
    seconds: dict[str, float]  # fidelity -> mean measured seconds per trial
    cheap_name: str


def load_fidelities(path: str, cheap: str = "short", target: str | None = None) -> Fidelities:
    """Both fidelities of a pool, restricted to the vectors that have full rows (no cheap score stands in for a
    missing full one). Costs: the rows' `seconds`, mean per fidelity; a pool without them (synthetic) gives
    `cost_fraction` per row."""
    full, short = load_pool(path, target, "full"), load_pool(path, target, cheap)
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    check({"full", cheap} <= {r.get("fidelity") for r in rows}, f"pool {path!r} needs 'full' and {cheap!r} rows")
    index = {tuple(v): i for i, v in enumerate(short.vectors.tolist())}
    missing = [v for v in full.vectors.tolist() if tuple(v) not in index]
    check(not missing, f"{len(missing)} full-fidelity vectors have no {cheap!r} row, e.g. {missing[:1]}")
    seconds = {f: float(np.mean([r.get("seconds", r.get("cost_fraction", 1.0)) for r in rows
                                 if r.get("fidelity") == f])) for f in ("full", cheap)}
    cost = {f: s / seconds["full"] for f, s in seconds.items()}
    if full.noise_select == 0 or full.noise_report == 0:  # one seed per full vector: the cheap seeds' noise
        full = dataclasses.replace(full, noise_select=full.noise_select or short.noise_select,
                                   noise_report=full.noise_report or short.noise_report)
    return Fidelities(full, [short.draws[index[tuple(v)]] for v in full.vectors.tolist()], cost, seconds, cheap)


class Meter:
    """One replay's trials: each returns one recorded seed of the vector at its fidelity, and is priced."""

    def __init__(self, fid: Fidelities, rng: np.random.Generator):
        self.fid, self.rng, self.spent = fid, rng, 0.0

    def full(self, i: int) -> tuple[float, float]:
        """(select, report) of one full trial of vector i."""
        self.spent += self.fid.cost["full"]
        k = int(self.rng.integers(len(self.fid.full.draws[i])))
        return self.fid.full.draws[i][k], self.fid.full.report_draws[i][k]

    def cheap(self, i: int) -> float:
        self.spent += self.fid.cost[self.fid.cheap_name]
        d = self.fid.cheap[i]
        return d[int(self.rng.integers(len(d)))]


def _pick(measured: dict[int, tuple[float, float]]) -> int:
    return max(measured, key=lambda i: measured[i][0])


def _nearest(pool: Pool, want: np.ndarray, taken, rng: np.random.Generator) -> int:
    """The nearest pool vector not taken (search.sampling.nearest)."""
    excluded = np.zeros(len(pool.vectors), bool)
    excluded[list(taken)] = True
    index = nearest(pool.vectors, want, excluded, rng)
    check(index is not None, f"every one of the {len(pool.vectors)} pool vectors was measured")
    return index


def cost_random(fid: Fidelities, budget: float, m: Meter, rng: np.random.Generator) -> dict:
    pool, measured = fid.full, {}
    measured[pool.baseline] = m.full(pool.baseline)
    for i in rng.permutation(np.setdiff1d(np.arange(len(pool.vectors)), [pool.baseline])):
        if m.spent + fid.cost["full"] > budget + 1e-9:
            break
        measured[int(i)] = m.full(int(i))
    return measured


def cost_tpe(fid: Fidelities, budget: float, m: Meter, rng: np.random.Generator, hyperband: bool) -> dict:
    """Optuna TPE snapped to the nearest unmeasured pool vector: without hyperband the job's proposer tpe
    (run_tpe's _tpe_pick), one full trial each; with hyperband, cost_tpe_hyperband."""
    if hyperband:
        return cost_tpe_hyperband(fid, budget, m, rng)
    pool = fid.full
    config = SearchConfig(proposer="tpe", seed=int(rng.integers(2 ** 31)), tpe_startup=3)
    measured = {pool.baseline: m.full(pool.baseline)}  # uniform r8 at full fidelity, as every method
    while len(measured) < len(pool.vectors) and m.spent + fid.cost["full"] <= budget + 1e-9:
        i = _tpe_pick(pool, config, {j: v[0] for j, v in measured.items()})
        measured[i] = m.full(i)
    return measured


def cost_tpe_hyperband(fid: Fidelities, budget: float, m: Meter, rng: np.random.Generator) -> dict:
    """TPE with Optuna's HyperbandPruner: the cheap score is reported at step 1 and the full score at step 2, and a
    pruned trial pays only the cheap trial (an unpruned one pays one full trial in all: the short recovery is the
    first part of the full one). It keeps one live study of its own instead of the job's proposer tpe, which
    rebuilds a study from the measured trials per proposal: the pruner decides on a live trial as it reports, and
    assigns each trial to a bracket whose trials alone the sampler then sees, neither of which a rebuilt study
    has. The same sampler settings as proposer tpe (tpe_startup 3), the same snapping to the pool."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pool = fid.full
    choices = [sorted({int(r) for r in pool.vectors[:, layer]}) for layer in range(pool.vectors.shape[1])]
    dists = {f"r{layer}": CategoricalDistribution(c) for layer, c in enumerate(choices)}
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=2, reduction_factor=3), sampler=optuna.samplers.TPESampler(
        seed=int(rng.integers(2 ** 31)), n_startup_trials=SearchConfig().tpe_startup))
    study.enqueue_trial({f"r{layer}": int(r) for layer, r in enumerate(pool.vectors[pool.baseline])})
    measured: dict[int, tuple[float, float]] = {}
    taken: set[int] = set()
    while len(taken) < len(pool.vectors) and m.spent + fid.cost[fid.cheap_name] <= budget + 1e-9:
        trial = study.ask(dists)
        i = pool.baseline if not taken else _nearest(
            pool, np.asarray([trial.params[f"r{layer}"] for layer in range(len(choices))]), taken, rng)
        taken.add(i)
        if i != pool.baseline:  # uniform r8 at full fidelity, as every method
            before = m.spent
            trial.report(m.cheap(i), 1)
            if trial.should_prune() or before + fid.cost["full"] > budget + 1e-9:
                study.tell(trial, state=TrialState.PRUNED)
                continue
            m.spent = before  # the continued trial pays one full trial in all
        measured[i] = m.full(i)
        trial.report(measured[i][0], 2)
        study.tell(trial, measured[i][0])
    return measured


def cost_loop(fid: Fidelities, budget: float, m: Meter, rng: np.random.Generator, per_task: int) -> dict:
    """Today's loop at full fidelity: as many trials as the budget pays for."""
    pool = fid.full
    trials = max(1, int(budget / fid.cost["full"] + 1e-9))
    select = np.zeros(len(pool.vectors))
    order_rng = np.random.default_rng(rng.integers(2 ** 31))
    draws = {}
    for i in range(len(pool.vectors)):  # the loop sees each vector once: one full trial, drawn now
        draws[i] = (pool.draws[i][k := int(order_rng.integers(len(pool.draws[i])))], pool.report_draws[i][k])
        select[i] = draws[i][0]
    order, _ = run_loop(pool, trials, rng, select, SurrogateConfig(seed=int(rng.integers(1000))),
                        SearchConfig(kappa=0.0, threshold=max(pool.noise_select, 1e-9)), per_task)
    m.spent += len(order) * fid.cost["full"]
    return {i: draws[i] for i in order}


def cost_halving(fid: Fidelities, budget: float, m: Meter, rng: np.random.Generator, finalists: int = 2,
                 seeds: int = 2) -> tuple[dict, bool]:
    """The multi-fidelity loop: uniform r8 full, then search.halving over as many cheap candidates as the budget
    leaves after the go/no-go's uniform seeds and the finalists' full seeds; a no-go stops after the cheap trials."""
    from rankadaptor.search.halving import successive_halving

    pool, c, f = fid.full, fid.cost[fid.cheap_name], fid.cost["full"]
    measured = {pool.baseline: m.full(pool.baseline)}
    config = SearchConfig(threshold=max(float(np.sqrt(np.mean([np.var(d, ddof=1) for d in fid.cheap if len(d) > 1]
                                                              or [0.0]))), 1e-9), go="auto")
    fixed = f + config.go_seeds * c + (finalists + 1) * seeds * f - f  # uniform's first full trial is one seed
    n = min(int((budget - fixed) / c + 1e-9), len(pool.vectors) - 1)
    if n < 1:
        return measured, False
    others = rng.permutation(np.setdiff1d(np.arange(len(pool.vectors)), [pool.baseline]))[:n].tolist()
    full_scores: dict[int, list[tuple[float, float]]] = {pool.baseline: [measured[pool.baseline]]}

    def full(i, seed):
        if seed < len(full_scores.get(i, [])):
            return full_scores[i][seed][0]
        full_scores.setdefault(i, []).append(m.full(i))
        return full_scores[i][-1][0]

    r = successive_halving(config, others, pool.baseline, [lambda i, seed: m.cheap(i)], full, eta=1 / 3,
                           finalists=finalists, seeds=seeds)
    if not r.decision.go:
        return measured, False
    return {i: (r.full_means[i], float(np.mean([s[1] for s in full_scores[i]]))) for i in r.finalists}, True


def cost_screen(fid: Fidelities, budget: float, m: Meter, rng: np.random.Generator,
                finalists: int = 1) -> tuple[dict, bool]:
    """The screening go/no-go (search.halving.screen_search): uniform r8 full, uniform at 2 cheap seeds, as many
    screening vectors (search.go.screening_vectors, each snapped to the nearest unmeasured pool vector: a method
    may only measure what the pool has) as the budget leaves after the finalist's full trial; the additive fit
    predicts every pool vector (free: no trial) and on a go its best is measured full and picked if its full
    score beats uniform's. A budget beyond the whole design is left unspent. A no-go stops after the cheap
    trials."""
    from rankadaptor.search.go import screening_vectors
    from rankadaptor.search.halving import screen_search

    pool, c, f = fid.full, fid.cost[fid.cheap_name], fid.cost["full"]
    measured = {pool.baseline: m.full(pool.baseline)}
    config = SearchConfig(candidates=sorted({int(r) for r in pool.vectors.ravel()}), go="auto",
                          threshold=max(float(np.sqrt(np.mean([np.var(d, ddof=1) for d in fid.cheap if len(d) > 1]
                                                              or [0.0]))), 1e-9))
    n = min(int((budget - f - config.go_seeds * c - finalists * f) / c + 1e-9), len(pool.vectors) - 1)
    if n < 1:
        return measured, False
    uniform = pool.vectors[pool.baseline].tolist()
    index = {tuple(v): i for i, v in enumerate(pool.vectors.tolist())}
    taken = {pool.baseline}
    design = []
    for want in screening_vectors(config, [1] * len(uniform), uniform, n):
        taken.add(i := _nearest(pool, np.asarray(want), taken, rng))
        design.append(pool.vectors[i].tolist())
    full_scores: dict[int, list[tuple[float, float]]] = {pool.baseline: [measured[pool.baseline]]}

    def full(v, seed):
        i = index[v]
        if seed < len(full_scores.get(i, [])):
            return full_scores[i][seed][0]
        full_scores.setdefault(i, []).append(m.full(i))
        return full_scores[i][-1][0]

    r = screen_search(config, design, pool.vectors.tolist(), uniform, lambda v, seed: m.cheap(index[v]), full,
                      finalists=finalists)
    if not r.decision.go:
        return measured, False
    return {index[v]: (r.full_means[v], float(np.mean([s[1] for s in full_scores[index[v]]])))
            for v in r.finalists}, True


def cost_screen_loop(fid: Fidelities, budget: float, m: Meter, rng: np.random.Generator, per_task: int,
                     finalists: int = 2, confirm: int = 0) -> tuple[dict, bool]:
    """The job on a go (issue 25): cost_screen's screen (uniform r8 at 2 cheap seeds and as many screening vectors
    as the budget leaves, here after uniform's and the `finalists`' full trials; each snapped to the nearest
    unmeasured pool vector), search.go.decide_screen over the pool; on a go, the loop (cost_loop's, one full trial
    each) starting from the fit's finalists, best first, with every full trial the budget has left. A no-go (or no
    room for the screen) stops after the cheap trials and uniform's full one. confirm > 0: the job's evaluate-best
    (search.confirm): the loop's `confirm` best searched vectors and uniform get one more full trial each, at another
    recorded seed (budget kept for them), and the pick is the best seed mean among those finalists alone."""
    from rankadaptor.search.confirm import finalist_vectors, seed_table
    from rankadaptor.search.go import decide_screen, screening_vectors
    from rankadaptor.trial import Observation

    pool, c, f = fid.full, fid.cost[fid.cheap_name], fid.cost["full"]
    config = SearchConfig(candidates=sorted({int(r) for r in pool.vectors.ravel()}), go="auto",
                          threshold=max(float(np.sqrt(np.mean([np.var(d, ddof=1) for d in fid.cheap if len(d) > 1]
                                                              or [0.0]))), 1e-9))
    reserved = (1 + finalists + (confirm + 1 if confirm else 0)) * f
    n = min(int((budget - reserved - config.go_seeds * c) / c + 1e-9), len(pool.vectors) - 1)
    uniform = pool.vectors[pool.baseline].tolist()
    if n < 1:
        return {pool.baseline: m.full(pool.baseline)}, False
    taken, design = {pool.baseline}, []
    for want in screening_vectors(config, [1] * len(uniform), uniform, n):
        taken.add(i := _nearest(pool, np.asarray(want), taken, rng))
        design.append(i)
    uniform_cheap = [m.cheap(pool.baseline) for _ in range(config.go_seeds)]
    decision = decide_screen(config, uniform, uniform_cheap, [pool.vectors[i].tolist() for i in design],
                             [m.cheap(i) for i in design], pool.vectors.tolist(), 0, None, finalists=finalists)
    if not decision.go:
        return {pool.baseline: m.full(pool.baseline)}, False
    screen = m.spent
    kept = (confirm + 1) * f if confirm else 0.0
    trials = max(1, int((budget - screen - kept) / f + 1e-9))  # uniform r8's full trial included, as cost_loop counts
    select = np.zeros(len(pool.vectors))
    order_rng = np.random.default_rng(rng.integers(2 ** 31))
    draws = {}
    seed_of = {}
    for i in range(len(pool.vectors)):  # as cost_loop: one full trial per vector, drawn now
        draws[i] = (pool.draws[i][k := int(order_rng.integers(len(pool.draws[i])))], pool.report_draws[i][k])
        select[i], seed_of[i] = draws[i][0], k
    order, _ = run_loop(pool, trials, rng, select, SurrogateConfig(seed=int(rng.integers(1000))),
                        SearchConfig(kappa=0.0, threshold=max(pool.noise_select, 1e-9)), per_task,
                        decision.finalists or [])
    m.spent = screen + len(order) * f
    if not confirm:
        return {i: draws[i] for i in order}, True
    seen = {tuple(pool.vectors[i].tolist()): i for i in order}
    vectors = finalist_vectors([Observation("t", list(v), draws[i][0]) for v, i in seen.items()], uniform, confirm)
    if not vectors:
        return {i: draws[i] for i in order}, True
    scores = {}
    for v in vectors:
        i = seen[tuple(v)]
        others = [j for j in range(len(pool.draws[i])) if j != seed_of[i]]
        scores[tuple(v)] = [draws[i][0]]
        if others:  # a vector recorded at one seed only keeps it
            scores[tuple(v)].append(pool.draws[i][others[int(order_rng.integers(len(others)))]])
            m.spent += f
    table = seed_table(vectors, scores)  # the pick (_pick: the best select) is search.confirm.chosen's
    return {seen[tuple(r["rank_vector"])]: (r["mean"], draws[seen[tuple(r["rank_vector"])]][1]) for r in table}, True


def cost_replay(fid: Fidelities, seeds: int, budgets=COST_BUDGETS, methods=COST_METHODS, per_task: int = 5) -> dict:
    """Per method and budget (full-trial equivalents): regret, P(beat uniform beyond noise), P(claim), cost spent."""
    pool = fid.full
    out = {}
    for method in methods:
        check(method in COST_METHODS, f"unknown method {method!r}; choose from {list(COST_METHODS)}")
        rows = {}
        for budget in budgets:
            regret, beat, claim, spent, go = [], [], [], [], []
            for seed in range(seeds):
                rng = np.random.default_rng([seed, COST_METHODS.index(method), int(budget * 100)])
                m = Meter(fid, np.random.default_rng([seed, 10_000]))
                searched = True
                if method == "uniform r8":
                    measured = {pool.baseline: m.full(pool.baseline)}
                elif method == "random":
                    measured = cost_random(fid, budget, m, rng)
                elif method in ("optuna TPE", "TPE + Hyperband"):
                    measured = cost_tpe(fid, budget, m, rng, method == "TPE + Hyperband")
                elif method == "loop":
                    measured = cost_loop(fid, budget, m, rng, per_task)
                elif method == "halving + go/no-go":
                    measured, searched = cost_halving(fid, budget, m, rng)
                    go.append(searched)
                elif method in ("screen + loop", "screen + loop + finalists x2"):
                    measured, searched = cost_screen_loop(fid, budget, m, rng, per_task,
                                                          confirm=2 if method.endswith("x2") else 0)
                    go.append(searched)
                else:
                    measured, searched = cost_screen(fid, budget, m, rng)
                    go.append(searched)
                p = _pick(measured)
                base = measured.get(pool.baseline) or (pool.select[pool.baseline], pool.report[pool.baseline])
                regret.append(pool.select.max() - pool.select[p])
                beat.append(pool.report[p] - pool.report[pool.baseline] > pool.noise_report)
                claim.append(claims_gain(measured[p][1] - base[1], pool.noise_report, p != pool.baseline))
                spent.append(m.spent)
            ci = np.random.default_rng(0)
            rows[str(budget)] = {"regret": bootstrap_ci(np.asarray(regret), ci),
                                 "p_beat": bootstrap_ci(np.asarray(beat, float), ci),
                                 "p_claim": bootstrap_ci(np.asarray(claim, float), ci),
                                 "cost": bootstrap_ci(np.asarray(spent), ci),
                                 "p_go": float(np.mean(go)) if go else None}
        out[method] = rows
    return out


def cost_table(result: dict, fid: Fidelities, seeds: int) -> str:
    pool = fid.full
    head = (f"Candidates: the {len(pool.vectors)} vectors with full-fidelity rows (the others have no full score, "
            f"none is faked). Cost per trial ({fid.cheap_name} / full): {fid.seconds[fid.cheap_name]:.2f} s / "
            f"{fid.seconds['full']:.2f} s = {fid.cost[fid.cheap_name]:.3f} full trials. {seeds} replay seeds, "
            f"mean [95% bootstrap CI]; noise (report, seed-to-seed sd) {pool.noise_report:.4f}. halving + go/no-go: "
            f"P(go) counts a budget too small for its fixed trials (uniform x2 cheap, 3 finalists x 2 full) as "
            f"no search. screen + go/no-go: uniform r8 full + uniform x2 cheap + as many screening vectors as the "
            f"budget leaves after 1 finalist's full trial; a budget with room for none counts as no search. screen + "
            f"loop: the same screen, leaving room for uniform's and 2 finalists' full trials (none: no search); on a go "
            f"the 2 finalists, then the loop at full fidelity with the rest of the budget. + finalists x2: the job's "
            f"evaluate-best too: the loop's 2 best searched vectors and uniform one more full trial each (another "
            f"recorded seed), picked by seed mean.\n\n")
    lines = ["| method | budget | regret | P(beat uniform) | P(claim gain) | cost spent | P(go) |",
             "|---|---|---|---|---|---|---|"]
    for method, rows in result.items():
        for budget, r in rows.items():
            cell = [f"{v[0]:.4f} [{v[1]:.4f}, {v[2]:.4f}]" if k == "regret" else f"{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]"
                    for k, v in ((k, r[k]) for k in ("regret", "p_beat", "p_claim", "cost"))]
            go = "" if r["p_go"] is None else f"{r['p_go']:.2f}"
            lines.append(f"| {method} | {budget} | {' | '.join(cell)} | "
                         f"{go} |")
    return head + "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", help="pool file (JSONL, benchmarks/search/POOL.md)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="instead of replaying: merge the --json outputs of runs over method subsets (same pool, "
                             "seeds, trials) and print/plot them as one")
    parser.add_argument("--target", default=None, help="target task (default: the rows' target_task)")
    parser.add_argument("--fidelity", default="short", help="rows of this fidelity (if the pool has several)")
    parser.add_argument("--seeds", type=int, default=20, help="replay seeds per method")
    parser.add_argument("--trials", type=int, default=20, help="trials per search (T)")
    parser.add_argument("--bootstrap", type=int, default=5, help="meta-pretraining vectors per source task (the "
                                                                 "default job's bootstrap_trials)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--png", default=None, help="write the regret curve here")
    parser.add_argument("--cost", action="store_true", help="the equal-cost replay across fidelities instead: "
                                                           "methods " + ", ".join(COST_METHODS))
    parser.add_argument("--budgets", default=",".join(map(str, COST_BUDGETS)), help="cost budgets, full trials")
    parser.add_argument("--cost-methods", default=",".join(COST_METHODS), help="with --cost: comma-separated subset "
                                                                            "of " + ", ".join(COST_METHODS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.cost:
        try:
            fid = load_fidelities(args.pool, "short" if args.fidelity == "short" else args.fidelity, args.target)
            result = cost_replay(fid, args.seeds, [float(b) for b in args.budgets.split(",")],
                                 [m.strip() for m in args.cost_methods.split(",") if m.strip()], per_task=args.bootstrap)
        except UserError as e:
            sys.exit(f"error: {e}")
        print(json.dumps(result) if args.json else cost_table(result, fid, args.seeds))
        return
    if args.merge:
        parts = [json.loads(Path(p).read_text()) for p in args.merge]
        info, trials = parts[0]["pool"], parts[0]["trials"]
        result = {m: r for part in parts for m, r in part["methods"].items()}
        result = {m: result[m] for m in METHODS if m in result}
        if args.png:
            plot(result, trials, args.png)
        print(json.dumps({**parts[0], "methods": result}) if args.json else table(result, info, trials))
        return
    if not args.pool:
        sys.exit("error: --pool is required (or --merge)")
    try:
        check(args.seeds >= 1 and args.trials >= 1, f"--seeds={args.seeds} and --trials={args.trials} must be >= 1")
        pool = load_pool(args.pool, args.target, args.fidelity)
        result = replay(pool, [m.strip() for m in args.methods.split(",") if m.strip()], args.seeds, args.trials,
                        args.bootstrap)
    except UserError as e:
        sys.exit(f"error: {e}")
    info = summary(pool)
    if args.png:
        plot(result, args.trials, args.png)
    if args.json:
        print(json.dumps({"pool": info, "trials": args.trials, "seeds": args.seeds, "methods": result}))
    else:
        print(table(result, info, args.trials))


if __name__ == "__main__":
    main()
