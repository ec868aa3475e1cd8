"""The README's stage commands work verbatim on the bundled model: every code block line that runs
`rankadaptor prune|recover|evaluate|export` is run, in order, from a folder laid out like the repository root
(outputs under it), with only small limits appended so the suite stays fast (argparse: a later option wins)."""

import json
import re
import shlex

from conftest import ROOT

from rankadaptor.cli import main

STAGES = ("prune", "recover", "evaluate", "export")
LIMITS = {"prune": ["--num-samples", "4"], "recover": ["--max-steps", "2"], "evaluate": ["--limit", "6"],
          "export": []}


def readme_commands(text: str) -> list[list[str]]:
    """The argv of each `rankadaptor <stage>` line of the README's fenced and indented code blocks."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    blocks += re.findall(r"(?:^(?: {4}|\t)[^\n]*\n)+", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S), flags=re.M)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines if re.match(rf"rankadaptor ({'|'.join(STAGES)})\b", line)]


def test_the_readme_runs_every_stage_on_the_bundled_model(tmp_path, monkeypatch, capsys):
    commands = readme_commands((ROOT / "README.md").read_text())
    assert [argv[0] for argv in commands] == list(STAGES)  # each stage once, in chain order
    (tmp_path / "src").symlink_to(ROOT / "src")  # the commands' inputs are relative to the repository root
    monkeypatch.chdir(tmp_path)
    for argv in commands:
        assert main(argv + LIMITS[argv[0]]) == 0, f"`rankadaptor {shlex.join(argv)}` failed: {capsys.readouterr().err}"
        outputs = capsys.readouterr().out
        if argv[0] == "prune":
            report = json.loads(outputs)
            assert report["notes"] and report["pruned_layers"] == [1, 2]  # defaults fitted to 4 layers, said so
        if argv[0] == "recover":
            assert re.search(r"^LoRA parameters: [\d,]+ of a budget of [\d,]+", outputs, flags=re.M)
    runs = tmp_path / "runs" / "readme"
    assert sorted(p.name for p in runs.iterdir()) == ["adapter", "eval", "merged", "pruned"]
    assert json.loads((runs / "adapter" / "rank_vector.json").read_text())["within_budget"]
    assert not (runs / "adapter.ckpt").exists()


def test_the_readme_command_finder_sees_fenced_and_indented_blocks():
    text = "x\n\n```sh\nrankadaptor prune --a 1\nmake run\n```\n\n    rankadaptor export --b \"[1, 2]\"\n\n`rankadaptor recover`\n"
    assert readme_commands(text) == [["prune", "--a", "1"], ["export", "--b", "[1, 2]"]]
