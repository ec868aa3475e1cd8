import dataclasses
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

import rankadaptor  # noqa: F401  (registers the pruned model classes)
from rankadaptor.cli import build_parser, main
from rankadaptor.config import from_dict
from rankadaptor.data import calibration_batch, read_texts
from rankadaptor.errors import UserError
from rankadaptor.models.loading import load_model
from rankadaptor.models.pruned_llama import PrunedLlamaForCausalLM
from rankadaptor.prune.config import PruneConfig
from rankadaptor.prune.importance import calibration_gradients, layer_group_scores
from rankadaptor.prune.stage import prune_model, run_prune
from rankadaptor.prune.width import keep_top
from rankadaptor.widths import count_parameters, layer_widths

IDS = torch.tensor([[1, 45, 67, 89, 120, 7, 300, 12, 99, 4]])


def config_for(model_dir, text_file, **overrides):
    values = dict(model=str(model_dir), calibration=str(text_file), layer_start=1, layer_end=3,
                  protect_first=1, protect_last=1, num_samples=4, seq_len=32)
    return from_dict(PruneConfig, {**values, **overrides})


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("importance", ["element1", "element2", "vector", "l2"])
def test_width_pruning_fixture_roundtrip(tiny_model_dir, text_file, tmp_path, importance):
    out = tmp_path / "pruned"
    report = run_prune(config_for(tiny_model_dir, text_file, importance=importance, ppl_text=str(text_file)), str(out))
    model = AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(model, PrunedLlamaForCausalLM)
    widths = layer_widths(model)
    assert widths == report["widths_after"]
    assert widths[0] == widths[3] == {"heads": 4, "kv_heads": 4, "intermediate": 172}
    assert widths[1]["intermediate"] < 172 and widths[1]["heads"] < 4
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == report["params_after"] == count_parameters(model.config, widths)
    assert abs(report["removed_fraction"] - 0.2) < 0.03
    assert report["ppl_after"] > report["ppl_before"] > 1
    reloaded, tokenizer = load_model(str(out))
    assert torch.equal(logits(reloaded), logits(model))
    assert tokenizer("hello")["input_ids"]
    generated = reloaded.generate(IDS[:, :3], max_new_tokens=5, do_sample=False)
    assert generated.shape == (1, 8)


