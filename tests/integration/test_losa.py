"""Unstructured sparsity (Wanda, N:M, RMI rates), sparsity-preserving LoRA (LoSA) and LoSA's rank allocation."""

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from peft import PeftModel
from transformers import AutoModelForCausalLM

import rankadaptor
from rankadaptor.config import from_dict
from rankadaptor.errors import UserError
from rankadaptor.models.loading import load_model
from rankadaptor.prune.config import PruneConfig
from rankadaptor.prune.stage import run_prune
from rankadaptor.prune.unstructured import linear_cka, nm_mask, projection_sparsity, rmi_sparsities, row_mask, wanda_scores
from rankadaptor.recover.adapters import export_merged, load_adapted
from rankadaptor.recover.config import RecoverConfig
from rankadaptor.recover.masked import MaskedLoraLinear
from rankadaptor.recover.ranks import error_proportional_ranks
from rankadaptor.recover.stage import run_recover
from rankadaptor.widths import lora_parameters

BUNDLED = Path(rankadaptor.__file__).parent / "bundled"
MODEL = BUNDLED / "aidreams-260k"
FAST = dict(cutoff=64, batch_size=8, micro_batch_tokens=256, epochs=1, lr=2e-3, save_steps=100, max_steps=3)
IDS = torch.tensor([[1, 40, 50, 60, 70, 80, 90]])


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    rows = [json.loads(line) for line in (BUNDLED / "tasks" / "hellaswag_validation.jsonl").read_text().splitlines()]
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text("\n\n".join(r["ctx"] + " " + r["endings"][int(r["label"])] for r in rows))
    return path


def prune_config(text, **overrides):
    return from_dict(PruneConfig, {"model": str(MODEL), "calibration": str(text), "num_samples": 8, "seq_len": 32,
                                   "mode": "unstructured", "ratio": 0.5, **overrides})


@pytest.fixture(scope="module")
def sparse_dir(text, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sparse") / "model"
    run_prune(prune_config(text), str(out))
    return out


def test_wanda_matches_hand_computation():
    weight = torch.tensor([[1.0, -2.0, 3.0, 0.5],
                           [4.0, 1.0, -1.5, 2.0]])
    tokens = torch.tensor([[3.0, 0.0, 1.0, 0.0],   # input feature norms over tokens: 5, 1, 1, 1
                           [4.0, 0.0, 0.0, 1.0],
                           [0.0, 1.0, 0.0, 0.0]])
    scores = wanda_scores(weight, tokens.norm(dim=0))
    torch.testing.assert_close(scores, torch.tensor([[5.0, 2.0, 3.0, 0.5], [20.0, 1.0, 1.5, 2.0]]))
    # 50% per output row: row 0 keeps columns 0 and 2 (magnitude alone would keep 1 and 2), row 1 keeps 0 and 3.
    assert row_mask(scores, 0.5).tolist() == [[True, False, True, False], [True, False, False, True]]
    assert row_mask(scores, 0.25).tolist() == [[True, True, True, False], [True, False, True, True]]
    # 1:2 zeroes the lower of each pair of consecutive weights in a row.
    assert nm_mask(scores, 1, 2).tolist() == [[True, False, True, False], [True, False, False, True]]


def test_wanda_prunes_the_model_by_input_norm_per_row(text, sparse_dir):
    """Layer 0's q_proj of the pruned model, against |W| x ||input||_2 computed by hand from the embeddings."""
    dense, tokenizer = load_model(str(MODEL))
    pruned, _ = load_model(str(sparse_dir))
    report = json.loads((sparse_dir / "prune_report.json").read_text())
    from rankadaptor.data import calibration_batch, read_texts

    batch = calibration_batch(tokenizer, read_texts(str(text)), 8, 32, 0)
    layer = dense.model.layers[0]
    with torch.no_grad():
        x = layer.input_layernorm(dense.model.embed_tokens(batch)).reshape(-1, dense.config.hidden_size)
    w = layer.self_attn.q_proj.weight
    scores = w.abs() * x.norm(dim=0)[None, :]
    keep = torch.zeros_like(w, dtype=torch.bool)
    keep.scatter_(1, scores.topk(w.shape[1] // 2, dim=1).indices, True)
    got = pruned.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(got != 0, keep)
    assert torch.equal(got[keep], w[keep])
    assert report["sparsity"] == 0.5 and report["layer_sparsity"] == [0.5] * 4
    assert report["mask_rule"].startswith("mask = weight != 0")
    assert len(report["reconstruction_error"]) == 4 and min(report["reconstruction_error"]) > 0


def test_nm_and_rmi_sparsity(text, tmp_path):
    report = run_prune(prune_config(text, nm="2:4"), str(tmp_path / "nm"))
    model, _ = load_model(str(tmp_path / "nm"))
    w = model.model.layers[1].mlp.up_proj.weight
    assert ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) == 2).all() and report["sparsity"] == 0.5

    report = run_prune(prune_config(text, sparsity_allocation="rmi", rmi_spread=0.05), str(tmp_path / "rmi"))
    assert sorted(report["target_layer_sparsity"]) == pytest.approx([0.45, 0.45, 0.55, 0.55])
    assert abs(report["sparsity"] - 0.5) < 0.005  # rows round their pruned count
    least = min(range(4), key=lambda i: report["rmi_importance"][i])
    assert report["target_layer_sparsity"][least] == pytest.approx(0.55)


def test_rmi_estimator_and_allocation():
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    rotation = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(1)))[0]
    assert linear_cka(x, 3 * x @ rotation) == pytest.approx(1.0, abs=1e-5)
    assert linear_cka(x, torch.randn(16, 8, generator=torch.Generator().manual_seed(2))) < 0.9
    rates = rmi_sparsities([0.9, 0.1, 0.5], sizes=[1, 1, 2], target=0.5, spread=0.1)
    assert rates == pytest.approx([0.4, 0.6, 0.5])  # least important layer gets the most zeros; mean kept


