"""The final report: the comparison table (the paper's Table 2 plus both splits), the verdict against
uniform LoRA with bootstrap intervals, the search history, and four plots.

`build_report` is a pure function of the evaluations and the trials; `write_report` draws the plots (PNG,
no display) and writes report.md and report.json.

Every number says what it is: score columns carry their unit and direction (`column_labels`), search
trials are numbered as trial.history numbers them everywhere (#1: the first trial after the uniform
baseline), and the gain over uniform LoRA is drawn with its interval beside the trial noise (gain.png).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rankadaptor.champion import SEARCHED, choose_adapter
from rankadaptor.evaluate.tasks import parse_task
from rankadaptor.search.confirm import seed_noise
from rankadaptor.search.cost import cost_markdown, cost_section
from rankadaptor.stats import kendall_tau, kendall_tau_interval, paired_bootstrap
from rankadaptor.trial import FULL, Observation, history
from rankadaptor.widths import lora_parameters

PLOTS = ("gain.png", "ranks.png", "predicted_vs_measured.png", "convergence.png")
TRIAL_AXIS = "search trial (#1 = first after the uniform baseline)"
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


def score_unit(task: str) -> str:
    """What a task's score is: a ppl task's value is the mean log-likelihood per token, every other task's an
    accuracy; both are higher-better."""
    return "mean log-lik/token" if parse_task(task).kind == "ppl" else "accuracy"


def column_labels(target: str, columns: list[str]) -> dict[str, str]:
    """The table's column headers: each score column named by its split, unit and direction."""
    unit = f"{score_unit(target)}, higher better"
    labels = {f"{target} (select)": f"{target} (select, {unit})", f"{target} (report)": f"{target} (report, {unit})",
              "perplexity (report)": "perplexity (report, lower better)",
              "zero-shot mean (report)": "zero-shot mean (report, accuracy, higher better)",
              "trainable_params": "trainable params", "sparsity": "sparsity"}
    return {c: labels[c] if c in labels else f"{c} (report, {score_unit(c)}, higher better)" for c in columns}


def surrogate_line(quality: dict | None) -> str:
    """The surrogate's ranking quality in plain words, with n and its interval."""
    if quality is None:
        return "Surrogate ranking quality: not computed (Kendall tau needs at least 3 search trials)."
    interval = "" if quality["low"] is None else f", 95% CI {quality['low']:+.2f} .. {quality['high']:+.2f}"
    return (f"Surrogate ranking quality: Kendall tau {quality['kendall_tau']:+.2f} over n={quality['n']} search "
            f"trials{interval} (predicted vs measured order: +1 the surrogate orders the trials exactly as "
            "measured, 0 no better than chance, -1 reversed).")


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
                 noise: float = 0.0, anchor: str = UNIFORM, stop_reason: str | None = None,
                 uniform_seconds: float | None = None, go: dict | None = None,
                 bootstrap_seconds: list[float] | None = None, bootstrap_fidelity: str = FULL,
                 best: Observation | None = None, finalists: list[dict] | None = None,
                 confirm_seconds: list[float] | None = None) -> dict[str, Any]:
    """The report of a finished search; noise (the trial noise sd) decides, with the interval, which adapter
    is registered (champion.choose_adapter). baselines: {method: {"select": eval, "report": eval,
    "trainable_params", optional "sparsity"}} (the anchor required); ours: the best trial's {"select": eval,
    "report": eval, optional "sparsity"}; trials: the target's trials; anchor: the uniform row the verdict
    compares with (MASKED_UNIFORM for sparse jobs: the recovery the search itself runs); budget: the LoRA
    parameters every trial was held to (JobConfig.budget); stop_reason: why the search stopped
    (search.loop.stop_reason); uniform_seconds, go, bootstrap_seconds, bootstrap_fidelity, confirm_seconds: the
    cost section's inputs (search.cost.cost_section); best: the trial chosen (default the best select score);
    finalists: the seed table it was chosen from (search.confirm.seed_table), if any."""
    best = best or max(trials, key=lambda o: o.score)
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
    gain = {split: {target: _interval(ours[split], methods[anchor][split], [target], seed),
                    **({"zero-shot mean": _interval(ours[split], methods[anchor][split], zero_shot, seed)}
                       if zero_shot else {})} for split in ("select", "report")}
    versus = comparisons[anchor][target]
    decision = choose_adapter(versus["diff"], versus["low"], versus["high"], noise, baseline_rank)
    rows = history(trials, cost_per_rank)
    quality = None
    if len(rows) >= 3:
        predicted, measured = [h["predicted"] for h in rows], [h["measured"] for h in rows]
        quality = {"kendall_tau": kendall_tau(predicted, measured), "n": len(rows),
                   **dict(zip(("low", "high"), kendall_tau_interval(predicted, measured, seed=seed)))}
    columns = [c for c in table[0] if c != "method"]
    return {"target_task": target, "table": table, "columns": columns,
            "column_labels": column_labels(target, columns), "score_unit": score_unit(target),
            "comparisons": comparisons, "gain": gain, "noise": noise, "significant": decision.register == SEARCHED,
            "verdict": f"{verdict_line(target, versus, baseline_rank, anchor == MASKED_UNIFORM)}; "
                       f"{decision.conclusion}",
            "decision": {"register": decision.register, "reason": decision.reason}, "anchor": anchor,
            "history": rows, "trial_numbering": TRIAL_AXIS, "stop_reason": stop_reason,
            "kendall_tau": quality and quality["kendall_tau"], "surrogate": quality, "baseline_rank": baseline_rank,
            "baseline_select_score": baselines[anchor]["select"]["scores"][target],
            "best": {"rank_vector": best.rank_vector, "select_score": best.score, "adapter": best.artifact,
                     "trainable_params": params},
            "budget": budget, "iterations": len(rows),
            "evaluation": {split: slim(ours[split]) for split in ("select", "report")},
            "finalists": finalists or [], "full_seed_noise": seed_noise(finalists) if finalists else None,
            "cost": cost_section(trials, uniform_seconds, go, bootstrap_seconds, bootstrap_fidelity,
                                 confirm_seconds)}


