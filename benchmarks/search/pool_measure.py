"""Measure a pool of rank vectors on the bundled job: the real trials search_replay.py replays.

Prunes the bundled 230K-parameter LLaMA once as the default job does (20%, self-distillation corpus),
then really recovers (LoRA, the library's run_recover) and evaluates (evaluate.stage.score) distinct
budget-respecting rank vectors: uniform, increasing, decreasing, random (the search's own sampler) and
local mutations of uniform r8. Each trial is scored on the select and report splits of the target task
(ppl:heldout) and the default job's source tasks (ppl:boolq, ppl:piqa, ppl:hellaswag, ppl:openbookqa).
Uniform r8 and ten other vectors are repeated over extra recovery seeds to measure the noise, and a
subset (the first 24 vectors, and every mutation and random one) is also run at the job's full recovery
length, at two seeds, to measure how the cheap fidelities rank vectors against it
(benchmarks/search/fidelity.py). The cheap fidelities: `short` (1 epoch) and `supernet` (one nested-rank
supernet per seed, recover/supernet.py, trained at the full length; every measured vector is then scored by
truncating it, its row's seconds being the truncation and evaluation, `supernet_seconds` the one training).

Resumable: every finished trial is appended to the pool file (one JSON line, schema in benchmarks/search/POOL.md)
and a rerun skips the (vector, seed, fidelity) trials already there. Budget it with --minutes.
`--fidelity` runs only the full-length and supernet trials (for a pool whose short trials exist).
`--only R,R,...` measures that one vector (with --only-seed and --only-fidelity) and nothing else: how one
committed trial is regenerated (tests/integration/test_pool_measure.py).

    python -m benchmarks.search.pool_measure --pool benchmarks/search/pool_aidreams260k.jsonl --work <scratch dir>
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rankadaptor import widths
from rankadaptor.data import data_paths
from rankadaptor.evaluate.stage import score
from rankadaptor.infra import storage
from rankadaptor.job import JobConfig, load_job
from rankadaptor.models.structure import STRUCTURE_FILE
from rankadaptor.models.loading import load_model
from rankadaptor.recover.adapters import load_adapted
from rankadaptor.recover.nested import allowed_ranks
from rankadaptor.recover.stage import run_recover
from rankadaptor.recover.supernet import supernet_record, supernet_state, train_supernet, truncated_adapter
from rankadaptor.steps.model import prepare_data, prune
from rankadaptor.search.config import SearchConfig
from rankadaptor.search.sampling import sample_rank_vectors
from rankadaptor.widths import lora_parameters

SCHEMA = "rankadaptor-pool/1"
MACHINE_KEYS = ("model", "calibration", "ppl_text", "device")  # local paths and devices: not part of the data
SPLITS = ("select", "report")
SHORT_EPOCHS = 1  # the pool's recovery: half the default job's 2 epochs (agreement checked by --fidelity)
NOISE_SEEDS = (1, 2, 3, 4)  # extra recovery seeds of the noise vectors (seed 0 is every vector's first)
NOISE_VECTORS = 10  # vectors besides uniform r8 repeated over NOISE_SEEDS
FIDELITY_VECTORS = 24  # the first vectors also recovered at the job's full length (besides every mutation and random one)
FULL_KINDS = ("mutation", "random")  # near-budget and unstructured vectors, the ones a search proposes: all run full
FULL_SEEDS = (0, 1)  # the full fidelity at two seeds: its own seed-to-seed rank agreement is the ceiling
SUPERNET_SEEDS = (0, 1)  # one supernet training per seed
FIDELITIES = ("short", "full", "supernet")


def prepared(work: Path) -> tuple[JobConfig, str, str, dict, dict]:
    """The default job, its data, pruned model and structure artifact (made once under work/, reused by reruns):
    the job's own prepare-data and prune steps."""
    job = load_job()
    data_uri, pruned_uri, structure_uri = str(work / "data"), str(work / "pruned"), str(work / "structure")
    if not (work / "data" / "data.json").is_file():
        prepare_data(job, data_uri)
    if not (work / "structure" / STRUCTURE_FILE).is_file():
        prune(job, data_uri, pruned_uri, structure_uri)
    return job, data_uri, pruned_uri, data_paths(data_uri), storage.read_json(work / "structure" / STRUCTURE_FILE)


