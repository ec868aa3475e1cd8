"""Synthetic check of the rank search, calibrated to real measurements, with uniform r8 as a row.

Builds a synthetic pool per hidden-score family and replays the same methods as search_replay.py on it
(every method starts from uniform rank 8, the job's first trial; meta-pretraining gets the job's size:
5 vectors on each of 4 source tasks). Families:

- additive: score = sum over layers of w_l * (1 - exp(-r_l / tau_l)) with random per-layer weights and
  saturation ranks: some layers want rank more than others, so uniform r8 is not optimal;
- flat: every vector scores the same: nothing beats uniform r8, and a search that claims a gain (by the
  registration rule, champion.choose_adapter) is fooled by noise.

Noise: each vector has `--repeats` measured seeds, select and report splits drawn independently, with
sd = noise ratio x the between-vector sd of the additive family's true scores (the same absolute sd in
the flat family). The ratio defaults to the one measured on the committed pool of real trials
(seed-to-seed sd / between-vector sd, select split), so the search faces the noise it would really face.

    python -m benchmarks.search.search_synthetic [--json]
    python -m benchmarks.search.search_synthetic --quick --json   # the test suite's size
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.search import search_replay as replay
from rankadaptor.search.config import SearchConfig
from rankadaptor.search.sampling import sample_rank_vectors

POOL = Path(__file__).resolve().parent / "pool_aidreams260k.jsonl"
FAMILIES = ("additive", "flat")
SOURCE_TASKS = 4
DEFAULT_RATIO = 0.5  # when no measured pool is at hand


def measured_ratio(path: Path) -> float:
    """Seed-to-seed sd / between-vector sd of the target's select score on a measured pool."""
    if not path.is_file():
        return DEFAULT_RATIO
    info = replay.summary(replay.load_pool(str(path)))
    return info["noise_sd_select"] / info["between_vector_sd_select"]


