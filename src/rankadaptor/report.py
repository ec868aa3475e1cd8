"""The final report: the comparison table (the paper's Table 2 plus both splits), the verdict against
uniform LoRA with bootstrap intervals, the search history, and three plots.

`build_report` is a pure function of the evaluations and the trials; `write_report` draws the plots (PNG,
no display) and writes report.md and report.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rankadaptor.champion import SEARCHED, choose_adapter
from rankadaptor.evaluate.tasks import parse_task
from rankadaptor.search.cost import cost_markdown, cost_section
from rankadaptor.stats import kendall_tau, paired_bootstrap
from rankadaptor.trial import Observation, history
from rankadaptor.widths import lora_parameters

PLOTS = ("ranks.png", "predicted_vs_measured.png", "convergence.png")
PRUNED, UNIFORM, ADALORA, OURS = "pruned", "lora_uniform", "adalora", "rankadaptor"  # the table's methods
MASKED_UNIFORM, LOSA = "losa_masked_uniform", "losa"  # sparse jobs (LoSA): masked uniform LoRA, LoSA's ranks
BASELINES = (PRUNED, UNIFORM, MASKED_UNIFORM, LOSA, ADALORA)  # the table's order


def verdict_line(task: str, diff: dict, baseline_rank: int, masked: bool = False) -> str:
    """What the comparison with uniform LoRA (masked for sparse jobs) says, in plain words (significant at 95%
    or not)."""
    interval = f"{diff['diff']:+.4f} (95% CI {diff['low']:+.4f} .. {diff['high']:+.4f})"
    lora = f"uniform LoRA r={baseline_rank}" + (" (masked)" if masked else "")
    if diff["low"] > 0:
        return f"RankAdaptor significantly beats {lora} on held-out {task}: {interval}"
    if diff["high"] < 0:
        return f"RankAdaptor is significantly WORSE than {lora} on held-out {task}: {interval}"
    return f"RankAdaptor does NOT significantly beat {lora} on held-out {task}: {interval} includes 0"


def slim(result: dict) -> dict:
    """An evaluation without the per-row lists (for tags and tables)."""
    return {**result, "tasks": {t: {k: v for k, v in r.items() if k not in ("rows", "row_ids", "skipped")}
                                for t, r in result["tasks"].items()}}


def _mean(result: dict, tasks: list[str]) -> float | None:
    values = [result["tasks"][t]["value"] for t in tasks if t in result["tasks"]]
    return sum(values) / len(values) if values else None


def _interval(ours: dict, theirs: dict, tasks: list[str], seed: int) -> dict:
    diff = paired_bootstrap({t: ours["tasks"][t] for t in tasks}, {t: theirs["tasks"][t] for t in tasks}, seed=seed)
    return dict(zip(("diff", "low", "high"), diff))


def build_report(target: str, report_tasks: list[str], baselines: dict[str, dict], ours: dict[str, dict],
                 trials: list[Observation], cost_per_rank: list[int], baseline_rank: int, budget: int, seed: int,
                 noise: float = 0.0, anchor: str = UNIFORM, uniform_seconds: float | None = None,
                 go: dict | None = None, bootstrap_seconds: list[float] | None = None) -> dict[str, Any]:
    """The report of a finished search; noise (the trial noise sd) decides, with the interval, which adapter
    is registered (champion.choose_adapter). baselines: {method: {"select": eval, "report": eval,
    "trainable_params", optional "sparsity"}} (the anchor required); ours: the best trial's {"select": eval,
    "report": eval, optional "sparsity"}; trials: the target's trials; anchor: the uniform row the verdict
    compares with (MASKED_UNIFORM for sparse jobs: the recovery the search itself runs); budget: the LoRA
    parameters every trial was held to (JobConfig.budget); uniform_seconds, go, bootstrap_seconds: the cost
    section's inputs (search.cost.cost_section)."""
    best = max(trials, key=lambda o: o.score)
    params = lora_parameters(best.rank_vector, cost_per_rank)
    zero_shot = [t for t in report_tasks if t != target]
    methods = {**{m: baselines[m] for m in BASELINES if m in baselines}, OURS: {**ours, "trainable_params": params}}
    sparse = any(r.get("sparsity") is not None for r in methods.values())
    table = []
    for name, result in methods.items():
        row = {"method": name, "trainable_params": result["trainable_params"],
               **({"sparsity": result.get("sparsity")} if sparse else {}),
               f"{target} (select)": result["select"]["scores"][target],
               f"{target} (report)": result["report"]["scores"][target],
               **({"perplexity (report)": result["report"]["tasks"][target].get("perplexity")}
                  if parse_task(target).kind == "ppl" else {}),
               **{t: result["report"]["scores"][t] for t in zero_shot},
               "zero-shot mean (report)": _mean(result["report"], zero_shot)}
        table.append(row)
    comparisons = {}
    for other in (m for m in methods if m != OURS):
        comparisons[other] = {target: _interval(ours["report"], methods[other]["report"], [target], seed)}
        if zero_shot:
            comparisons[other]["zero-shot mean"] = _interval(ours["report"], methods[other]["report"], zero_shot, seed)
    versus = comparisons[anchor][target]
    decision = choose_adapter(versus["diff"], versus["low"], versus["high"], noise, baseline_rank)
    rows = history(trials, cost_per_rank)
    tau = kendall_tau([h["predicted"] for h in rows], [h["measured"] for h in rows]) if len(rows) >= 3 else None
    return {"target_task": target, "table": table, "columns": [c for c in table[0] if c != "method"],
            "comparisons": comparisons, "significant": decision.register == SEARCHED,
            "verdict": f"{verdict_line(target, versus, baseline_rank, anchor == MASKED_UNIFORM)}. {decision.reason}",
            "decision": {"register": decision.register, "reason": decision.reason}, "anchor": anchor,
            "history": rows,
            "kendall_tau": tau, "baseline_rank": baseline_rank,
            "baseline_select_score": baselines[anchor]["select"]["scores"][target],
            "best": {"rank_vector": best.rank_vector, "select_score": best.score, "adapter": best.artifact,
                     "trainable_params": params},
            "budget": budget, "iterations": len(rows),
            "evaluation": {split: slim(ours[split]) for split in ("select", "report")},
            "cost": cost_section(trials, uniform_seconds, go, bootstrap_seconds)}


