"""Guards of the recover and prune stages (issue: the front door): a checkpoint resumes only the run that wrote
it, a rank vector over the LoRA budget is refused unless allowed, ratio 0 is refused, and the default layer
settings fit a shallow model. Each refusal leaves the output unwritten and the inputs (checkpoint) unchanged."""

import json
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BUNDLED, TINY_MODEL
from safetensors.torch import load_file

from rankadaptor.cli import main
from rankadaptor.config import from_dict
from rankadaptor.errors import UserError
from rankadaptor.job import load_job
from rankadaptor.recover.config import RecoverConfig
from rankadaptor.recover.stage import run_recover
from rankadaptor.search.sampling import sample_rank_vectors
from rankadaptor.widths import lora_parameters

TEXT = BUNDLED / "text" / "train.txt"
FAST = dict(data=str(TEXT), cutoff=64, batch_size=8, micro_batch_tokens=256, epochs=1, lr=2e-3, max_steps=4,
            save_steps=1)


def config(**overrides) -> RecoverConfig:
    return from_dict(RecoverConfig, {**FAST, **overrides})


class Killed(Exception):
    pass


@contextmanager
def killed_after_first_checkpoint(checkpoint: Path):
    """The run stops (as if killed) at the first forward pass after its step-1 checkpoint is complete."""
    def hook(module, args):
        if (checkpoint / "b" / "manifest.json").exists():  # step 1 saves to slot b (saves alternate a/b)
            raise Killed

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def killed_run(tmp_path) -> Path:
    """The output URI of a recovery killed after its first checkpoint (lr 2e-3, rank 8 everywhere)."""
    output = tmp_path / "adapter"
    with killed_after_first_checkpoint(tmp_path / "adapter.ckpt"), pytest.raises(Killed):
        run_recover(config(), str(TINY_MODEL), str(output))
    assert not output.exists() and (tmp_path / "adapter.ckpt" / "b" / "settings.json").is_file()
    return output


def recover_cli(output: Path, *options: str) -> list[str]:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items()]
    return ["recover", "--model", str(TINY_MODEL), "--output", str(output), *flags, *options]


@pytest.mark.parametrize("change, differs", [
    (["--lr", "0.005"], r"\(lr: 0.002 there, 0.005 now\)"),  # silently resumed before
    (["--rank-vector", "[4,4,4,4]"], r"\(rank_vector: \[8, 8, 8, 8\] there, \[4, 4, 4, 4\] now\)"),  # size mismatch
    (["--data", str(BUNDLED / "text" / "heldout.txt")], r"\(data: [0-9a-f]{12}\.\.\. there, [0-9a-f]{12}\.\.\. now\)"),
])
def test_a_checkpoint_refuses_a_rerun_with_other_settings_naming_them(killed_run, change, differs, capsys):
    checkpoint = killed_run.with_name("adapter.ckpt")
    before = snapshot(checkpoint)
    assert main(recover_cli(killed_run, *change)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith(f"rankadaptor recover: error: checkpoint '{checkpoint}' is of a run with other settings ")
    assert re.search(differs, err) and "--restart true" in err
    assert not killed_run.exists() and snapshot(checkpoint) == before  # nothing written, the checkpoint kept


def test_a_checkpoint_without_a_settings_record_is_not_resumed(killed_run):
    checkpoint = killed_run.with_name("adapter.ckpt")
    for slot in checkpoint.iterdir():  # as written before checkpoints recorded their settings
        (slot / "settings.json").unlink()
        manifest = json.loads((slot / "manifest.json").read_text())
        del manifest["files"]["settings.json"]
        (slot / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"it records no settings .*restart=true"):
        run_recover(config(), str(TINY_MODEL), str(killed_run))
    assert not killed_run.exists()


def test_the_same_settings_resume_to_the_uninterrupted_result(killed_run, tmp_path):
    uninterrupted = run_recover(config(), str(TINY_MODEL), str(tmp_path / "reference"))
    resumed = run_recover(config(save_steps=2), str(TINY_MODEL), str(killed_run))  # a runtime option may differ
    assert (uninterrupted["resumed_from"], resumed["resumed_from"]) == (None, 1)
    assert resumed["losses"] == uninterrupted["losses"]
    ours, theirs = (load_file(d / "adapter_model.safetensors") for d in (killed_run, tmp_path / "reference"))
    for name in theirs:
        assert torch.equal(ours[name], theirs[name])


def test_restart_discards_the_checkpoint_and_trains_from_the_start(killed_run, tmp_path, capsys):
    assert main(recover_cli(killed_run, "--lr", "0.005", "--restart", "true")) == 0
    printed = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    fresh = run_recover(config(lr=0.005), str(TINY_MODEL), str(tmp_path / "fresh"))
    assert printed["resumed_from"] is None and printed["steps"] == fresh["steps"] == 4
    assert not killed_run.with_name("adapter.ckpt").exists()  # removed once the adapter is written
    ours, theirs = (load_file(d / "adapter_model.safetensors") for d in (killed_run, tmp_path / "fresh"))
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)


