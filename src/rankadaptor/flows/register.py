"""Which adapter a finished search registers, and with what held-out score: the honest choice."""

from __future__ import annotations

from rankadaptor.champion import SEARCHED
from rankadaptor.infra import storage
from rankadaptor.report import slim
from rankadaptor.trial import Observation, canonical_json


def registered_adapter(report: dict, best: Observation, ours: dict, baselines: dict, anchor: str,
                       baselines_uri: str, target: str) -> tuple[str, dict]:
    """(adapter URI, held-out evaluation) to register: the anchor (uniform) adapter unless the searched vector
    beat it beyond noise (report["decision"]). The registry's champion rule compares the held-out `mean`:
    the target's report-split score of the registered adapter."""
    searched = report["decision"]["register"] == SEARCHED
    registered = ours["report"] if searched else baselines[anchor]["report"]
    adapter = best.artifact if searched else storage.join(baselines_uri, anchor)
    return adapter, {**slim(registered), "mean": registered["scores"][target]}


def version_description(report: dict) -> str:
    """The model version's one paragraph: what was registered (searched or uniform ranks) and why, with the
    gain over uniform LoRA on the held-out split, its interval and the trial noise it was held to."""
    target, rank = report["target_task"], report["baseline_rank"]
    if not report["iterations"]:  # the go/no-go said no, or search.go is never: nothing was searched
        return (f"RankAdaptor registered the uniform LoRA r={rank} adapter for {target} without a search: "
                f"{report.get('stop_reason') or 'no search trials'}. The run that logged it holds report.md, "
                "report.json and the plots.")
    gain = report["comparisons"][report["anchor"]][target]
    searched = report["decision"]["register"] == SEARCHED
    what = (f"the searched per-layer LoRA rank vector {canonical_json(report['best']['rank_vector'])}" if searched
            else f"the uniform LoRA r={rank} adapter (the best searched vector "
                 f"{canonical_json(report['best']['rank_vector'])} did not earn its place)")
    why = ("it beats uniform LoRA beyond noise" if searched
           else "searching did not beat uniform LoRA beyond noise on this task")
    return (f"RankAdaptor registered {what} for {target}, because {why}: the gain of the searched vector over "
            f"uniform LoRA r={rank} on the held-out report split is {gain['diff']:+.4f} {report['score_unit']} "
            f"(95% CI {gain['low']:+.4f} .. {gain['high']:+.4f}; trial noise sd {report['noise']:.4f}), after "
            f"{report['iterations']} search trial(s); the search stopped: {report.get('stop_reason') or 'n/a'}. "
            "The run that logged it holds report.md, report.json and the plots.")


def model_description(base_model: str, pruning: str, target: str, alias: str) -> str:
    """The registered model's description: what its versions are and what the alias means."""
    return (f"{base_model.rstrip('/').rsplit('/', 1)[-1]} pruned ({pruning}) and recovered with LoRA by RankAdaptor "
            f"for {target}. Each version says in its description which adapter it holds (searched per-layer ranks "
            f"or uniform LoRA) and why; the alias '{alias}' points at the version with the best held-out score.")
