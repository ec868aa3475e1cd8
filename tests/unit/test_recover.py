import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file

from rankadaptor.config import from_dict
from rankadaptor.data import read_texts, sample_corpus
from rankadaptor.errors import UserError
from rankadaptor.evaluate.perplexity import perplexity
from rankadaptor.models.loading import load_model
from rankadaptor.prune.config import PruneConfig
from rankadaptor.prune.stage import run_prune
from rankadaptor.recover.adapters import load_adapted
from rankadaptor.recover.batches import IGNORE, instruction_example, micro_batches
from rankadaptor.recover.config import RecoverConfig
from rankadaptor.recover.ranks import TARGET_MODULES, increasing_schedule
from rankadaptor.recover.stage import add_adapters, run_recover
from rankadaptor.recover.train import TrainSettings, step_plan, train
from rankadaptor.widths import attn_head_dim, layer_widths, lora_cost_per_rank, lora_parameters

FAST = dict(cutoff=64, batch_size=8, micro_batch_tokens=256, epochs=1, lr=2e-3, save_steps=100)


@pytest.fixture(scope="module")
def corpus(tiny_model_dir, tmp_path_factory):
    """Self-distillation text of the unpruned tiny model: train and held-out files."""
    model, tokenizer = load_model(str(tiny_model_dir))
    docs = sample_corpus(model, tokenizer, num_docs=64, max_new_tokens=96, seed=0)
    root = tmp_path_factory.mktemp("corpus")
    (root / "train.txt").write_text("\n\n".join(docs[:48]))
    (root / "heldout.txt").write_text("\n\n".join(docs[48:]))
    return root


@pytest.fixture(scope="module")
def pruned_dir(tiny_model_dir, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("pruned") / "model"
    run_prune(from_dict(PruneConfig, dict(model=str(tiny_model_dir), calibration=str(corpus / "train.txt"),
                                          layer_start=1, layer_end=3, ratio=0.2)), str(out))
    return out


def recover_config(data, **overrides):
    return from_dict(RecoverConfig, {"data": str(data), **FAST, **overrides})


def lora_shapes(model):
    return {n: tuple(p.shape) for n, p in model.named_parameters() if "lora_" in n}


def test_rank_vector_of_eights_equals_uniform_lora(pruned_dir, corpus):
    model, _ = load_model(str(pruned_dir))
    ours = add_adapters(model, recover_config(corpus / "train.txt", rank_vector=[8, 8, 8, 8]), [8, 8, 8, 8], steps=1)
    model, _ = load_model(str(pruned_dir))
    plain = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=TARGET_MODULES))
    assert lora_shapes(ours) == lora_shapes(plain) and len(lora_shapes(ours)) == 4 * 7 * 2
    assert {m.scaling["default"] for m in ours.modules() if isinstance(m, LoraLayer)} == {2.0}


def test_rank_vector_gives_per_layer_ranks_and_exact_count(pruned_dir, corpus):
    model, _ = load_model(str(pruned_dir))
    costs = lora_cost_per_rank(layer_widths(model), model.config.hidden_size, attn_head_dim(model.config))
    peft_model = add_adapters(model, recover_config(corpus / "train.txt"), [2, 12, 6, 8], steps=1)
    shapes = lora_shapes(peft_model)
    assert shapes["base_model.model.model.layers.1.self_attn.q_proj.lora_A.default.weight"][0] == 12
    assert shapes["base_model.model.model.layers.0.mlp.down_proj.lora_B.default.weight"][1] == 2
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == lora_parameters([2, 12, 6, 8], costs)
    # every layer keeps LoRA's scale alpha/r = 2
    assert {m.scaling["default"] for m in peft_model.modules() if isinstance(m, LoraLayer)} == {2.0}