def test_random_llama_pruning_matches_zeroed_original(random_llama_dir, text_file):
    model, tokenizer = load_model(str(random_llama_dir))
    batch = calibration_batch(tokenizer, read_texts(str(text_file)), 4, 32)
    config = config_for(random_llama_dir, text_file, layer_start=2, layer_end=6, ratio=0.5, ratio_scope="layer")
    pruned, details = prune_model(model, batch, config)
    widths, n_kv = layer_widths(pruned), model.config.num_key_value_heads
    assert [w["kv_heads"] for w in widths] == [n_kv] * 2 + [n_kv // 2] * 4 + [n_kv] * 2
    assert sum(p.numel() for p in pruned.parameters()) == count_parameters(pruned.config, widths)

    # Zero the removed heads' o_proj columns and the removed channels' down_proj columns in the original:
    # its output must then equal the pruned model's.
    head_dim = model.config.head_dim
    grads = calibration_gradients(model, batch)
    with torch.no_grad():
        for i in details["pruned_layers"]:
            layer = model.model.layers[i]
            head_scores, channel_scores = layer_group_scores(layer, model.config, "element1", grads)
            kept_groups, kept_channels = keep_top(head_scores, 0.5), keep_top(channel_scores, 0.5)
            q_per_group = layer.self_attn.q_proj.out_features // len(head_scores)
            columns = torch.ones(layer.self_attn.o_proj.in_features, dtype=torch.bool)
            for g in kept_groups:
                columns[g * q_per_group:(g + 1) * q_per_group] = False
            layer.self_attn.o_proj.weight[:, columns] = 0
            dropped = torch.ones(layer.mlp.down_proj.in_features, dtype=torch.bool)
            dropped[kept_channels] = False
            layer.mlp.down_proj.weight[:, dropped] = 0
            assert q_per_group % head_dim == 0
    torch.testing.assert_close(logits(model), logits(pruned), rtol=1e-5, atol=1e-5)


def test_removing_nothing_keeps_logits(tiny_model_dir, text_file):
    original, tokenizer = load_model(str(tiny_model_dir))
    pruned, _ = load_model(str(tiny_model_dir))
    config = dataclasses.replace(config_for(tiny_model_dir, text_file, ratio_scope="layer"), ratio=0.0)  # refused by run_prune
    pruned, _ = prune_model(pruned, calibration_batch(tokenizer, read_texts(str(text_file)), 4, 32), config)
    assert layer_widths(pruned) == layer_widths(original)
    assert torch.equal(logits(pruned), logits(original))


def test_element1_matches_hand_computation(random_llama_dir, text_file):
    model, tokenizer = load_model(str(random_llama_dir))
    batch = calibration_batch(tokenizer, read_texts(str(text_file)), 3, 16)
    grads = calibration_gradients(model, batch)
    # The same mean gradient by hand: average the per-sample loss gradients.
    layer = model.model.layers[3]
    model.zero_grad()
    for sample in batch:
        (model(input_ids=sample[None], labels=sample[None]).loss / len(batch)).backward()
    manual = {name: getattr(part, name).weight.grad.clone()
              for part, names in ((layer.self_attn, "qkvo"), (layer.mlp, ("gate", "up", "down")))
              for name in [f"{n}_proj" for n in names]}
    heads, channels = layer_group_scores(layer, model.config, "element1", grads)
    d, n_kv = model.config.head_dim, model.config.num_key_value_heads
    q_rows = layer.self_attn.q_proj.out_features // n_kv
    w = {name: getattr(layer.self_attn if name[0] in "qkvo" else layer.mlp, name).weight.detach() for name in manual}
    s = {name: (w[name] * manual[name]).abs() for name in manual}
    for g in range(n_kv):
        expected = (s["q_proj"][g * q_rows:(g + 1) * q_rows].sum() + s["k_proj"][g * d:(g + 1) * d].sum()
                    + s["v_proj"][g * d:(g + 1) * d].sum() + s["o_proj"][:, g * q_rows:(g + 1) * q_rows].sum())
        torch.testing.assert_close(heads[g], expected, rtol=1e-4, atol=1e-9)
    c = 5
    expected = s["gate_proj"][c].sum() + s["up_proj"][c].sum() + s["down_proj"][:, c].sum()
    torch.testing.assert_close(channels[c], expected, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("block_importance", ["taylor", "ppl"])
def test_depth_pruning_keeps_protected_blocks(random_llama_dir, text_file, tmp_path, block_importance):
    base, _ = load_model(str(random_llama_dir))
    widths = layer_widths(base)
    block_fraction = 1 - count_parameters(base.config, widths[1:]) / count_parameters(base.config, widths)
    config = config_for(random_llama_dir, text_file, mode="depth", ratio=2 * block_fraction, protect_first=4,
                        protect_last=2, block_importance=block_importance)
    report = run_prune(config, str(tmp_path / "d"))
    assert set(report["removed_blocks"]) == {4, 5}  # the only two unprotected of 8 blocks
    with pytest.raises(UserError, match="cannot remove 3 blocks: only 2 of 8 are unprotected"):
        run_prune(from_dict(PruneConfig, {**vars(config), "ratio": 3 * block_fraction}), str(tmp_path / "e"))
    assert not (tmp_path / "e").exists()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "d")
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 6
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == list(range(6))
    assert model.generate(IDS[:, :3], max_new_tokens=4, do_sample=False).shape == (1, 7)


def test_depth_pruning_removes_least_important(random_llama_dir, text_file):
    model, tokenizer = load_model(str(random_llama_dir))
    batch = calibration_batch(tokenizer, read_texts(str(text_file)), 2, 16)
    widths = layer_widths(model)
    block_fraction = 1 - count_parameters(model.config, widths[1:]) / count_parameters(model.config, widths)
    config = config_for(random_llama_dir, text_file, mode="depth", ratio=block_fraction, protect_first=1,
                        protect_last=1)
    _, details = prune_model(model, batch, config)
    (removed,) = details["removed_blocks"]
    scores = details["block_scores"]
    assert scores[removed] == min(scores[1:-1])


def _tiny_gpt2(path):
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=64)).save_pretrained(path)
    return path


