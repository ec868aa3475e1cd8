"""The one trial record: what decides a trial's result (TrialKey, whose sha256 is the trial id), what was
measured (Observation), and what every trial of one job shares (TrialContext). Plain values: the bank
stores them, the search and the report read them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from rankadaptor.config import option
from rankadaptor.errors import check
from rankadaptor.widths import lora_parameters


FULL = "full"  # the fidelity of a trial that ran every recovery step
# The cheap fidelity's default share of the recovery steps (go/no-go and bootstrap trials): a short recovery
# ranks vectors as well as a second full one (benchmarks/RESULTS.md, "Fidelities") at about a third of the steps.
CHEAP_FRACTION = 0.34


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def fidelity(step_fraction: float) -> str:
    """A trial's fidelity name: "full", or "short:<fraction>" for a recovery of that share of the steps."""
    check(0 < step_fraction <= 1, f"step fraction {step_fraction} must be in (0, 1]")
    return FULL if step_fraction == 1 else f"short:{step_fraction:g}"


def step_fraction(name: str) -> float:
    """The share of the recovery steps a fidelity name stands for (fidelity's inverse)."""
    if name == FULL:
        return 1.0
    kind, _, value = name.partition(":")
    try:
        fraction = float(value)
    except ValueError:
        fraction = float("nan")
    check(kind == "short" and 0 < fraction < 1, f"fidelity={name!r} is not accepted: use 'full' or 'short:<fraction "
                                                "in (0, 1)>'")
    return fraction


@dataclasses.dataclass(frozen=True)
class TrialKey:
    """Every input that determines a trial's result; its sha256 is the trial id."""

    base_model: str
    base_checksum: str
    pruning: dict[str, Any]
    task: str
    split: str
    rank_vector: list[int]
    recovery: dict[str, Any]
    data_checksum: str
    seed: int
    task_checksum: str = ""  # the rows the task is scored on (evaluate.task_checksum): a changed file, a new trial
    fidelity: str = FULL  # how much recovery the trial paid for (fidelity()): a short and a full trial differ

    def params(self) -> dict[str, str]:
        """The MLflow params, as strings (dicts and lists as canonical JSON). A full trial has no fidelity
        param, so its id is the one it had before fidelities existed (banks of earlier runs stay valid)."""
        return {f.name: v if isinstance(v := getattr(self, f.name), str) else canonical_json(v)
                for f in dataclasses.fields(self) if not (f.name == "fidelity" and self.fidelity == FULL)}

    @property
    def id(self) -> str:
        return hashlib.sha256(canonical_json(self.params()).encode()).hexdigest()

    def validate(self) -> None:
        check(bool(self.rank_vector) and all(isinstance(r, int) and not isinstance(r, bool) and r >= 0
                                             for r in self.rank_vector),
              f"rank_vector={self.rank_vector!r} must be a non-empty list of non-negative ints (one rank per layer)")
        check(isinstance(self.pruning, dict) and isinstance(self.recovery, dict),
              "pruning and recovery must be config mappings")
        check(bool(self.task) and bool(self.split), f"task={self.task!r} and split={self.split!r} must be non-empty")
        step_fraction(self.fidelity)


@dataclass
class Observation:
    """One measured trial: a full rank vector (one rank per decoder layer) and its score on a task."""

    task: str = option("", "task (or task set) the score was measured on")
    rank_vector: list[int] = option([], "LoRA rank of every decoder layer, fixed layers included")
    score: float = option(float("nan"), "measured score (higher is better)")
    layer_features: list[list[float]] | None = option(
        None, "per-layer structural features of the pruned model, O(1) values (see structure_features)")
    cost: float | None = option(None, "seconds the trial took: recovery + evaluation (GPU-seconds on a GPU)")
    predicted: float | None = option(None, "the surrogate's prediction before the trial")
    artifact: str | None = option(None, "URI of the trial's adapter artifact, where it was kept")
    group: str | None = option(None, "model and pruning the trial ran on (e.g. the pruned model's checksum): "
                                     "meta-pretraining z-scores each (group, task) on its own")
    fidelity: str = option(FULL, "how much recovery the trial paid for: 'full' or 'short:<fraction of the steps>'")

    @property
    def seconds(self) -> float | None:
        """What the trial cost, in seconds (the field is `cost`, kept for banks and artifacts of earlier runs)."""
        return self.cost

    def validate(self) -> None:
        check(bool(self.task), "an observation needs a non-empty task name")
        check(len(self.rank_vector) > 0 and all(isinstance(r, int) and r >= 0 for r in self.rank_vector),
              f"rank_vector={self.rank_vector!r} must be a non-empty list of non-negative ints")
        check(math.isfinite(self.score), f"score={self.score!r} of task {self.task!r} must be a finite number")
        step_fraction(self.fidelity)
        if self.layer_features is not None:
            check(len(self.layer_features) == len(self.rank_vector),
                  f"layer_features has {len(self.layer_features)} rows for {len(self.rank_vector)} layers")
            widths = {len(row) for row in self.layer_features}
            check(len(widths) == 1, f"layer_features rows must all have the same length, got {sorted(widths)}")


@dataclass
class TrialContext:
    model_checksum: str  # the pruned model's weights, config and tokenizer (not its report's timings)
    pruning: dict  # the prune config its report recorded
    cost_per_rank: list[int]  # LoRA parameters per unit of rank of each decoder layer
    layer_features: list[list[float]]  # the surrogate's per-layer structure features
    data_checksum: str

    @property
    def num_layers(self) -> int:
        return len(self.cost_per_rank)


def history(trials: list[Observation], cost_per_rank: list[int]) -> list[dict[str, Any]]:
    """The search's trials in order, as the loop returns them and the report, its plots and the terminal read
    them (the baseline anchor, which has no prediction, left out): each trial's record plus its iteration
    (search trial #1 is the first trial after the uniform baseline), error, best score so far (starting at
    the uniform baseline: every trial before it counts) and trainable parameters."""
    rows, best = [], None
    for o in trials:
        best = o.score if best is None else max(best, o.score)
        if o.predicted is not None:
            rows.append({"iteration": len(rows) + 1, "rank_vector": o.rank_vector, "predicted": o.predicted,
                         "measured": o.score, "abs_error": abs(o.predicted - o.score), "best": best,
                         "trainable_params": lora_parameters(o.rank_vector, cost_per_rank)})
    return rows