def plan(structure: dict, seed: int) -> list[tuple[str, list[int]]]:
    """(kind, vector) in measuring order: uniform first, then monotone, local mutations of uniform r8 and
    random vectors in turn.
    Every vector is distinct and within the default budget (LoRA rank 8 everywhere)."""
    config = SearchConfig()
    cost, budget = structure["cost_per_rank"], widths.budget(structure["cost_per_rank"], config.budget)
    cands, num_layers = sorted(config.candidates), len(structure["cost_per_rank"])
    fits = [list(v) for v in itertools.product(cands, repeat=num_layers) if lora_parameters(list(v), cost) <= budget]
    rng = np.random.default_rng(seed)
    out: list[tuple[str, list[int]]] = [("uniform", [r] * num_layers) for r in cands if [r] * num_layers in fits]
    mono = [("increasing", v) for v in fits if v == sorted(v) and len(set(v)) > 1]
    mono += [("decreasing", v) for v in fits if v == sorted(v, reverse=True) and len(set(v)) > 1]
    uniform8 = [8] * num_layers
    local = [("mutation", v) for v in fits if sum(a != b for a, b in zip(v, uniform8)) in (1, 2)]
    random = [("random", [int(r) for r in v]) for v in
              sample_rank_vectors(SearchConfig(num_samples=4000, local_fraction=0.0), cost, rng)]
    shuffled = [[family[i] for i in rng.permutation(len(family))] for family in (mono, local, random)]
    for row in itertools.zip_longest(*shuffled):  # round robin: a budget cut leaves every family represented
        out.extend(v for v in row if v is not None)
    seen, unique = set(), []
    for kind, v in out:
        if tuple(v) not in seen:
            seen.add(tuple(v))
            unique.append((kind, v))
    return unique


def trial(job: JobConfig, pruned_uri: str, data: dict, structure: dict, vector: list[int], seed: int, epochs: int,
          scratch: Path) -> dict:
    """One real trial: recover with the library (the job's recovery, this seed and length), evaluate the select
    and report splits of every task as the job's evaluate step does."""
    config = dataclasses.replace(job.recover_config(data["train"], vector), seed=seed, epochs=epochs)
    adapter = str(scratch / f"adapter-{seed}-{epochs}-{'-'.join(map(str, vector))}")
    started = time.perf_counter()
    run_recover(config, pruned_uri, adapter)
    model, tokenizer = load_adapted(pruned_uri, adapter)
    scores = scored(job, model, tokenizer, data)
    storage.remove(adapter)
    return {"scores": scores, "seconds": time.perf_counter() - started, "recovery": recovery(config)}


def scored(job: JobConfig, model, tokenizer, data: dict) -> dict:
    """The select and report scores of every task, as the job's evaluate step computes them."""
    tasks = [job.target_task, *job.source_tasks]
    return {split: score(model, tokenizer, job.eval_config(tasks, split, data.get("heldout") or None))["scores"]
            for split in SPLITS}


def recovery(config) -> dict:
    return {k: v for k, v in vars(config).items() if k in ("epochs", "lr", "batch_size", "cutoff", "alpha_ratio",
                                                           "dropout")}


def supernet_trial(job: JobConfig, pruned_uri: str, data: dict, structure: dict, vector: list[int], seed: int,
                   work: Path, cache: dict) -> dict:
    """One vector scored by the supernet of this seed (trained once, at the job's full length, and kept under
    work/): truncated to the vector, evaluated as a trial is."""
    uri = str(work / f"supernet-{seed}")
    config = dataclasses.replace(job.recover_config(data["train"]), seed=seed, method="lora")
    if not (work / f"supernet-{seed}" / "supernet.json").is_file():
        search = job.search_config(structure["cost_per_rank"])
        allowed = allowed_ranks(len(vector), search.candidates, search.searched_layers, search.fixed_rank)
        train_supernet(config, allowed, pruned_uri, uri)
    if uri not in cache:
        cache.clear()
        cache[uri] = supernet_state(uri)
    started = time.perf_counter()
    model, tokenizer = load_model(pruned_uri)
    scores = scored(job, truncated_adapter(model, uri, vector, cache[uri]), tokenizer, data)
    return {"scores": scores, "seconds": time.perf_counter() - started, "recovery": recovery(config),
            "supernet_seconds": supernet_record(uri)["seconds"]}


