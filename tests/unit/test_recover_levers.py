"""The recover speed levers (issue 17) change how a step is computed, not what it computes: packed rows
give each example the loss it has alone (document-aware attention, positions restarting per example), a
packed run's step losses equal the padded run's, prefetching changes nothing, and liger refuses a CPU."""

import random

import pytest
import torch

from rankadaptor.config import from_dict
from rankadaptor.errors import UserError
from rankadaptor.models.loading import load_model
from rankadaptor.recover.batches import IGNORE, collate, pack, packed_length, packed_rows
from rankadaptor.recover.config import RecoverConfig
from rankadaptor.recover.stage import add_adapters
from rankadaptor.recover.train import TrainSettings, train


def examples(n: int, vocab: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ids = [1] + [rng.randrange(3, vocab) for _ in range(rng.randrange(6, 60))] + [2]
        prompt = rng.randrange(1, len(ids) - 1)
        out.append({"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]})
    return out


def test_packed_rows_keep_to_the_budget_and_hold_every_example_once():
    lengths = [random.Random(i).randrange(5, 64) for i in range(40)]
    rows = packed_rows(list(range(40)), lengths, 128)
    assert sorted(i for row in rows for i in row) == list(range(40))
    assert all(sum(lengths[i] for i in row) <= 128 for row in rows)
    assert len(rows) <= -(-sum(lengths) // 128) + 1  # first-fit decreasing wastes little
    assert [packed_length(n, 128) for n in (1, 16, 17, 128)] == [16, 16, 32, 128]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_packed_row_scores_each_example_as_alone(tiny_model_dir, attention):
    model, _ = load_model(str(tiny_model_dir))
    model.set_attn_implementation(attention)
    rows = examples(5, model.config.vocab_size)
    batch = pack(rows, 0, 256)
    assert batch["input_ids"].shape == (1, packed_length(sum(len(e["input_ids"]) for e in rows), 256))
    with torch.no_grad():
        packed = model(**batch, use_cache=False).logits[0]
        start = 0
        for e in rows:
            alone = model(input_ids=torch.tensor([e["input_ids"]]), use_cache=False).logits[0]
            torch.testing.assert_close(packed[start:start + len(alone)], alone, atol=1e-5, rtol=1e-5)
            start += len(alone)
        # the same label tokens, so the same mean loss as the padded micro-batch
        torch.testing.assert_close(model(**batch, use_cache=False).loss,
                                   model(**collate(rows, 0), use_cache=False).loss, atol=1e-5, rtol=1e-5)


def run(tiny_model_dir, tmp_path, name, **levers):
    model, _ = load_model(str(tiny_model_dir))
    config = from_dict(RecoverConfig, {"data": "x", "dropout": 0.0})
    peft_model = add_adapters(model, config, [8] * model.config.num_hidden_layers, 4)
    settings = TrainSettings(lr=2e-3, epochs=1, batch_size=8, micro_batch_tokens=128, warmup_steps=1,
                             max_grad_norm=1.0, save_steps=100, seed=0, **levers)
    log = train(peft_model, examples(32, model.config.vocab_size), settings, 0, str(tmp_path / name))
    return log, {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}


def test_packing_and_prefetch_train_the_same_steps(tiny_model_dir, tmp_path):
    padded, padded_weights = run(tiny_model_dir, tmp_path, "padded")
    packed, packed_weights = run(tiny_model_dir, tmp_path, "packed", packing=True, prefetch=True)
    assert packed.real_tokens == padded.real_tokens
    torch.testing.assert_close(torch.tensor(packed.losses), torch.tensor(padded.losses), atol=1e-4, rtol=1e-4)
    for name, weight in padded_weights.items():
        torch.testing.assert_close(packed_weights[name], weight, atol=1e-4, rtol=1e-3)


def test_liger_and_unknown_attention_are_refused_clearly(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="liger=True needs a CUDA GPU"):
        run(tiny_model_dir, tmp_path, "liger", liger=True)
    with pytest.raises(UserError, match="attention='flash' is not accepted"):
        from_dict(RecoverConfig, {"data": "x", "attention": "flash"}).validate()
