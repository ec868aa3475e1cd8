import base64
import json

import pytest

from rankadaptor.report import (
    ADALORA,
    OURS,
    PLOTS,
    PRUNED,
    UNIFORM,
    build_report,
    markdown_table,
    markdown_with_plots,
    plot_convergence,
    plot_gain,
    plot_predicted_vs_measured,
    plot_ranks,
    write_report,
)
from rankadaptor.trial import Observation
from rankadaptor.widths import budget

HISTORY = [{"iteration": 1, "predicted": -2.3, "measured": -2.2}, {"iteration": 2, "predicted": -2.21, "measured": -2.19}]
ROW_IDS = list(range(40))


def evaluation(target_rows: list[float], acc_rows: list[int]) -> dict:
    tasks = {"ppl:heldout": {"value": sum(target_rows) / len(target_rows), "rows": target_rows, "row_ids": ROW_IDS},
             "boolq": {"value": sum(acc_rows) / len(acc_rows), "rows": acc_rows, "row_ids": ROW_IDS}}
    return {"tasks": tasks, "scores": {t: r["value"] for t, r in tasks.items()}}


def both(target_rows, acc_rows=None) -> dict:
    acc_rows = acc_rows or [i % 2 for i in ROW_IDS]
    return {"select": evaluation(target_rows, acc_rows), "report": evaluation(target_rows, acc_rows)}


def rows(level: float) -> list[float]:
    return [level + 0.01 * ((i * 7) % 5 - 2) for i in ROW_IDS]  # the same noise pattern at another level


TRIALS = [Observation("ppl:heldout", [4] * 4, -2.5),  # the baseline anchor: no prediction
          Observation("ppl:heldout", [2, 4, 6, 4], -2.4, predicted=-2.45, artifact="a1"),
          Observation("ppl:heldout", [6, 2, 2, 6], -2.3, predicted=-2.2, artifact="a2")]
COSTS = [100, 100, 100, 100]


def report_for(ours_level: float, baseline_rank: int = 4) -> dict:
    baselines = {PRUNED: {**both(rows(-3.0)), "trainable_params": 0},
                 UNIFORM: {**both(rows(-2.5)), "trainable_params": 1600}}
    return build_report("ppl:heldout", ["boolq"], baselines, both(rows(ours_level)), TRIALS, COSTS, baseline_rank,
                        budget(COSTS, rank=baseline_rank), 0)


@pytest.mark.parametrize("level, verdict", [(-2.4, "RankAdaptor significantly beats uniform LoRA r=4"),
                                            (-2.5, "RankAdaptor does NOT significantly beat uniform LoRA r=4"),
                                            (-2.6, "RankAdaptor is significantly WORSE than uniform LoRA r=4")])
def test_the_verdict_follows_the_paired_interval(level, verdict):
    report = report_for(level)
    assert report["verdict"].startswith(verdict)
    assert report["significant"] is (level > -2.5)
    diff = report["comparisons"][UNIFORM]["ppl:heldout"]
    assert diff["diff"] == pytest.approx(level + 2.5) and diff["low"] <= diff["diff"] <= diff["high"]


def test_the_report_table_history_and_budget_come_from_the_inputs():
    report = report_for(-2.4, baseline_rank=4)
    assert [r["method"] for r in report["table"]] == [PRUNED, UNIFORM, OURS]
    ours = report["table"][-1]
    assert ours["ppl:heldout (report)"] == pytest.approx(-2.4) and ours["trainable_params"] == 1600
    assert report["best"]["rank_vector"] == [6, 2, 2, 6] and report["best"]["adapter"] == "a2"
    assert [h["iteration"] for h in report["history"]] == [1, 2]  # the anchor is no search iteration
    assert [h["best"] for h in report["history"]] == [-2.4, -2.3]
    assert report["history"][1]["abs_error"] == pytest.approx(0.1)
    assert report["budget"] == 4 * 400 and report["kendall_tau"] is None  # tau needs three search trials
    assert ADALORA not in report["comparisons"] and "zero-shot mean" in report["comparisons"][PRUNED]


def test_markdown_table_formats_numbers_and_missing_cells():
    table = markdown_table([{"method": "lora_uniform", "a": 0.12345, "b": 7}, {"method": "pruned", "a": None}], ["a", "b"])
    assert table.splitlines() == ["| method | a | b |", "|---|---|---|", "| lora_uniform | 0.1235 | 7 |",
                                  "| pruned | - | - |"]


