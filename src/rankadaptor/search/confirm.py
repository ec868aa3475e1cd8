"""The search's finalists re-measured before one is chosen: the best searched vectors and uniform, each at
several seeds at full fidelity, the best chosen by its seed mean.

The best of N noisy trials is biased upwards (the winner's curse): where a trial's seed noise is as large as the
gain between vectors, the single best select score is often a lucky seed. Re-measuring the top few and uniform
at more seeds and choosing by the mean removes most of that luck for a few trials' cost; the registration then
keeps its paired rule on the report split (champion.choose_adapter) for the chosen vector.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rankadaptor.trial import Observation


def finalist_vectors(trials: list[Observation], uniform: list[int], top: int) -> list[list[int]]:
    """The `top` best searched vectors by their (job-seed) select score, uniform excluded, then uniform (if it is
    among the trials: the anchor); none when no searched vector was measured (nothing to confirm: a job without
    a search)."""
    ranked = sorted((o for o in trials if o.rank_vector != uniform), key=lambda o: -o.score)
    vectors: list[list[int]] = []
    for o in ranked:
        if len(vectors) < top and o.rank_vector not in vectors:
            vectors.append(list(o.rank_vector))
    anchor = [list(uniform)] if any(o.rank_vector == uniform for o in trials) else []
    return [*vectors, *anchor] if vectors else []


def seed_table(vectors: list[list[int]], scores: dict[tuple[int, ...], list[float]]) -> list[dict[str, Any]]:
    """One row per finalist (in the order given): its scores at each seed (the job's seed first), their mean and
    how many there are."""
    return [{"rank_vector": list(v), "scores": list(scores[tuple(v)]),
             "mean": float(np.mean(scores[tuple(v)])), "seeds": len(scores[tuple(v)])} for v in vectors]


def chosen(table: list[dict[str, Any]]) -> list[int]:
    """The finalist with the best seed mean (the earlier row on a tie: the better job-seed score)."""
    return list(max(table, key=lambda row: row["mean"])["rank_vector"])


def seed_noise(table: list[dict[str, Any]]) -> float | None:
    """The pooled seed-to-seed sd of a full trial's score over the finalists' repeated seeds (None below two
    seeds): the noise the search was held to, measured at full fidelity."""
    deviations = [s - row["mean"] for row in table if row["seeds"] > 1 for s in row["scores"]]
    dof = sum(row["seeds"] - 1 for row in table if row["seeds"] > 1)
    return float(np.sqrt(np.sum(np.square(deviations)) / dof)) if dof else None


def confirmation_line(task: str, table: list[dict[str, Any]], uniform: list[int]) -> str:
    """The terminal's one line for the confirmation: each finalist's seed mean and which one was chosen."""
    best = chosen(table)
    rows = ", ".join(f"{'uniform' if row['rank_vector'] == uniform else row['rank_vector']} {row['mean']:.4f}"
                     for row in table)
    noise = seed_noise(table)
    said = "uniform (no searched finalist beats it on the seed mean)" if best == uniform else str(best)
    return (f"{task} finalists by mean of {table[0]['seeds']} seeds: {rows}; chosen {said}"
            + (f"; full-trial seed noise sd {noise:.4f}" if noise is not None else ""))
