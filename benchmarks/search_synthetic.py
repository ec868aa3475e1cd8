"""Synthetic benchmark of the rank search, on hidden score functions with a known optimum.

A task is a synthetic pruned model (per-layer widths -> LoRA cost per rank and structural features) and
a hidden score of the rank vector: a weighted sum of per-layer concave utilities 1 - exp(-r / tau_i),
where the weights and saturation depend on the layer's structure (shared by the family) and on a
task-specific depth profile, minus a smoothness interaction between neighbouring layers, plus Gaussian
measurement noise (as a fraction of the spread of random vectors' scores). Source tasks (other pruning
profiles, other depth profiles) feed meta-pretraining; the target task is held out. The optimum under the
budget (rank 8 everywhere) is exact: dynamic programming over (layer, previous rank, budget spent).

Measured per seed: real evaluations until an evaluated vector is within `margin` of the optimum (margin
as a fraction of the gap between the optimum and a random feasible vector's expected score) and the
normalised regret of the best-measured vector after all evaluations, for random search and the loop with
and without meta-pretraining; Kendall tau of surrogates on held-out target trials. Prints markdown tables.

    python benchmarks/search_synthetic.py            # full mode (~2-3 min on 2 cores)
    python benchmarks/search_synthetic.py --quick    # seconds, for the test suite
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch

from rankadaptor.modeling import lora_cost_per_rank
from rankadaptor.search import SearchConfig, SearchState, resolve_budget, run_loop, sample_rank_vectors
from rankadaptor.surrogate import (Observation, SurrogateConfig, adapt, meta_pretrain, new_surrogate,
                                   ranking_quality, structure_features)

HIDDEN, HEAD_DIM, FULL_HEADS, FULL_INTERMEDIATE = 64, 8, 8, 176


@dataclass
class Task:
    name: str
    cost_per_rank: list[int]
    features: list[list[float]]
    weights: np.ndarray  # [L] utility weight per layer
    tau: np.ndarray  # [L] rank at which a layer's utility saturates (1 - 1/e)
    smooth: float  # penalty on rank jumps between neighbouring layers
    offset: float
    scale: float
    noise_sd: float = 0.0

    def layer_value(self, layer: int | slice, ranks: np.ndarray) -> np.ndarray:
        return self.weights[layer] * (1.0 - np.exp(-ranks / self.tau[layer]))

    def pair_values(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return -self.smooth * ((left - right) / 10.0) ** 2

    def true_score(self, vectors: np.ndarray) -> np.ndarray:
        v = np.atleast_2d(vectors).astype(np.float64)
        raw = self.layer_value(slice(None), v).sum(axis=1) + self.pair_values(v[:, :-1], v[:, 1:]).sum(axis=1)
        return self.offset + self.scale * raw / self.weights.sum()

    def measure(self, vector: list[int], rng: np.random.Generator) -> float:
        return float(self.true_score(np.asarray(vector))[0] + rng.normal(0.0, self.noise_sd))


def make_task(name: str, rng: np.random.Generator, num_layers: int, fixed: int, family_tilt: float,
              task_spread: float) -> Task:
    """A pruned model (first `fixed` layers and the last one unpruned) and its hidden score function."""
    widths = []
    ratio = rng.uniform(0.2, 0.6)
    for i in range(num_layers):
        cut = 0.0 if i < fixed or i == num_layers - 1 else np.clip(ratio * rng.uniform(0.3, 1.7), 0.0, 0.85)
        heads = max(1, round(FULL_HEADS * (1 - cut * rng.uniform(0.5, 1.0))))
        widths.append({"heads": heads, "kv_heads": heads,
                       "intermediate": max(8, 8 * round(FULL_INTERMEDIATE * (1 - cut) / 8))})
    cost = lora_cost_per_rank(widths, HIDDEN, HEAD_DIM)
    importance = rng.gamma(2.0, size=num_layers)
    features = structure_features(widths, FULL_HEADS, FULL_INTERMEDIATE, cost, list(importance))
    f = np.asarray(features)
    depth = np.linspace(0.0, 1.0, num_layers)
    structure = 0.6 + 2.0 * (1.0 - f[:, 1]) + 0.4 * (f[:, 3] - 1.0)  # pruned / important layers gain more
    profile = 1.0 + family_tilt * (depth - 0.5) + task_spread * (
        rng.normal() * (depth - 0.5) + rng.normal() * np.sin(np.pi * depth * rng.uniform(1.0, 3.0)))
    weights = np.clip(structure * profile, 0.05, None)
    tau = 2.0 + 8.0 * f[:, 1]  # wider MLPs keep gaining from rank for longer
    return Task(name, cost, features, weights, tau, smooth=float(rng.uniform(0.5, 2.0)) * weights.mean(),
                offset=float(rng.uniform(0.4, 0.7)), scale=0.05)


def optimum(task: Task, config: SearchConfig) -> tuple[np.ndarray, float]:
    """Exact noise-free optimum under the budget by dynamic programming over (layer, its rank, cost spent)."""
    cost = np.asarray(task.cost_per_rank, np.int64)
    unit = int(np.gcd.reduce(cost))
    units, room = cost // unit, resolve_budget(config, task.cost_per_rank) // unit
    searched = set(range(len(cost)) if config.searched_layers is None else config.searched_layers)
    options = [np.asarray(sorted(config.candidates) if i in searched else [config.fixed_rank]) for i in range(len(cost))]
    value = np.full((len(options[0]), room + 1), -np.inf)
    gain = task.layer_value(0, options[0])
    for b, r in enumerate(options[0]):
        if r * units[0] <= room:
            value[b, r * units[0]] = gain[b]
    back = []
    for i in range(1, len(cost)):
        gain = task.layer_value(i, options[i])
        new = np.full((len(options[i]), room + 1), -np.inf)
        arg = np.zeros((len(options[i]), room + 1), np.int64)
        for b, r in enumerate(options[i]):
            step = int(r * units[i])
            if step > room:
                continue
            for a, q in enumerate(options[i - 1]):
                cand = np.full(room + 1, -np.inf)
                cand[step:] = value[a, :room + 1 - step] + gain[b] + task.pair_values(float(q), float(r))
                better = cand > new[b]
                new[b, better], arg[b, better] = cand[better], a
        value, back = new, [*back, arg]
    b, spent = np.unravel_index(np.argmax(value), value.shape)
    best = [int(options[-1][b])]
    for i in range(len(cost) - 1, 0, -1):
        a = back[i - 1][b, spent]
        spent -= int(options[i][b] * units[i])
        b = a
        best.append(int(options[i - 1][b]))
    vector = np.asarray(best[::-1])
    return vector, float(task.true_score(vector)[0])


@dataclass
class Family:
    sources: list[Task]
    target: Task
    source_observations: list[Observation]


def make_family(seed: int, args: argparse.Namespace, config: SearchConfig) -> Family:
    """Related tasks: shared structure -> utility link and depth tilt, task-specific depth profiles."""
    rng = np.random.default_rng(seed)
    family_tilt = rng.uniform(-1.0, 1.0)
    tasks = [make_task(f"task{i}", rng, args.layers, args.fixed, family_tilt, args.task_spread)
             for i in range(args.source_tasks + 1)]
    observations = []
    for task in tasks:  # noise: a fraction of the spread of random feasible vectors' true scores
        spread = task.true_score(sample_rank_vectors(config, task.cost_per_rank, rng)[:1000]).std()
        task.noise_sd = args.noise * float(spread)
    for task in tasks[:-1]:
        for vector in sample_rank_vectors(config, task.cost_per_rank, rng)[rng.permutation(args.source_obs * 4)][
                :args.source_obs]:
            observations.append(Observation(task.name, [int(r) for r in vector], task.measure(vector, rng),
                                            task.features))
    return Family(tasks[:-1], dataclasses.replace(tasks[-1], name="target"), observations)


def make_surrogate(family: Family, mode: str, meta: bool, args: argparse.Namespace, seed: int,
                   config: SearchConfig):
    surrogate_config = SurrogateConfig(feature_mode=mode, seed=seed, meta_iterations=args.meta_iterations)
    state = new_surrogate(surrogate_config, config.candidates, num_layers=args.layers,
                          num_features=len(family.target.features[0]))
    return meta_pretrain(state, family.source_observations, progress=False) if meta else state


def search_trajectory(family: Family, surrogate, config: SearchConfig, evals: int, seed: int) -> list[tuple]:
    """(true score, measured score) of each vector the loop evaluates, in order."""
    target, rng = family.target, np.random.default_rng(seed + 10_000)
    state = SearchState(target.name, surrogate, target.cost_per_rank, target.features)
    loop_config = dataclasses.replace(config, max_iterations=evals, threshold=1e-12)  # run every evaluation
    _, history = run_loop(lambda v: target.measure(v, rng), state, loop_config, progress=False)
    return [(float(target.true_score(np.asarray(h["rank_vector"]))[0]), h["measured"]) for h in history]


def random_trajectory(family: Family, config: SearchConfig, evals: int, seed: int) -> list[tuple]:
    target, rng = family.target, np.random.default_rng(seed + 10_000)
    vectors = sample_rank_vectors(config, target.cost_per_rank, rng)
    vectors = vectors[rng.permutation(len(vectors))[:evals]]
    return [(float(target.true_score(v)[0]), target.measure(v, rng)) for v in vectors]


def summarise(trajectory: list[tuple], best: float, baseline: float, margin: float) -> tuple[int | None, float]:
    """Evaluations until a vector within margin of the optimum (None: never), and the normalised regret
    of the vector with the best measured score (what a search would report)."""
    gap = best - baseline
    hits = [i + 1 for i, (true, _) in enumerate(trajectory) if true >= best - margin * gap]
    chosen = max(trajectory, key=lambda t: t[1])[0]
    return (hits[0] if hits else None), (best - chosen) / gap


def tau_of(family: Family, surrogate, args: argparse.Namespace, seed: int, config: SearchConfig) -> float:
    """Kendall tau on held-out target trials after online adaptation on args.adapt_obs random ones."""
    target, rng = family.target, np.random.default_rng(seed + 20_000)
    vectors = sample_rank_vectors(config, target.cost_per_rank, rng)
    vectors = vectors[rng.permutation(len(vectors))[:args.adapt_obs + args.held_out]]
    observations = [Observation(target.name, [int(r) for r in v], target.measure(v, rng), target.features)
                    for v in vectors]
    for n in range(1, args.adapt_obs + 1):
        surrogate = adapt(surrogate, observations[:n], target.name)
    return ranking_quality(surrogate, observations[args.adapt_obs:], target.name)["kendall_tau"]


METHODS = {  # name -> (feature mode, meta-pretrained, SearchConfig overrides); None = random search
    "random search": None,
    "loop, ranks+structure, no meta": ("ranks+structure", False, {}),
    "loop, ranks+structure, meta": ("ranks+structure", True, {}),
    "loop, ranks+structure, meta, kappa=1": ("ranks+structure", True, {"kappa": 1.0}),
    "loop, ranks+structure, meta, uniform pool only": ("ranks+structure", True, {"local_fraction": 0.0}),
    "loop, ranks (paper input), meta": ("ranks", True, {}),
    "paper: ranks, meta, uniform pool only": ("ranks", True, {"local_fraction": 0.0}),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds (for tests)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--layers", type=int, default=16, help="decoder layers of the synthetic models")
    parser.add_argument("--fixed", type=int, default=3, help="first layers kept unpruned at fixed rank (plus the last)")
    parser.add_argument("--source-tasks", type=int, default=6)
    parser.add_argument("--source-obs", type=int, default=60, help="measured random vectors per source task")
    parser.add_argument("--evals", type=int, default=30, help="real evaluations per search")
    parser.add_argument("--num-samples", type=int, default=2000, help="vectors the surrogate scores per proposal")
    parser.add_argument("--meta-iterations", type=int, default=200)
    parser.add_argument("--noise", type=float, default=0.25, help="noise sd / sd of random vectors' scores")
    parser.add_argument("--task-spread", type=float, default=0.4, help="how much tasks' depth profiles differ")
    parser.add_argument("--margin", type=float, default=0.1, help="within margin * (optimum - random mean)")
    parser.add_argument("--adapt-obs", type=int, default=10, help="target trials seen before measuring tau")
    parser.add_argument("--held-out", type=int, default=200, help="held-out target trials for tau")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.layers, args.source_tasks, args.source_obs = 2, 8, 3, 20
        args.evals, args.num_samples, args.meta_iterations, args.adapt_obs, args.held_out = 6, 300, 20, 4, 40
    torch.set_num_threads(1)
    start = time.perf_counter()
    searched = list(range(args.fixed, args.layers - 1))
    results: dict[str, list[tuple]] = {name: [] for name in METHODS}
    taus: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        config = SearchConfig(num_samples=args.num_samples, searched_layers=searched, seed=seed)
        family = make_family(seed, args, config)
        best_vector, best = optimum(family.target, config)
        random_scores = family.target.true_score(sample_rank_vectors(config, family.target.cost_per_rank,
                                                                     np.random.default_rng(seed)))
        assert best >= random_scores.max() - 1e-12, "the dynamic programme missed the optimum"
        baseline = float(random_scores.mean())
        surrogates = {(mode, meta): make_surrogate(family, mode, meta, args, seed, config)
                      for mode in ("ranks", "ranks+structure") for meta in (False, True)}
        for (mode, meta), surrogate in surrogates.items():
            taus.setdefault(f"{mode}, {'meta' if meta else 'no meta'}", []).append(
                tau_of(family, surrogate, args, seed, config))
        for name, method in METHODS.items():
            if method is None:
                trajectory = random_trajectory(family, config, args.evals, seed)
            else:
                mode, meta, overrides = method
                trajectory = search_trajectory(family, surrogates[(mode, meta)],
                                               dataclasses.replace(config, **overrides), args.evals, seed)
            results[name].append(summarise(trajectory, best, baseline, args.margin))
    print(f"\n## Rank search on synthetic tasks ({args.seeds} seeds, {args.layers} layers, {len(searched)} searched, "
          f"{args.evals} evaluations, noise {args.noise}, margin {args.margin})\n")
    print("| method | reached margin | evals to margin: median, per seed | regret of best measured: mean |")
    print("|---|---|---|---|")
    for name, rows in results.items():
        evals = [np.inf if e is None else e for e, _ in rows]
        median = np.median(evals)
        shown = ", ".join("-" if e is None else str(e) for e, _ in rows)
        print(f"| {name} | {sum(e is not None for e, _ in rows)}/{len(rows)} | "
              f"{f'{median:.0f}' if np.isfinite(median) else f'>{args.evals}'}; {shown} | "
              f"{np.mean([r for _, r in rows]):.3f} |")
    print(f"\n## Surrogate ranking on held-out target trials (Kendall tau, {args.adapt_obs} target trials seen, "
          f"{args.held_out} held out)\n")
    print("| surrogate input | tau mean | tau per seed |")
    print("|---|---|---|")
    for name, values in taus.items():
        print(f"| {name} | {np.mean(values):.3f} | {', '.join(f'{v:.2f}' for v in values)} |")
    print(f"\nregret = (optimum - true score of the best-measured vector) / (optimum - mean random vector); "
          f"'-' = not within margin after {args.evals} evaluations; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