def test_write_report_draws_every_plot_and_writes_the_report(tmp_path):
    report = report_for(-2.4)
    write_report(report, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["verdict"] == report["verdict"]
    assert report["verdict"] in (tmp_path / "report.md").read_text()
    for name in PLOTS:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_markdown_inlines_every_plot(tmp_path):
    plot_gain(report_for(-2.4)["gain"], 0.005, tmp_path / "gain.png", 8, "mean log-lik/token")
    plot_ranks([4, 8, 12, 8], tmp_path / "ranks.png", 8)
    plot_predicted_vs_measured(HISTORY, tmp_path / "predicted_vs_measured.png")
    plot_convergence(HISTORY, -2.25, tmp_path / "convergence.png", 8)
    (tmp_path / "report.md").write_text("# report\n")
    text = markdown_with_plots(tmp_path)
    assert text.startswith("# report")
    for name in PLOTS:
        encoded = text.split(f"![{name}](data:image/png;base64,")[1].split(")")[0]
        assert base64.b64decode(encoded) == (tmp_path / name).read_bytes()


def test_a_search_budget_of_the_job_is_the_report_budget():
    from rankadaptor.config import from_dict
    from rankadaptor.job import JobConfig

    own = from_dict(JobConfig, {"base_model": "m", "recover": {"rank": 4}, "search": {"budget": 1234}})
    default = from_dict(JobConfig, {"base_model": "m", "recover": {"rank": 4}})
    assert own.budget(COSTS) == 1234 and own.search_config(COSTS).budget == 1234
    assert default.budget(COSTS) == 4 * 400 == default.search_config(COSTS).budget
    baselines = {PRUNED: {**both(rows(-3.0)), "trainable_params": 0}, UNIFORM: {**both(rows(-2.5)), "trainable_params": 1600}}
    report = build_report("ppl:heldout", ["boolq"], baselines, both(rows(-2.4)), TRIALS, COSTS, own.baseline_rank,
                          own.budget(COSTS), 0)
    assert report["budget"] == 1234 and json.loads(json.dumps(report))["budget"] == 1234


MORE_TRIALS = [*TRIALS, Observation("ppl:heldout", [4, 6, 2, 4], -2.35, predicted=-2.3, artifact="a3")]


def test_the_report_explains_its_numbers(tmp_path):
    """One trial numbering (#1 = first after the uniform baseline), score columns with unit and direction,
    the stop reason, the surrogate line with n, the interval once, and gain.png with the other plots."""
    baselines = {PRUNED: {**both(rows(-3.0)), "trainable_params": 0},
                 UNIFORM: {**both(rows(-2.5)), "trainable_params": 1600}}
    report = build_report("ppl:heldout", ["boolq"], baselines, both(rows(-2.4)), MORE_TRIALS, COSTS, 4,
                          budget(COSTS, rank=4), 0, noise=0.005, stop_reason="max_iterations reached: 3 trials")
    assert [h["iteration"] for h in report["history"]] == [1, 2, 3]
    assert report["history"][0]["best"] == -2.4 and "uniform baseline" in report["trial_numbering"]
    labels = report["column_labels"]
    assert labels["ppl:heldout (report)"] == "ppl:heldout (report, mean log-lik/token, higher better)"
    assert labels["boolq"] == "boolq (report, accuracy, higher better)"
    assert report["stop_reason"].startswith("max_iterations reached")
    assert report["surrogate"]["n"] == 3 and report["kendall_tau"] == report["surrogate"]["kendall_tau"]
    assert report["verdict"].count("95% CI") == 1
    assert set(report["gain"]) == {"select", "report"} and "zero-shot mean" in report["gain"]["report"]
    write_report(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| #3 |" in md and "Search stopped: max_iterations reached" in md and "n=3 search trials" in md
    assert labels["perplexity (report)"] == "perplexity (report, lower better)" and labels["ppl:heldout (select)"] in md
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["stop_reason"] == report["stop_reason"] and saved["history"] == report["history"]
    assert "gain.png" in PLOTS and all((tmp_path / name).is_file() for name in PLOTS)


def test_the_plots_use_integer_trial_ticks(tmp_path, monkeypatch):
    import matplotlib.figure

    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    history = [{"iteration": i, "predicted": -2.3 + 0.01 * i, "measured": -2.2 - 0.01 * i} for i in (1, 2, 3)]
    plot_convergence(history, -2.25, tmp_path / "convergence.png", 8)
    plot_predicted_vs_measured(history, tmp_path / "predicted_vs_measured.png")
    convergence, scatter = saved
    ticks = [t for t in convergence.axes[0].get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)
    colourbar = scatter.axes[1]  # the trial-number legend of the colours
    assert "search trial" in colourbar.get_ylabel()
    assert all(float(t).is_integer() for t in colourbar.get_yticks())


def test_ranks_show_the_registered_and_the_best_searched_vector(tmp_path, monkeypatch):
    import matplotlib.figure

    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    plot_ranks([6, 2, 2, 6], tmp_path / "ranks.png", 4, [4, 4, 4, 4])
    legend = [t.get_text() for t in saved[0].axes[0].get_legend().get_texts()]
    assert "best searched" in legend and "registered (uniform)" in legend