def summarise(path: Path) -> dict:
    """Fidelity agreement (Kendall tau of short vs full recovery on the vectors measured both ways, per
    split) and noise (pooled seed-to-seed sd vs between-vector sd of seed-0 scores), target task."""
    from scipy.stats import kendalltau

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    target = rows[0]["target_task"]
    out: dict = {"rows": len(rows), "seconds": round(sum(r["seconds"] for r in rows), 1)}
    short = {tuple(r["rank_vector"]): r for r in rows if r["fidelity"] == "short" and r["seed"] == 0}
    full = {tuple(r["rank_vector"]): r for r in rows if r["fidelity"] == "full" and r["seed"] == 0}
    out["distinct_vectors"] = len(short)
    out["kinds"] = {k: sum(r["kind"] == k for r in short.values()) for k in sorted({r["kind"] for r in short.values()})}
    both = sorted(set(short) & set(full))
    for split in SPLITS:
        a = [short[v]["scores"][split][target] for v in both]
        b = [full[v]["scores"][split][target] for v in both]
        out[f"fidelity_tau_{split}"] = float(kendalltau(a, b).statistic) if len(both) > 2 else None
        seeds: dict = {}
        for r in rows:
            if r["fidelity"] == "short":
                seeds.setdefault(tuple(r["rank_vector"]), []).append(r["scores"][split][target])
        groups = [np.asarray(v) for v in seeds.values() if len(v) >= 2]
        dof = sum(len(g) - 1 for g in groups)
        out[f"noise_sd_{split}"] = float(np.sqrt(sum(((g - g.mean()) ** 2).sum() for g in groups) / dof)) if dof else None
        out[f"between_sd_{split}"] = float(np.std([r["scores"][split][target] for r in short.values()], ddof=1))
        out[f"uniform8_seed_sd_{split}"] = float(np.std(seeds.get((8,) * len(both[0]), [np.nan]), ddof=1)) if both else None
    out["fidelity_vectors"], out["noise_vectors"] = len(both), len(groups)
    out["seconds_per_trial"] = {f: round(float(np.mean([r["seconds"] for r in rows if r["fidelity"] == f])), 2)
                                for f in FIDELITIES if any(r["fidelity"] == f for r in rows)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default="benchmarks/search/pool_aidreams260k.jsonl", help="append-only pool file")
    parser.add_argument("--work", default=None, help="scratch directory for data, pruned model, adapters")
    parser.add_argument("--minutes", type=float, default=22.0, help="stop starting trials after this long")
    parser.add_argument("--max-vectors", type=int, default=400, help="distinct vectors at seed 0, short recovery")
    parser.add_argument("--seed", type=int, default=0, help="seed of the vector plan")
    parser.add_argument("--extend", action="store_true", help="only measure more distinct vectors (seed 0, short)")
    parser.add_argument("--fidelity", action="store_true",
                        help="only the full-length (FULL_SEEDS) and supernet (SUPERNET_SEEDS) trials")
    parser.add_argument("--summary", action="store_true", help="print the pool's fidelity and noise figures, run nothing")
    parser.add_argument("--only", default=None, metavar="R,R,...",
                        help="measure only this rank vector (one trial: --only-seed, --only-fidelity), e.g. 8,8,8,8")
    parser.add_argument("--only-seed", type=int, default=0, help="recovery seed of the --only trial")
    parser.add_argument("--only-fidelity", choices=FIDELITIES, default="short",
                        help="recovery length of the --only trial")
    args = parser.parse_args()
    if args.summary:
        print(json.dumps(summarise(Path(args.pool)), indent=1))
        return
    torch.set_num_threads(1)
    work = Path(args.work or Path(tempfile.gettempdir()) / "rankadaptor-pool")
    work.mkdir(parents=True, exist_ok=True)
    job, _, pruned_uri, data, structure = prepared(work)
    pool = Path(args.pool)
    done, measured_short = set(), []
    if pool.is_file():
        for line in pool.read_text().splitlines():
            row = json.loads(line)
            done.add((tuple(row["rank_vector"]), row["seed"], row["fidelity"]))
            if row["fidelity"] == "short" and row["seed"] == 0:
                measured_short.append((row["kind"], row["rank_vector"]))
    vectors = plan(structure, args.seed)[:args.max_vectors]
    kinds = {tuple(v): k for k, v in vectors}
    short = [(v, 0, "short") for _, v in vectors]
    noise_pick = [[8] * len(structure["cost_per_rank"])] + [v for _, v in vectors if v != [8] * len(v)][::max(
        1, len(vectors) // NOISE_VECTORS)][:NOISE_VECTORS]
    noise = [(v, s, "short") for v in noise_pick for s in NOISE_SEEDS]
    # the other fidelities measure the vectors with short trials, in the pool's order (a fresh pool: the plan's)
    by_short = measured_short or vectors
    full_pick = [v for _, v in by_short[:FIDELITY_VECTORS]] + [v for k, v in by_short[FIDELITY_VECTORS:]
                                                              if k in FULL_KINDS]
    fidelity = [[(v, s, "full") for v in full_pick] for s in FULL_SEEDS]
    short_again = [(v, FULL_SEEDS[1], "short") for v in full_pick]  # the short fidelity's own seed agreement
    supernet = [[(v, s, "supernet") for _, v in by_short] for s in SUPERNET_SEEDS]
    kinds.update({tuple(v): k for k, v in measured_short})
    # noise and fidelity first on a few vectors, so a budget cut still leaves both measurable
    order = (short[:FIDELITY_VECTORS] + fidelity[0] + noise + supernet[0] + short_again + fidelity[1]
             + supernet[1] + short[FIDELITY_VECTORS:])
    if args.extend:  # more distinct vectors only; the noise and fidelity trials stay those already measured
        order = short
    if args.fidelity:
        order = fidelity[0] + supernet[0] + short_again + fidelity[1] + supernet[1]
    if args.only:
        order = [([int(r) for r in args.only.split(",")], args.only_seed, args.only_fidelity)]
    budget = job.budget(structure["cost_per_rank"])
    full_epochs = job.recover.epochs
    deadline = time.monotonic() + 60 * args.minutes
    session = time.strftime("%Y-%m-%d", time.gmtime())  # the run's UTC date: rows timed on one machine together
    scratch = work / "adapters"
    measured, supernets = 0, {}
    for vector, seed, fidelity_name in order:
        if (tuple(vector), seed, fidelity_name) in done:
            continue
        if time.monotonic() > deadline:
            print(f"time budget reached after {measured} new trials")
            break
        if fidelity_name == "supernet":
            result = supernet_trial(job, pruned_uri, data, structure, vector, seed, work, supernets)
        else:
            result = trial(job, pruned_uri, data, structure, vector, seed,
                           SHORT_EPOCHS if fidelity_name == "short" else full_epochs, scratch)
        pruning = {k: v for k, v in structure["pruning"].items() if k not in MACHINE_KEYS}
        row = {"schema": SCHEMA, "model": "aidreams-260k", "pruning": pruning,
               "rank_vector": vector, "kind": kinds.get(tuple(vector), "other"), "seed": seed,
               "fidelity": fidelity_name, "recovery": result["recovery"], "budget": budget,
               "trainable_params": lora_parameters(vector, structure["cost_per_rank"]),
               "cost_per_rank": structure["cost_per_rank"], "layer_features": structure["layer_features"],
               "target_task": job.target_task, "source_tasks": job.source_tasks,
               "scores": result["scores"], "seconds": round(result["seconds"], 3), "measured": session}
        if "supernet_seconds" in result:
            row["supernet_seconds"] = round(result["supernet_seconds"], 3)
        with pool.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        done.add((tuple(vector), seed, fidelity_name))
        measured += 1
        print(f"{measured} {fidelity_name} seed={seed} {vector} {result['scores']['select'][job.target_task]:.4f} "
              f"{result['seconds']:.1f}s", flush=True)


if __name__ == "__main__":
    main()