def markdown(report: dict) -> str:
    table = markdown_table(report["table"], report["columns"], report.get("column_labels"))
    trials = markdown_table([{"method": f"#{h['iteration']}", **h} for h in report["history"]],
                            ["rank_vector", "predicted", "measured", "best"],
                            {"rank_vector": "rank vector", "predicted": "predicted", "measured": "measured (select)",
                             "best": "best so far (from the uniform baseline)"}).replace("| method |", "| trial |", 1)
    stop = f"Search stopped: {report['stop_reason']}.\n\n" if report.get("stop_reason") else ""
    stop += finalists_markdown(report)
    if not report["history"]:
        trials = "No search trials."
    return (f"# RankAdaptor report\n\nScores: {report['target_task']} in {report['score_unit']} and zero-shot tasks "
            f"in accuracy, higher is better (perplexity: lower is better).\n\n{table}\n\n{report['verdict']}\n\n"
            f"## Search trials ({report['score_unit']}, {report['trial_numbering']})\n\n{trials}\n\n{stop}"
            f"{surrogate_line(report.get('surrogate'))}\n"
            + (f"\n{cost_markdown(report['cost'])}" if "cost" in report else ""))


def finalists_markdown(report: dict) -> str:
    """The finalists re-measured at more seeds and the one chosen by its seed mean ('' without them)."""
    rows = report.get("finalists") or []
    if not rows:
        return ""
    table = markdown_table([{"method": str(r["rank_vector"]), "scores": ", ".join(f"{s:.4f}" for s in r["scores"]),
                             "mean": r["mean"]} for r in rows], ["scores", "mean"],
                           {"scores": "select score per seed (job's seed first)", "mean": "seed mean"})
    noise = report.get("full_seed_noise")
    return (f"## Finalists ({report['score_unit']}, select rows)\n\n{table.replace('| method |', '| rank vector |', 1)}"
            f"\n\nChosen by seed mean: {report['best']['rank_vector']}"
            + (f"; the finalists' full-trial seed noise sd is {noise:.4f}" if noise is not None else "") + ".\n\n")


def write_report(report: dict, directory: Path) -> None:
    """report.md, report.json and the plots, into an artifact directory being written."""
    plot_gain(report["gain"], report["noise"], directory / "gain.png", report["baseline_rank"], report["score_unit"])
    plot_ranks(report["best"]["rank_vector"], directory / "ranks.png", report["baseline_rank"],
               registered_vector(report))
    if report["history"]:
        plot_predicted_vs_measured(report["history"], directory / "predicted_vs_measured.png")
        plot_convergence(report["history"], report["baseline_select_score"], directory / "convergence.png",
                         report["baseline_rank"])
    (directory / "report.md").write_text(markdown(report))
    (directory / "report.json").write_text(json.dumps(report, indent=1))


def registered_vector(report: dict) -> list[int]:
    """The rank vector of the registered adapter: the searched best, or uniform at the baseline rank."""
    best = report["best"]["rank_vector"]
    return best if report["decision"]["register"] == SEARCHED else [report["baseline_rank"]] * len(best)


