"""The final report: the comparison table (the paper's Table 2 plus both splits) and three plots.

Plots are PNG files (matplotlib, no display): per-layer ranks of the chosen vector, predicted vs measured
score of every search trial, and the score per iteration against the uniform-LoRA baseline.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

PLOTS = ("ranks.png", "predicted_vs_measured.png", "convergence.png")


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """rows: {"method": ..., column: value}; floats with 4 decimals, missing as '-'."""
    def cell(value) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += ["| " + " | ".join([str(r["method"])] + [cell(r.get(c)) for c in columns]) + " |" for r in rows]
    return "\n".join(lines)


def plot_ranks(rank_vector: list[int], path: Path, baseline_rank: int = 8) -> None:
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


def plot_convergence(history: list[dict], baseline: float | None, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3))
    iterations = [h["iteration"] for h in history]
    ax.plot(iterations, [h["measured"] for h in history], marker="o", label="measured")
    ax.plot(iterations, [h["predicted"] for h in history], marker="x", linestyle=":", label="predicted")
    ax.plot(iterations, [max(h["measured"] for h in history[:i + 1]) for i in range(len(history))],
            color="tab:green", label="best so far")
    if baseline is not None:
        ax.axhline(baseline, color="tab:gray", linestyle="--", label="uniform LoRA r=8")
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
