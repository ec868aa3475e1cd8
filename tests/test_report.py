import base64

from rankadaptor.report import PLOTS, markdown_table, markdown_with_plots, plot_convergence, plot_predicted_vs_measured, plot_ranks

HISTORY = [{"iteration": 1, "predicted": -2.3, "measured": -2.2}, {"iteration": 2, "predicted": -2.21, "measured": -2.19}]


def test_markdown_table_formats_numbers_and_missing_cells():
    table = markdown_table([{"method": "lora_r8", "a": 0.12345, "b": 7}, {"method": "pruned", "a": None}], ["a", "b"])
    assert table.splitlines() == ["| method | a | b |", "|---|---|---|", "| lora_r8 | 0.1235 | 7 |",
                                  "| pruned | - | - |"]


def test_report_markdown_inlines_every_plot(tmp_path):
    plot_ranks([4, 8, 12, 8], tmp_path / "ranks.png")
    plot_predicted_vs_measured(HISTORY, tmp_path / "predicted_vs_measured.png")
    plot_convergence(HISTORY, -2.25, tmp_path / "convergence.png")
    (tmp_path / "report.md").write_text("# report\n")
    text = markdown_with_plots(tmp_path)
    assert text.startswith("# report")
    for name in PLOTS:
        encoded = text.split(f"![{name}](data:image/png;base64,")[1].split(")")[0]
        assert base64.b64decode(encoded) == (tmp_path / name).read_bytes()
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
