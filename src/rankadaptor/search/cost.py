"""What a job's search cost, against the uniform adapter alone, and what its go/no-go saved: the report's
`cost` section (report.build_report adds it; report.markdown prints it last, so it ends the terminal too).
Seconds are each trial's recovery + evaluation wall seconds (GPU-seconds on a one-GPU step)."""

from __future__ import annotations

from typing import Any

from rankadaptor.trial import FULL, Observation


def cost_section(trials: list[Observation], uniform_seconds: float | None, go: dict | None = None,
                 bootstrap_seconds: list[float] | None = None, bootstrap_fidelity: str = FULL,
                 confirm_seconds: list[float] | None = None) -> dict[str, Any]:
    """trials: the target's full trials of the search state (the uniform anchor, without a prediction, is the
    uniform adapter's own cost and not counted as search); uniform_seconds: the uniform adapter alone; go: the
    go/no-go decision (search.go.GoDecision as a dict) or None; bootstrap_seconds: each source-task bootstrap
    trial the search learned from, at bootstrap_fidelity; confirm_seconds: each full trial re-measuring a finalist
    at another seed (search.confirm)."""
    stages: dict[str, dict[str, Any]] = {}

    def add(stage: str, fidelity: str, seconds: list[float]) -> None:
        if seconds:
            stages[stage] = {"fidelity": fidelity, "trials": len(seconds), "seconds": sum(seconds)}

    if go and go.get("mode") == "auto":
        cheap = len(go.get("uniform_scores") or []) + len(go.get("candidate_scores") or [])
        if cheap:
            stages["go/no-go"] = {"fidelity": go.get("fidelity", "short"), "trials": cheap,
                                  "seconds": float(go.get("cheap_seconds") or 0.0)}
    add("bootstrap", bootstrap_fidelity, list(bootstrap_seconds or []))
    add("search", FULL, [o.cost for o in trials if o.predicted is not None and o.cost is not None])
    add("finalists at more seeds", FULL, list(confirm_seconds or []))
    by_fidelity: dict[str, float] = {}
    for row in stages.values():
        by_fidelity[row["fidelity"]] = by_fidelity.get(row["fidelity"], 0.0) + row["seconds"]
    total = sum(by_fidelity.values())
    return {"stages": stages, "by_fidelity": by_fidelity, "search_seconds": total,
            "uniform_seconds": uniform_seconds,
            "ratio_to_uniform": total / uniform_seconds if uniform_seconds else None,
            "go": None if go is None else {k: go.get(k) for k in ("go", "mode", "reason", "noise", "headroom",
                                                                  "needed", "trials_skipped")},
            "seconds_not_spent": float((go or {}).get("seconds_not_spent") or 0.0)}


def cost_markdown(cost: dict[str, Any]) -> str:
    """The cost section as report.md's last lines."""
    lines = ["## Cost", "", "| stage | fidelity | trials | seconds |", "|---|---|---|---|"]
    lines += [f"| {name} | {row['fidelity']} | {row['trials']} | {row['seconds']:.1f} |"
              for name, row in cost["stages"].items()]
    uniform = cost["uniform_seconds"]
    against = (f" against {uniform:.1f} s for the uniform adapter alone ({cost['ratio_to_uniform']:.1f}x)"
               if uniform else "")
    fidelities = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in cost["by_fidelity"].items()) or "nothing"
    lines += ["", f"The search spent {cost['search_seconds']:.1f} s of trials ({fidelities}){against}."]
    if cost["go"] is not None:
        lines.append(f"Go/no-go ({cost['go']['mode']}): {cost['go']['reason']}"
                     + (f"; {cost['seconds_not_spent']:.1f} s of recovery not spent "
                        f"({cost['go']['trials_skipped']} trials skipped)." if cost["seconds_not_spent"] else "."))
    return "\n".join(lines) + "\n"