def markdown(report: dict) -> str:
    table = markdown_table(report["table"], report["columns"])
    return (f"# RankAdaptor report\n\n{table}\n\n{report['verdict']}\n\n"
            f"Surrogate ranking quality (Kendall tau over the search trials): {report['kendall_tau']}\n"
            + (f"\n{cost_markdown(report['cost'])}" if "cost" in report else ""))


def write_report(report: dict, directory: Path) -> None:
    """report.md, report.json and the plots, into an artifact directory being written."""
    plot_ranks(report["best"]["rank_vector"], directory / "ranks.png", report["baseline_rank"])
    if report["history"]:
        plot_predicted_vs_measured(report["history"], directory / "predicted_vs_measured.png")
        plot_convergence(report["history"], report["baseline_select_score"], directory / "convergence.png",
                         report["baseline_rank"])
    (directory / "report.md").write_text(markdown(report))
    (directory / "report.json").write_text(json.dumps(report, indent=1))


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """rows: {"method": ..., column: value}; floats with 4 decimals, missing as '-'."""
    def cell(value) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += ["| " + " | ".join([str(r["method"])] + [cell(r.get(c)) for c in columns]) + " |" for r in rows]
    return "\n".join(lines)


def _pyplot():
    """matplotlib without a display, imported by the plots only (steps that read the constants stay light)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_ranks(rank_vector: list[int], path: Path, baseline_rank: int) -> None:
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4, len(rank_vector) * 0.3), 3))
    ax.bar(range(len(rank_vector)), rank_vector, color="tab:blue", label="chosen")
    ax.axhline(baseline_rank, color="tab:gray", linestyle="--", label=f"uniform r={baseline_rank}")
    ax.set(xlabel="decoder layer", ylabel="LoRA rank", title="Per-layer ranks",
           ylim=(0, 1.35 * max(*rank_vector, baseline_rank)))  # headroom for the legend
    ax.legend(loc="upper left", ncol=2, fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_predicted_vs_measured(history: list[dict], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 4))
    predicted, measured = [h["predicted"] for h in history], [h["measured"] for h in history]
    ax.scatter(predicted, measured, c=range(len(history)), cmap="viridis")
    for h in history:
        ax.annotate(str(h["iteration"]), (h["predicted"], h["measured"]), fontsize=7)
    low, high = min(predicted + measured), max(predicted + measured)
    ax.plot([low, high], [low, high], color="tab:gray", linestyle="--")
    ax.set(xlabel="predicted score", ylabel="measured score", title="Surrogate: predicted vs measured")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_convergence(history: list[dict], baseline: float | None, path: Path, baseline_rank: int) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    iterations = [h["iteration"] for h in history]
    ax.plot(iterations, [h["measured"] for h in history], marker="o", label="measured")
    ax.plot(iterations, [h["predicted"] for h in history], marker="x", linestyle=":", label="predicted")
    ax.plot(iterations, [max(h["measured"] for h in history[:i + 1]) for i in range(len(history))],
            color="tab:green", label="best so far")
    if baseline is not None:
        ax.axhline(baseline, color="tab:gray", linestyle="--", label=f"uniform LoRA r={baseline_rank}")
    ax.set(xlabel="iteration", ylabel="score (select split)", title="Search progress")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown_with_plots(report_dir: str | Path) -> str:
    """report.md with the plots inlined as data URIs: one self-contained document for a UI to show."""
    import base64

    report_dir = Path(report_dir)
    text = (report_dir / "report.md").read_text()
    for name in PLOTS:
        if (report_dir / name).exists():
            encoded = base64.b64encode((report_dir / name).read_bytes()).decode()
            text += f"\n![{name}](data:image/png;base64,{encoded})\n"
    return text