@pytest.mark.parametrize("case, match", [
    (dict(mode="width", nm="2:4"), "applies to mode 'unstructured' only"),
    (dict(nm="4:2"), "need 0 < N < M"),
    (dict(nm="half"), "is not an N:M pattern"),
    (dict(layer_sparsity=[0.5, 1.2, 0.5, 0.5]), r"must be in \[0, 1\)"),
    (dict(sparsity_allocation="cka"), "sparsity_allocation='cka' is not accepted"),
])
def test_bad_sparsity_options_are_refused(text, case, match):
    with pytest.raises(UserError, match=match):
        prune_config(text, **case)


def test_cli_takes_an_nm_pattern(text, tmp_path, capsys):
    from rankadaptor.cli import main

    out = tmp_path / "nm"
    assert main(["prune", "--model", str(MODEL), "--calibration", str(text), "--mode", "unstructured",
                 "--nm", "2:4", "--output", str(out)]) == 0  # YAML 1.1 would read 2:4 as the number 124
    assert json.loads((out / "prune_report.json").read_text())["nm"] == "2:4"
    assert main(["prune", "--model", str(MODEL), "--calibration", str(text), "--nm", "2:4",
                 "--output", str(tmp_path / "bad")]) == 2
    assert "nm='2:4' applies to mode 'unstructured' only" in capsys.readouterr().err