def markdown_table(rows: list[dict], columns: list[str], labels: dict[str, str] | None = None) -> str:
    """rows: {"method": ..., column: value}; floats with 4 decimals, missing as '-'; labels: column headers."""
    def cell(value) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    labels = labels or {}
    lines = ["| method | " + " | ".join(labels.get(c, c) for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += ["| " + " | ".join([str(r["method"])] + [cell(r.get(c)) for c in columns]) + " |" for r in rows]
    return "\n".join(lines)


def _pyplot():
    """matplotlib without a display, imported by the plots only (steps that read the constants stay light)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _integer_axis(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def plot_gain(gain: dict, noise: float, path: Path, baseline_rank: int, unit: str) -> None:
    """The one answer: searched minus uniform LoRA per split (target, zero-shot mean) with 95% bootstrap CIs,
    beside the noise band +-noise sd."""
    plt = _pyplot()
    labels = [f"{name}\n({split})" for split in ("select", "report") for name in gain[split]]
    values = [gain[split][name] for split in ("select", "report") for name in gain[split]]
    diffs = [v["diff"] for v in values]
    errors = [[v["diff"] - v["low"] for v in values], [v["high"] - v["diff"] for v in values]]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * len(values)), 3.5))
    if noise > 0:
        ax.axhspan(-noise, noise, color="tab:gray", alpha=0.2, label=f"noise band +-{noise:.4f} (trial sd)")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.errorbar(range(len(values)), diffs, yerr=errors, fmt="o", capsize=6, color="tab:blue",
                label="searched - uniform, 95% CI")
    ax.set_xticks(range(len(values)), labels, fontsize=8)
    ax.set(ylabel=f"gain ({unit}; zero-shot: accuracy)", title=f"Gain over uniform LoRA r={baseline_rank}")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_ranks(rank_vector: list[int], path: Path, baseline_rank: int, registered: list[int] | None = None) -> None:
    """The best searched rank vector beside the registered one (uniform when searching did not pay)."""
    import numpy as np

    plt = _pyplot()
    registered = registered or rank_vector
    layers = np.arange(len(rank_vector))
    fig, ax = plt.subplots(figsize=(max(4, len(rank_vector) * 0.4), 3))
    ax.bar(layers - 0.2, rank_vector, width=0.4, color="tab:blue", label="best searched")
    ax.bar(layers + 0.2, registered, width=0.4, color="tab:orange",
           label="registered" + (" (uniform)" if registered != rank_vector else " (= best searched)"))
    ax.axhline(baseline_rank, color="tab:gray", linestyle="--", label=f"uniform r={baseline_rank}")
    ax.set(xlabel="decoder layer", ylabel="LoRA rank", title="Per-layer ranks",
           ylim=(0, 1.45 * max(*rank_vector, *registered, baseline_rank)))  # headroom for the legend
    ax.legend(loc="upper left", ncol=2, fontsize=8)
    _integer_axis(ax.xaxis)
    _integer_axis(ax.yaxis)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_predicted_vs_measured(history: list[dict], path: Path) -> None:
    """Each search trial at (predicted, measured), coloured by its number (colourbar), labelled with offsets."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.2))
    predicted, measured = [h["predicted"] for h in history], [h["measured"] for h in history]
    points = ax.scatter(predicted, measured, c=[h["iteration"] for h in history], cmap="viridis", zorder=3)
    bar = fig.colorbar(points, ax=ax)
    bar.set_label(TRIAL_AXIS, fontsize=8)
    _integer_axis(bar.ax.yaxis)
    for k, h in enumerate(history):  # alternating offsets, so that close points do not overprint
        offset = ((6, 4), (6, -10), (-14, 4), (-14, -10))[k % 4]
        ax.annotate(f"#{h['iteration']}", (h["predicted"], h["measured"]), xytext=offset,
                    textcoords="offset points", fontsize=7)
    low, high = min(predicted + measured), max(predicted + measured)
    ax.plot([low, high], [low, high], color="tab:gray", linestyle="--", label="predicted = measured")
    ax.set(xlabel="predicted score", ylabel="measured score (select)", title="Surrogate: predicted vs measured")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_convergence(history: list[dict], baseline: float | None, path: Path, baseline_rank: int) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    iterations = [h["iteration"] for h in history]
    ax.plot(iterations, [h["measured"] for h in history], marker="o", label="measured")
    ax.plot(iterations, [h["predicted"] for h in history], marker="x", linestyle=":", label="predicted")
    best = [h.get("best", max(x["measured"] for x in history[:i + 1])) for i, h in enumerate(history)]
    ax.plot(iterations, best, color="tab:green",
            label="best so far (from the uniform baseline)")
    if baseline is not None:
        ax.axhline(baseline, color="tab:gray", linestyle="--", label=f"uniform LoRA r={baseline_rank}")
    ax.set(xlabel=TRIAL_AXIS, ylabel="score (select split)", title="Search progress")
    _integer_axis(ax.xaxis)
    ax.legend(fontsize=7)
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
