"""How well each cheap fidelity ranks rank vectors against independent full recoveries, and what it costs.

Reads the measured pool (benchmarks/search/pool_measure.py): for each cheap fidelity (`short`: a 1-epoch
recovery; `supernet`: the vector truncated from one nested-rank supernet, recover/supernet.py) its Kendall tau
and Spearman rho, at seed 1, with the full recovery (the default job's 2 epochs) of the same vectors at seed 0, on the
select and report splits of the target task, with 95% bootstrap intervals over the vectors
(stats.rank_correlation_interval). The ceiling: the full recovery at seed 1 against seed 0 (no fidelity can
rank the seed-0 full scores better than another full recovery does). All rows are on the same vectors; a
second table repeats them on the near-budget vectors (those a search chooses between). The cheap fidelities
at seed 0 are shown too, but share the reference's init and data order, so they are not independent.

Cost per trial: the median wall seconds of the fidelity's rows timed in the pool's latest session (one
machine, one day); the supernet's adds its one training spread over `--trials` trials. The better buy: the
cheap fidelity with the higher select tau, unless a cheaper one's interval overlaps it (then the cheaper).

    python -m benchmarks.search.fidelity --pool benchmarks/search/pool_aidreams260k.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rankadaptor.stats import rank_correlation_interval

SPLITS = ("select", "report")
REFERENCE = ("full", 0)
CHEAP = {"short": ("short", 1), "supernet": ("supernet", 1)}  # seed 1: independent of the reference's seed 0
CEILING = ("full", 1)
# seed 0 shares the reference's init and data order (a 1-epoch run is the first half of its 2 epochs): not
# independent, shown only to make that visible, not in the choice
REPLICATES = {"short": ("short", 0), "supernet": ("supernet", 0)}
METHODS = {"kendall": "tau", "spearman": "rho"}


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def scores(rows: list[dict], fidelity: tuple[str, int], split: str) -> dict[tuple[int, ...], float]:
    name, seed = fidelity
    target = rows[0]["target_task"]
    return {tuple(r["rank_vector"]): r["scores"][split][target] for r in rows
            if r["fidelity"] == name and r["seed"] == seed}


def correlations(rows: list[dict], fidelity: tuple[str, int], vectors: list[tuple[int, ...]],
                 boot: int) -> dict[str, tuple[float, float | None, float | None]]:
    """{f"{tau|rho}_{split}": (value, low, high)} of the fidelity against the reference on these vectors."""
    from scipy.stats import kendalltau, spearmanr

    out = {}
    for split in SPLITS:
        cheap, full = scores(rows, fidelity, split), scores(rows, REFERENCE, split)
        a, b = [cheap[v] for v in vectors], [full[v] for v in vectors]
        for method, short_name in METHODS.items():
            value = (kendalltau if method == "kendall" else spearmanr)(a, b).statistic
            out[f"{short_name}_{split}"] = (float(value), *rank_correlation_interval(a, b, method, boot))
    return out


def seconds_per_trial(rows: list[dict], name: str, trials: int) -> tuple[float, float | None]:
    """(seconds per trial, seconds of the one supernet training) from the latest session's rows."""
    session = max(r.get("measured", "") for r in rows)
    timed = [r for r in rows if r["fidelity"] == name and r.get("measured", "") == session]
    per_trial = float(np.median([r["seconds"] for r in timed]))
    if name != "supernet":
        return per_trial, None
    training = float(np.median([r["supernet_seconds"] for r in timed]))
    return per_trial + training / trials, training


def table(rows: list[dict], vectors: list[tuple[int, ...]], boot: int, trials: int) -> tuple[list[str], dict]:
    def cell(value):
        v, low, high = value
        return f"{v:+.2f} [{low:+.2f}, {high:+.2f}]" if low is not None else f"{v:+.2f}"

    lines = ["| fidelity | vectors | tau select | rho select | tau report | rho report | s / trial | tau select / s |",
             "|---|---|---|---|---|---|---|---|"]
    results = {}
    named = {**{f"{k} (seed 1)": v for k, v in CHEAP.items()},
             **{f"{k}, seed 0 (shares the reference's seed)": v for k, v in REPLICATES.items()},
             "full, seed 1 (ceiling)": CEILING}
    for label, fidelity in named.items():
        corr = correlations(rows, fidelity, vectors, boot)
        cost, training = seconds_per_trial(rows, fidelity[0], trials)
        results[label] = {**corr, "seconds": cost, "training": training}
        extra = f" (incl. {training:.1f} s training / {trials})" if training is not None else ""
        lines.append(f"| {label} | {len(vectors)} | " + " | ".join(cell(corr[k]) for k in
                     ("tau_select", "rho_select", "tau_report", "rho_report"))
                     + f" | {cost:.2f}{extra} | {corr['tau_select'][0] / cost:.3f} |")
    return lines, results


def better_buy(results: dict) -> str:
    """The cheap fidelity with the higher select tau, or a cheaper one whose interval overlaps it."""
    cheap = {label: r for label, r in results.items() if label.endswith("(seed 1)")}
    best = max(cheap, key=lambda label: cheap[label]["tau_select"][0])
    low = cheap[best]["tau_select"][1]
    cheaper = [label for label, r in cheap.items() if r["seconds"] < cheap[best]["seconds"] and low is not None
               and r["tau_select"][2] is not None and r["tau_select"][2] >= low]
    if cheaper:
        pick = min(cheaper, key=lambda label: cheap[label]["seconds"])
        return (f"{pick}: cheaper ({cheap[pick]['seconds']:.2f} s vs {cheap[best]['seconds']:.2f} s per trial) and "
                f"its select tau interval overlaps that of {best}, the better ranker")
    return (f"{best}: the higher select tau ({cheap[best]['tau_select'][0]:+.2f}, interval "
            f"{low:+.2f}..{cheap[best]['tau_select'][2]:+.2f}), no cheaper fidelity's interval reaches it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default="benchmarks/search/pool_aidreams260k.jsonl")
    parser.add_argument("--boot", type=int, default=2000, help="bootstrap resamples per interval")
    parser.add_argument("--trials", type=int, default=20, help="trials one supernet training is spread over")
    parser.add_argument("--near", type=float, default=0.9, help="near-budget: at least this share of the budget")
    args = parser.parse_args()
    rows = load(Path(args.pool))
    have = [set(scores(rows, f, "select")) for f in (REFERENCE, CEILING, *CHEAP.values(), *REPLICATES.values())]
    vectors = sorted(set.intersection(*have))
    params = {tuple(r["rank_vector"]): r["trainable_params"] / r["budget"] for r in rows}
    near = [v for v in vectors if params[v] >= args.near]
    full_cost, _ = seconds_per_trial(rows, "full", args.trials)
    print(f"target {rows[0]['target_task']}; reference: full recovery ({REFERENCE[0]}, seed {REFERENCE[1]}), "
          f"{full_cost:.2f} s per trial; 95% bootstrap intervals ({args.boot} resamples of the vectors)\n")
    lines, results = table(rows, vectors, args.boot, args.trials)
    print("\n".join(lines))
    print(f"\nbetter buy (the default): {better_buy(results)}\n")
    print(f"near-budget vectors only (>= {args.near:.0%} of the budget):\n")
    print("\n".join(table(rows, near, args.boot, args.trials)[0]))


if __name__ == "__main__":
    main()