def test_wrong_number_of_layer_rates_writes_nothing(text, tmp_path):
    with pytest.raises(UserError, match="layer_sparsity has 2 entries but the model has 4"):
        run_prune(prune_config(text, layer_sparsity=[0.5, 0.5]), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_losa_export_keeps_the_pruned_zero_pattern_and_the_adapted_logits(text, sparse_dir, tmp_path):
    config = from_dict(RecoverConfig, {"data": str(text), "method": "losa", "schedule": "losa", **FAST})
    result = run_recover(config, str(sparse_dir), str(tmp_path / "adapter"))
    errors = json.loads((sparse_dir / "prune_report.json").read_text())["reconstruction_error"]
    assert result["lora_params"] <= result["uniform_params"]
    assert [r for _, r in sorted(zip(errors, result["rank_vector"]))] == sorted(result["rank_vector"])
    export_merged(str(sparse_dir), str(tmp_path / "adapter"), str(tmp_path / "merged"))

    pruned, _ = load_model(str(sparse_dir))
    adapted, _ = load_adapted(str(sparse_dir), str(tmp_path / "adapter"))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert isinstance(adapted.base_model.model.model.layers[2].mlp.down_proj, MaskedLoraLinear)
    before, after = pruned.state_dict(), merged.state_dict()
    assert before.keys() == after.keys()
    for name in before:  # exactly the pruned model's zeros, element by element
        assert torch.equal(before[name] == 0, after[name] == 0), name
    assert projection_sparsity(merged) == 0.5
    assert sum(int((before[n] != after[n]).sum()) for n in before) > 1000  # the adapter did change the weights
    with torch.no_grad():
        assert (adapted(IDS).logits - pruned(IDS).logits).abs().max() > 1e-3
        torch.testing.assert_close(merged(IDS).logits, adapted(IDS).logits, rtol=1e-4, atol=1e-5)

    # The adapter is an ordinary peft LoRA adapter: plain peft loads it (unmasked: merging that fills the zeros).
    plain = PeftModel.from_pretrained(load_model(str(sparse_dir))[0], str(tmp_path / "adapter")).merge_and_unload()
    assert projection_sparsity(plain) < 0.4


def test_plain_lora_loses_the_sparsity(text, sparse_dir, tmp_path):
    run_recover(from_dict(RecoverConfig, {"data": str(text), "method": "lora", **FAST}), str(sparse_dir),
                str(tmp_path / "adapter"))
    export_merged(str(sparse_dir), str(tmp_path / "adapter"), str(tmp_path / "merged"))
    assert projection_sparsity(AutoModelForCausalLM.from_pretrained(tmp_path / "merged")) < 0.01


def test_error_rank_allocation_respects_the_budget_and_follows_the_error():
    candidates = [2, 4, 6, 8, 10, 12]
    costs = [1000, 1000, 1000, 1000, 1000, 1000]
    errors = [0.1, 0.2, 0.4, 0.8, 1.6, 0.05]
    ranks = error_proportional_ranks(errors, costs, 8, candidates)
    assert lora_parameters(ranks, costs) <= lora_parameters([8] * 6, costs)
    assert lora_parameters(ranks, costs) >= lora_parameters([8] * 6, costs) - 2 * max(costs)  # budget is spent
    order = sorted(range(6), key=lambda i: errors[i])
    assert [ranks[i] for i in order] == sorted(ranks) and ranks[4] > ranks[0] and ranks[4] == 12
    assert set(ranks) <= set(candidates)

    widths = [900, 1300, 1300, 900]  # unequal costs (width-pruned layers), another base rank
    ranks = error_proportional_ranks([1.0, 3.0, 1.0, 3.0], widths, 6, candidates)
    assert lora_parameters(ranks, widths) <= 6 * sum(widths)
    assert ranks[1] > ranks[0] and ranks[3] > ranks[2]
    assert error_proportional_ranks([0.5] * 4, widths, 6, candidates) == [6] * 4  # equal errors: uniform
    assert error_proportional_ranks([0.0] * 4, widths, 4, candidates) == [4] * 4
    with pytest.raises(UserError, match="3 reconstruction errors for 4 decoder layers"):
        error_proportional_ranks([1.0] * 3, widths, 8, candidates)


def test_losa_schedule_needs_the_prune_report(tmp_path, text):
    with pytest.raises(UserError, match="needs the per-layer reconstruction_error"):
        run_recover(from_dict(RecoverConfig, {"data": str(text), "schedule": "losa", **FAST}), str(MODEL),
                    str(tmp_path / "adapter"))
    assert not (tmp_path / "adapter").exists()


def test_sparse_jobs_recover_masked_and_add_the_losa_rows():
    from rankadaptor.flows.baselines import baseline_methods
    from rankadaptor.flows.trials import recovery_identity, starting_trials
    from rankadaptor.job import load_job
    from rankadaptor.report import LOSA, MASKED_UNIFORM, PRUNED, UNIFORM

    dense = load_job()
    assert dense.trial_method == "lora" and dense.recover_config("").method == "lora"
    assert baseline_methods(dense) == {PRUNED: None, UNIFORM: ("lora", "uniform")}
    assert starting_trials(dense) == [UNIFORM]
    sparse = load_job(overrides={"prune": {"mode": "unstructured", "ratio": 0.5, "nm": "2:4"}, "losa_start": True})
    prune = sparse.prune_config("text.txt")
    assert (prune.mode, prune.ratio, prune.nm) == ("unstructured", 0.5, "2:4")  # the job's options reach the step
    assert sparse.trial_method == "losa" and sparse.recover_config("").method == "losa"
    assert recovery_identity(sparse.recover_config(""))["method"] == "losa"  # masked trials are other trials
    assert baseline_methods(sparse) == {PRUNED: None, UNIFORM: ("lora", "uniform"),
                                        MASKED_UNIFORM: ("losa", "uniform"), LOSA: ("losa", "losa")}
    assert starting_trials(sparse) == [MASKED_UNIFORM, LOSA]
    structured = load_job(overrides={"losa_baseline": True})
    assert baseline_methods(structured)[LOSA] == ("lora", "losa") and starting_trials(structured) == [UNIFORM]
    with pytest.raises(UserError, match="prune: nm='2:4' applies to mode 'unstructured' only"):
        load_job(overrides={"prune": {"nm": "2:4"}})


@pytest.mark.slow  # the LoSA benchmark end to end
def test_benchmark_keeps_sparsity_only_with_masked_lora():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "benchmarks.quality.losa_sparse", "--docs", "40", "--epochs", "1",
                          "--device", "cpu", "--json"], capture_output=True, text=True, timeout=600, check=True,
                         cwd=ROOT).stdout
    rows = {row["method"]: row for row in json.loads(out)["rows"]}
    assert rows["pruned (wanda)"]["sparsity"] == 0.5 and rows["dense"]["sparsity"] == 0.0
    assert rows["losa-masked lora (uniform)"]["sparsity"] == rows["losa-masked lora (losa ranks)"]["sparsity"] == 0.5
    assert rows["lora (uniform)"]["sparsity"] < 0.01
    assert rows["losa-masked lora (uniform)"]["ppl"] < rows["pruned (wanda)"]["ppl"]