def test_a_rank_vector_over_the_budget_is_refused_unless_allowed(tmp_path, capsys):
    output = tmp_path / "adapter"
    assert main(recover_cli(output, "--rank-vector", "[12,12,8,8]")) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("rankadaptor recover: error: rank vector [12, 12, 8, 8] trains 48,800 LoRA parameters, 25% over "
                   "the budget of 39,040 (uniform rank 8 on every layer): lower some ranks, or pass "
                   "allow_over_budget=true (--allow-over-budget true) to train it anyway")
    assert not output.exists() and not output.with_name("adapter.ckpt").exists()

    assert main(recover_cli(output, "--rank-vector", "[12,12,8,8]", "--allow-over-budget", "true")) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("LoRA parameters: 48,800 of a budget of 39,040 (uniform rank 8 on every layer), 25% "
                              "over (allow_over_budget)\n")
    saved = json.loads((output / "rank_vector.json").read_text())
    assert (saved["lora_params"], saved["uniform_params"], saved["within_budget"]) == (48800, 39040, False)


def test_a_rank_vector_within_the_budget_reports_budget_and_use(tmp_path, capsys):
    result = run_recover(config(rank_vector=[12, 4, 10, 6]), str(TINY_MODEL), str(tmp_path / "adapter"))
    assert (result["lora_params"], result["uniform_params"], result["within_budget"]) == (39040, 39040, True)
    assert "LoRA parameters: 39,040 of a budget of 39,040 (uniform rank 8 on every layer)\n" in capsys.readouterr().out


def test_the_jobs_trials_are_within_recoverys_budget():
    job = load_job()
    costs = [552, 500, 500, 552]  # a width-pruned model's LoRA cost per rank
    budget = lora_parameters([job.recover.rank] * 4, costs)
    vectors = sample_rank_vectors(job.search_config(costs), costs, np.random.default_rng(0))
    assert all(lora_parameters(v, costs) <= budget for v in vectors.tolist())  # bootstrap and search proposals
    assert not job.recover_config("d", [8] * 4).allow_over_budget
    # a search budget of the job's own holds its trials instead
    assert load_job(None, {"search": {"budget": 2 * budget}}).recover_config("d", [8] * 4).allow_over_budget


@pytest.mark.parametrize("mode", ["width", "depth", "unstructured"])
def test_ratio_zero_is_refused_in_one_line_for_every_mode(mode, tmp_path, capsys):
    output = tmp_path / "pruned"
    assert main(["prune", "--model", str(TINY_MODEL), "--calibration", str(TEXT), "--mode", mode, "--ratio", "0",
                 "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rankadaptor prune: error: ratio=0 prunes nothing: give a ratio in (0, 1)")
    assert err.count("\n") == 1 and not output.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("mode, note, field, expected", [
    ("width", r"the default layer range \[4, 2\) does not fit the model's 4 layers: layers \[1, 3\) pruned",
     "pruned_layers", [1, 2]),
    ("depth", r"protect_first=4, protect_last=2 leave none of the model's 4 blocks removable: protect_first=1, "
              r"protect_last=1 used", "removed_blocks", None),
])
def test_default_layer_settings_clamp_to_a_shallow_model_with_a_note(mode, note, field, expected, tmp_path):
    from rankadaptor.prune.config import PruneConfig
    from rankadaptor.prune.stage import run_prune

    prune = from_dict(PruneConfig, {"model": str(TINY_MODEL), "calibration": str(TEXT), "mode": mode,
                                    "num_samples": 2, "seq_len": 32})
    report = run_prune(prune, str(tmp_path / "pruned"))
    assert len(report["notes"]) == 1 and re.search(note, report["notes"][0])
    if expected is not None:
        assert report[field] == expected
    else:
        assert report[field] and set(report[field]) <= {1, 2}  # first and last block kept
    with pytest.raises(UserError, match=r"layer range \[4, 2\) is outside the model's 4 layers"):
        run_prune(from_dict(PruneConfig, {**vars(prune), "mode": "width", "layer_start": 4, "layer_end": 2}),
                  str(tmp_path / "explicit"))  # a range the user set is not changed behind their back