@pytest.mark.parametrize("rank_vector, match", [
    ([8, 8, 8], r"rank vector has 3 entries but the model has 4 decoder layers"),
    ([8, 8, 8, 7], r"rank\(s\) \[7\] in the rank vector are not in the candidate set \[2, 4, 6, 8, 10, 12\]"),
])
def test_bad_rank_vector_is_refused(pruned_dir, corpus, tmp_path, rank_vector, match):
    with pytest.raises(UserError, match=match):
        run_recover(recover_config(corpus / "train.txt", rank_vector=rank_vector), str(pruned_dir), str(tmp_path / "a"))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("overrides, match", [
    ({"lr": -1.0}, r"lr=-1.0 is outside \(0, 1\)"),
    ({"micro_batch_tokens": 32}, r"micro_batch_tokens=32 must be at least cutoff=64 \(one full example\)"),
    ({"method": "dora"}, r"method='dora' is not accepted"),
])
def test_bad_hyperparameters_are_refused(corpus, overrides, match):
    with pytest.raises(UserError, match=match):
        recover_config(corpus / "train.txt", **overrides)


def test_empty_or_malformed_data_is_refused(pruned_dir, tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.jsonl").write_text('{"instruction": "x", "output"\n')
    for name, match in (("empty.jsonl", "is empty"), ("bad.jsonl", "is not valid JSONL")):
        with pytest.raises(UserError, match=match):
            run_recover(recover_config(tmp_path / name), str(pruned_dir), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_micro_batches_keep_to_the_token_budget_longest_first():
    lengths = [random.Random(0).randint(1, 64) for _ in range(200)]
    step = random.Random(1).sample(range(200), 64)
    batches = micro_batches(step, lengths, max_tokens=256)
    assert sorted(i for b in batches for i in b) == sorted(step)
    assert all(len(b) * lengths[b[0]] <= 256 for b in batches)
    assert [lengths[i] for b in batches for i in b] == sorted((lengths[i] for i in step), reverse=True)
    assert sum(len(b) * lengths[b[0]] for b in batches) / sum(lengths[i] for i in step) < 1.15  # little padding
    assert micro_batches([0, 1], [300, 10], max_tokens=256) == [[0], [1]]  # one that does not fit goes alone
    assert micro_batches([0, 1, 2, 3], [50, 40, 30, 20], max_tokens=150) == [[0, 1], [2, 3]]  # no lone last one
    for seed in range(50):  # a batch of one only where nothing else fits
        rng = random.Random(seed)
        lengths = [rng.randint(1, 64) for _ in range(16)]
        for budget in (64, 100, 256):
            batches = micro_batches(list(range(16)), lengths, budget)
            assert all(len(b) * lengths[b[0]] <= budget for b in batches)
            assert all(len(b) > 1 or 2 * lengths[b[0]] > budget or b is batches[-1] and len(batches[-2]) <= 2
                       for b in batches)


def variable_length_examples(n: int, cutoff: int, vocab: int, seed: int = 0) -> list[dict]:
    """Instruction-like examples of many lengths, the first part of each masked from the loss."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        ids = [rng.randrange(3, vocab) for _ in range(rng.randint(4, cutoff))]
        prompt = rng.randint(1, len(ids) - 1)
        examples.append({"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]})
    return examples


def test_the_token_budget_sets_memory_not_the_result(pruned_dir, corpus, tmp_path):
    """One example per forward pass or a whole step in one: the same losses and adapter weights."""
    config = recover_config(corpus / "train.txt", dropout=0.0)  # dropout masks depend on the batch shapes
    examples = variable_length_examples(24, config.cutoff, vocab=500)
    runs = []
    for budget in (config.cutoff, 8 * config.cutoff):
        settings = TrainSettings(lr=config.lr, epochs=1, batch_size=8, micro_batch_tokens=budget, warmup_steps=0,
                                 max_grad_norm=1.0, save_steps=100, seed=0)
        model, tokenizer = load_model(str(pruned_dir))
        peft_model = add_adapters(model, config, [8, 8, 8, 8], steps=3)
        log = train(peft_model, examples, settings, tokenizer.pad_token_id, str(tmp_path / f"ckpt-{budget}"))
        weights = {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
        runs.append((step_plan(examples, settings), log, weights))
    (small_plan, small, small_weights), (large_plan, large, large_weights) = runs
    assert [len(step) for step in large_plan] == [1, 1, 1] and all(len(step) > 1 for step in small_plan)
    assert small.padded_tokens < large.padded_tokens  # fewer rows per forward, less padding
    assert small.real_tokens == large.real_tokens
    torch.testing.assert_close(torch.tensor(small.losses), torch.tensor(large.losses), rtol=1e-5, atol=1e-6)
    for name in small_weights:
        torch.testing.assert_close(small_weights[name], large_weights[name], rtol=1e-4, atol=2e-5)  # Adam: lr 2e-3


def test_running_out_of_memory_names_the_setting_to_lower(pruned_dir, corpus, tmp_path):
    config = recover_config(corpus / "train.txt")
    model, tokenizer = load_model(str(pruned_dir))
    peft_model = add_adapters(model, config, [8, 8, 8, 8], steps=1)

    def out_of_memory(*_):  # what the CUDA caching allocator raises when a micro-batch does not fit
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    peft_model.base_model.model.model.layers[1].register_forward_hook(out_of_memory)
    settings = TrainSettings(lr=config.lr, epochs=1, batch_size=8, micro_batch_tokens=256, warmup_steps=0,
                             max_grad_norm=1.0, save_steps=100, seed=0)
    with pytest.raises(UserError, match=r"out of cpu memory on a micro-batch of \d+ x \d+ tokens: lower "
                                        r"micro_batch_tokens \(now 256\)"):
        train(peft_model, variable_length_examples(8, 64, vocab=500), settings, tokenizer.pad_token_id,
              str(tmp_path / "ckpt"))


def test_increasing_schedule_is_the_papers():
    assert increasing_schedule(32) == [4] * 8 + [6] * 8 + [10] * 8 + [12] * 8


def test_alpaca_prompt_is_masked(tiny_model_dir):
    _, tokenizer = load_model(str(tiny_model_dir))
    example = instruction_example(tokenizer, {"instruction": "Say hi", "input": "", "output": "hi there"}, cutoff=256)
    n_prompt = sum(1 for label in example["labels"] if label == IGNORE)
    assert example["labels"][:n_prompt] == [IGNORE] * n_prompt and n_prompt > 10
    assert example["labels"][n_prompt:] == example["input_ids"][n_prompt:]
    assert example["labels"][-1] == tokenizer.eos_token_id
    assert len(instruction_example(tokenizer, {"instruction": "Say hi", "output": "hi"}, cutoff=12)["input_ids"]) == 12


@pytest.mark.slow
def test_recovery_improves_heldout_perplexity(pruned_dir, corpus, tmp_path):
    result = run_recover(recover_config(corpus / "train.txt", rank_vector=[8, 4, 12, 8], epochs=2),
                         str(pruned_dir), str(tmp_path / "adapter"))
    heldout = read_texts(str(corpus / "heldout.txt"))
    pruned, tokenizer = load_model(str(pruned_dir))
    recovered, _ = load_adapted(str(pruned_dir), str(tmp_path / "adapter"))
    ppl_pruned, ppl_recovered = perplexity(pruned, tokenizer, heldout), perplexity(recovered, tokenizer, heldout)
    print(f"held-out perplexity: pruned {ppl_pruned:.2f}, recovered {ppl_recovered:.2f}")
    assert ppl_recovered < 0.9 * ppl_pruned
    saved = json.loads((tmp_path / "adapter" / "rank_vector.json").read_text())
    assert saved["rank_vector"] == [8, 4, 12, 8] and saved["lora_params"] == result["trainable_params"]
    assert saved["uniform_rank"] == 8 and saved["uniform_params"] == 8 * sum(saved["cost_per_rank"])
    assert not (tmp_path / "adapter.ckpt").exists()  # the checkpoint is removed once the adapter is written


@pytest.mark.slow
def test_adalora_reallocates_ranks(pruned_dir, corpus, tmp_path):
    result = run_recover(recover_config(corpus / "train.txt", method="adalora", epochs=2), str(pruned_dir),
                         str(tmp_path / "ada"))
    allocated = result["allocated_ranks"]
    assert len(allocated) == 4 and max(allocated) <= 12 and min(allocated) < 12  # pruned from init_r 12
    model, _ = load_adapted(str(pruned_dir), str(tmp_path / "ada"))
    assert any(p.shape[0] < 12 for n, p in model.named_parameters() if "lora_A" in n)


def _recover_cli(pruned_dir, data, output):
    return [sys.executable, "-m", "rankadaptor.cli", "recover", "--model", str(pruned_dir), "--data", str(data),
            "--output", str(output), "--cutoff", "32", "--batch-size", "4", "--micro-batch-tokens", "64",
            "--epochs", "1", "--save-steps", "1", "--lr", "0.002"]


@pytest.mark.slow
@pytest.mark.parametrize("durable", [False, True], ids=["beside-the-output", "checkpoint-root"])
def test_killed_recovery_resumes_to_the_same_result(pruned_dir, corpus, tmp_path, durable):
    """durable: checkpoints under --checkpoint-root, and the rerun writes elsewhere, as a retried pod on
    another node would (its local disk, and so <output>.ckpt, gone): it still resumes, bit-exact."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    subprocess.run(_recover_cli(pruned_dir, corpus / "train.txt", reference), check=True, env=env,
                   capture_output=True)

    output = tmp_path / "killed"
    extra = ["--checkpoint-root", str(tmp_path / "durable")] if durable else []
    slots = (lambda: list((tmp_path / "durable").glob("recover-*/*"))) if durable else (
        lambda: list((tmp_path / "killed.ckpt").glob("*")))

    def checkpointed_step() -> int:  # the newest complete checkpoint slot's step
        logs = [slot / "log.json" for slot in slots() if (slot / "manifest.json").exists()]
        return max((json.loads(log.read_text())["step"] for log in logs), default=0)

    proc = subprocess.Popen(_recover_cli(pruned_dir, corpus / "train.txt", output) + extra, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and checkpointed_step() < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not output.exists(), "the run finished before it could be killed"
    killed_at = checkpointed_step()
    assert sorted(p.name for p in slots()) == ["a", "b"]  # saves alternate

    if durable:
        output = tmp_path / "retried"
    rerun = subprocess.run(_recover_cli(pruned_dir, corpus / "train.txt", output) + extra, check=True, env=env,
                           capture_output=True, text=True)
    resumed = json.loads(rerun.stdout[rerun.stdout.index("{"):])
    assert resumed["resumed_from"] >= killed_at >= 3
    assert resumed["steps"] > resumed["resumed_from"]
    assert not slots()  # the checkpoint is removed once the adapter is written
    ours, theirs = (load_file(d / "adapter_model.safetensors") for d in (output, reference))
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=1e-6)


def test_merged_export_gives_the_adapted_logits(pruned_dir, corpus, tmp_path):
    from transformers import AutoModelForCausalLM

    from rankadaptor.recover.adapters import export_merged

    run_recover(recover_config(corpus / "train.txt", rank_vector=[4, 12, 2, 8], max_steps=2), str(pruned_dir),
                str(tmp_path / "adapter"))
    export_merged(str(pruned_dir), str(tmp_path / "adapter"), str(tmp_path / "merged"))
    adapted, _ = load_adapted(str(pruned_dir), str(tmp_path / "adapter"))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in name for name, _ in merged.named_parameters())
    ids = torch.tensor([[1, 40, 50, 60, 70]])
    pruned, _ = load_model(str(pruned_dir))
    with torch.no_grad():
        assert (adapted(ids).logits - pruned(ids).logits).abs().max() > 1e-3  # the adapter changes the model
        torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, rtol=1e-4, atol=1e-5)