def pool_vectors(layers: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform r8 and the other uniform vectors within budget, mutations of r8, and the search's random
    budget-respecting vectors (every layer costs the same; budget = rank 8 everywhere)."""
    cost = [1] * layers
    config = SearchConfig(num_samples=size * 4, local_fraction=1.0)
    local = sample_rank_vectors(config, cost, rng, parents=[[8] * layers])
    randoms = sample_rank_vectors(SearchConfig(num_samples=size * 4, local_fraction=0.0), cost, rng)
    uniform = np.asarray([[r] * layers for r in (2, 4, 6, 8)])
    picked = np.concatenate([uniform, local[rng.permutation(len(local))[:size // 3]],
                             randoms[rng.permutation(len(randoms))]])
    _, first = np.unique(picked, axis=0, return_index=True)
    return picked[np.sort(first)][:size]


def additive(vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    layers = vectors.shape[1]
    weights, tau = rng.lognormal(0.0, 0.75, layers), rng.uniform(2.0, 10.0, layers)
    return (weights * (1.0 - np.exp(-vectors / tau))).sum(axis=1)


CHEAP_COST = 0.34  # a short trial's cost in full trials: search.cheap_fraction's share of the steps (nominal)


def measured_cheap_corr(path: Path) -> float:
    """Pearson correlation of the real pool's short seed mean with its full score, over vectors with both."""
    full, short = replay.load_pool(str(path), fidelity="full"), replay.load_pool(str(path), fidelity="short")
    index = {tuple(v): i for i, v in enumerate(short.vectors.tolist())}
    pairs = [(short.select[index[tuple(v)]], full.select[i]) for i, v in enumerate(full.vectors.tolist())
             if tuple(v) in index]
    return float(np.corrcoef(np.asarray(pairs).T)[0, 1])


def write_pool(path: Path, family: str, layers: int, size: int, repeats: int, ratio: float, seed: int,
               cheap_corr: float | None = None) -> None:
    """cheap_corr: also write "short" rows (cost CHEAP_COST) whose score is the true score plus more noise, so
    that a short score correlates with a full one (both noisy, additive family) as the real pool's do; the
    other rows are then "full" (cost 1)."""
    rng = np.random.default_rng(seed)
    vectors = pool_vectors(layers, size, rng)
    target = additive(vectors, rng)
    scale = target.std()
    target = (target - target.mean()) / scale  # between-vector sd 1 in the additive family
    if family == "flat":
        target = np.zeros(len(vectors))
    noise = ratio  # in units of the additive family's between-vector sd
    # sources: the target's layers reweighted per task (related, not identical); flat: unrelated additive
    sources = {}
    for k in range(SOURCE_TASKS):
        raw = additive(vectors, rng) if family == "flat" else target * scale + 0.3 * scale * rng.normal(size=len(vectors))
        sources[f"src{k}"] = (raw - raw.mean()) / raw.std()
    features = [[1.0, 1.0, 1.0, 1.0]] * layers
    # corr(true + e_cheap, true + e_full) = 1 / sqrt((1 + cheap_sd^2) (1 + noise^2)) in the additive family
    rho = min(max(cheap_corr or 1.0, 0.05), 1.0)
    cheap_sd = float(np.sqrt(max(1 / (rho ** 2 * (1 + noise ** 2)) - 1, noise ** 2)))
    with path.open("w") as f:
        for i, v in enumerate(vectors):
            for s in range(repeats):
                select = {"target": float(target[i] + noise * rng.normal()),
                          **{t: float(sources[t][i] + noise * rng.normal()) for t in sources}}
                report = {"target": float(target[i] + noise * rng.normal())}
                row = {"schema": replay.SCHEMA, "rank_vector": [int(r) for r in v], "seed": s,
                       "target_task": "target", "layer_features": features, "true_score": float(target[i]),
                       "scores": {"select": select, "report": report}}
                if cheap_corr is not None:
                    f.write(json.dumps({**row, "fidelity": "full", "cost_fraction": 1.0}) + "\n")
                    cheap = {**select, "target": float(target[i] + cheap_sd * rng.normal())}
                    f.write(json.dumps({**row, "fidelity": "short", "cost_fraction": CHEAP_COST,
                                        "scores": {"select": cheap, "report": report}}) + "\n")
                else:
                    f.write(json.dumps(row) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small: 6 layers, 80 vectors, 3 seeds, 8 trials")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vectors", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3, help="measured seeds per vector")
    parser.add_argument("--seeds", type=int, default=10, help="replay seeds per method and family")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--noise-ratio", type=float, default=None,
                        help="noise sd / between-vector sd (default: measured on the committed pool)")
    parser.add_argument("--methods", default="uniform r8,random,mutation,optuna TPE,loop")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--cost", action="store_true", help="the equal-cost replay across fidelities (search_replay "
                                                           "--cost) on both families, each with a short fidelity")
    parser.add_argument("--budgets", default=",".join(map(str, replay.COST_BUDGETS)))
    parser.add_argument("--cost-methods", default=",".join(replay.COST_METHODS), help="with --cost: the methods")
    parser.add_argument("--pool-seed", type=int, default=None, help="with --cost: the synthetic pools' seed "
                                                                   "(default: the recorded one, len(family))")
    args = parser.parse_args(argv)
    if args.cost:
        torch.set_num_threads(1)
        ratio = args.noise_ratio if args.noise_ratio is not None else measured_ratio(POOL)
        corr = measured_cheap_corr(POOL)
        print(f"noise sd = {ratio:.3f} x between-vector sd; short-vs-full correlation {corr:.3f} (measured on the "
              f"real pool); short trial = {CHEAP_COST} full trial\n")
        with tempfile.TemporaryDirectory() as tmp:
            for family in FAMILIES:
                path = Path(tmp) / f"{family}.jsonl"
                seed = len(family) if args.pool_seed is None else args.pool_seed + 100 * FAMILIES.index(family)
                write_pool(path, family, args.layers, args.vectors, args.repeats, ratio, seed, corr)
                fid = replay.load_fidelities(str(path))
                result = replay.cost_replay(fid, args.seeds, [float(b) for b in args.budgets.split(",")],
                                            [m.strip() for m in args.cost_methods.split(",")], per_task=5)
                print(json.dumps({family: result}) if args.json else
                      f"## family: {family}\n\n{replay.cost_table(result, fid, args.seeds)}\n")
        return
    if args.quick:
        args.layers, args.vectors, args.seeds, args.trials = 6, 80, 3, 8
    torch.set_num_threads(1)
    ratio = args.noise_ratio if args.noise_ratio is not None else measured_ratio(POOL)
    out = {"noise_ratio": ratio, "families": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for family in FAMILIES:
            path = Path(tmp) / f"{family}.jsonl"
            write_pool(path, family, args.layers, args.vectors, args.repeats, ratio, seed=len(family))
            pool = replay.load_pool(str(path))
            result = replay.replay(pool, [m.strip() for m in args.methods.split(",")], args.seeds, args.trials,
                                   per_task=5)
            for r in result.values():
                r.pop("orders")
            out["families"][family] = {"pool": {k: v for k, v in replay.summary(pool).items() if k != "rank_vectors"},
                                       "methods": result}
    if args.json:
        print(json.dumps(out))
        return
    print(f"noise sd = {ratio:.3f} x the additive family's between-vector sd (measured ratio on real trials)\n")
    for family, r in out["families"].items():
        print(f"## family: {family}\n")
        print(replay.table(r["methods"], r["pool"], args.trials) + "\n")


if __name__ == "__main__":
    main()
