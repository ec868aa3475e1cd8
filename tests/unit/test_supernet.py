"""The nested-rank supernet: a truncation is exactly the adapter of its rank vector (keys, shapes, the budget's
parameter count, scaling and output), the largest vector is the supernet itself, and training draws ranks."""

import json

import pytest
import torch
from peft import get_peft_model_state_dict
from peft.tuners.lora import LoraLayer

from rankadaptor.config import from_dict
from rankadaptor.errors import UserError
from rankadaptor.models.loading import load_model
from rankadaptor.recover.adapters import load_adapted
from rankadaptor.recover.config import RecoverConfig
from rankadaptor.recover.stage import add_adapters
from rankadaptor.recover.nested import NestedRanks, allowed_ranks, lora_scaling
from rankadaptor.recover.supernet import (
    supernet_record,
    train_supernet,
    truncated_adapter,
    write_truncated,
)
from rankadaptor.search.config import SearchConfig
from rankadaptor.widths import attn_head_dim, config_widths, lora_cost_per_rank, lora_parameters

FAST = dict(cutoff=64, batch_size=8, micro_batch_tokens=256, epochs=1, max_steps=4, lr=2e-3, save_steps=100)
VECTORS = [[2, 4, 6, 8], [12, 2, 10, 4], [8, 8, 8, 8], [12, 12, 12, 12]]


def recover_config(data, **overrides):
    return from_dict(RecoverConfig, {"data": str(data), **FAST, **overrides})


@pytest.fixture(scope="module")
def supernet(tiny_model_dir, text_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("supernet") / "adapter"
    allowed = allowed_ranks(4, SearchConfig().candidates, None, SearchConfig().fixed_rank)
    result = train_supernet(recover_config(text_file), allowed, str(tiny_model_dir), str(out))
    return out, result


def shapes(state):
    return {name: tuple(value.shape) for name, value in state.items()}


@pytest.mark.parametrize("vector", VECTORS)
def test_truncation_is_the_adapter_of_that_rank_vector(supernet, tiny_model_dir, text_file, vector):
    out, _ = supernet
    cut = truncated_adapter(load_model(str(tiny_model_dir))[0], str(out), vector)
    fresh = add_adapters(load_model(str(tiny_model_dir))[0], recover_config(text_file, rank_vector=vector), vector, 1)
    assert shapes(get_peft_model_state_dict(cut)) == shapes(get_peft_model_state_dict(fresh))
    config = cut.get_base_model().config
    costs = lora_cost_per_rank(config_widths(config), config.hidden_size, attn_head_dim(config))
    trainable = sum(p.numel() for p in cut.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for p in fresh.parameters() if p.requires_grad) == lora_parameters(vector, costs)
    alpha_ratio = recover_config(text_file).alpha_ratio
    for module in (m for m in cut.modules() if isinstance(m, LoraLayer)):
        assert module.scaling["default"] == lora_scaling(module.r["default"], alpha_ratio, False) == alpha_ratio


@pytest.mark.parametrize("vector", VECTORS[:2])
def test_truncated_adapter_computes_what_the_supernet_trained_at_that_vector(supernet, tiny_model_dir, vector):
    """The supernet's forward with the truncation hooks set to a vector (as a training step runs it) equals the
    truncated adapter's: the same function, so its score is the score of what was trained."""
    out, _ = supernet
    ids = torch.tensor([[1, 5, 9, 23, 42, 7, 3]])
    model, _ = load_adapted(str(tiny_model_dir), str(out))
    nested = NestedRanks(**supernet_record(str(out))["nested"])
    truncation = nested.attach(model)
    truncation.set(vector)
    with torch.no_grad():
        hooked = model(input_ids=ids).logits
    cut = truncated_adapter(load_model(str(tiny_model_dir))[0], str(out), vector)
    with torch.no_grad():
        plain = cut(input_ids=ids).logits
    torch.testing.assert_close(hooked, plain, rtol=1e-5, atol=1e-5)
    truncation.close()
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, hooked)  # the other ranks were trained too


def test_truncating_to_the_max_vector_is_the_identity(supernet, tiny_model_dir, tmp_path):
    out, _ = supernet
    write_truncated(str(out), str(tiny_model_dir), [12, 12, 12, 12], str(tmp_path / "cut"))
    whole, _ = load_adapted(str(tiny_model_dir), str(out))
    cut, _ = load_adapted(str(tiny_model_dir), str(tmp_path / "cut"))
    a, b = get_peft_model_state_dict(whole), get_peft_model_state_dict(cut)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "cut" / "rank_vector.json").read_text())["rank_vector"] == [12, 12, 12, 12]


def test_training_draws_a_truncation_per_step_and_records_the_supernet(supernet):
    out, result = supernet
    record = supernet_record(str(out))
    assert record["nested"]["allowed"] == [sorted(SearchConfig().candidates)] * 4
    assert result["rank_vector"] == [12, 12, 12, 12] and result["steps"] == 4
    nested = NestedRanks(**record["nested"])
    draws = [nested.sample(step) for step in range(20)]
    assert len({tuple(d) for d in draws}) > 10 and draws == [nested.sample(step) for step in range(20)]
    assert all(r in SearchConfig().candidates for d in draws for r in d)


def test_allowed_ranks_follow_the_search_bounds():
    search = SearchConfig(candidates=[4, 2, 8], searched_layers=[1, 2], fixed_rank=6)
    allowed = allowed_ranks(4, search.candidates, search.searched_layers, search.fixed_rank)
    assert allowed == [[6], [2, 4, 8], [2, 4, 8], [6]]
    nested = NestedRanks(allowed, 2.0, True, 0)
    assert nested.max_vector == [6, 8, 8, 6]
    assert all(v[0] == 6 and v[3] == 6 for v in map(nested.sample, range(10)))
    assert lora_scaling(4, 2.0, True) == pytest.approx(4.0)  # rslora: alpha / sqrt(r) = 2 * 4 / 2


def test_a_rank_the_supernet_does_not_nest_is_refused(supernet, tiny_model_dir):
    out, _ = supernet
    with pytest.raises(UserError, match="not in the candidate set"):
        truncated_adapter(load_model(str(tiny_model_dir))[0], str(out), [16, 8, 8, 8])