@pytest.mark.parametrize("case, match", [
    ("ratio", r"ratio=1.0 is outside \[0, 1\)"),
    ("range", r"layer range \[1, 9\) is outside the model's 4 layers"),
    ("arch", r"architecture 'gpt2'.*LLaMA"),
    ("missing", r"not found: expected a local checkpoint directory"),
    ("corrupt", r"cannot load the weights"),
    ("short", r"has \d+ tokens; 10 samples x 64 tokens need 640"),
    ("importance", r"importance='taylor2' is not accepted"),
])
def test_bad_input_writes_nothing(case, match, tiny_model_dir, text_file, tmp_path):
    model_dir = tiny_model_dir
    overrides = {}
    if case == "ratio":
        overrides = {"ratio": 1.0}
    elif case == "range":
        overrides = {"layer_end": 9}
    elif case == "arch":
        model_dir = _tiny_gpt2(tmp_path / "gpt2")
    elif case == "missing":
        model_dir = tmp_path / "nope"
    elif case == "corrupt":
        model_dir = tmp_path / "corrupt"
        model_dir.mkdir()
        for f in tiny_model_dir.iterdir():
            (model_dir / f.name).write_bytes(f.read_bytes())
        weights = (model_dir / "model.safetensors").read_bytes()
        (model_dir / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    elif case == "short":
        short = tmp_path / "short.txt"
        short.write_text("a tiny bit of text")
        text_file = short
        overrides = {"num_samples": 10, "seq_len": 64}
    elif case == "importance":
        overrides = {"importance": "taylor2"}
    out = tmp_path / "out"
    with pytest.raises(UserError, match=match):
        run_prune(config_for(model_dir, text_file, **overrides) if case not in ("ratio", "importance")
                  else PruneConfig(**{**vars(config_for(tiny_model_dir, text_file)), **overrides}), str(out))
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_cli_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["prune", "--help"])
    help_text = capsys.readouterr().out
    for field in PruneConfig.__dataclass_fields__:
        assert "--" + field.replace("_", "-") in help_text


def test_cli_prunes_and_reports_bad_input(tiny_model_dir, text_file, tmp_path, capsys):
    args = ["prune", "--model", str(tiny_model_dir), "--calibration", str(text_file), "--layer-start", "1",
            "--layer-end", "3", "--num-samples", "4", "--seq-len", "32"]
    assert main(args + ["--output", str(tmp_path / "ok")]) == 0
    assert json.loads((tmp_path / "ok" / "prune_report.json").read_text())["params_after"] < 230976
    assert main(args + ["--ratio", "-0.1", "--output", str(tmp_path / "bad")]) == 2
    assert "ratio=-0.1 is outside [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_the_pruned_checkpoint_keeps_the_base_models_dtype(tiny_model_dir, text_file, tmp_path):
    """A bf16 base (every LLaMA release) gives a bf16 pruned checkpoint: half the bytes of float32 in each
    step that downloads it; pruning itself still runs in float32."""
    from safetensors import safe_open

    base = tmp_path / "bf16-base"
    model, tokenizer = load_model(str(tiny_model_dir))
    model.to(torch.bfloat16).save_pretrained(base)
    tokenizer.save_pretrained(base)
    report = run_prune(config_for(base, text_file), str(tmp_path / "pruned"))
    assert report["dtype"] == "bfloat16"
    with safe_open(str(tmp_path / "pruned" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert run_prune(config_for(tiny_model_dir, text_file), str(tmp_path / "fp32"))["dtype"] == "float32"
