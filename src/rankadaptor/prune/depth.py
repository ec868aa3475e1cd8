"""Depth pruning (Shortened LLaMA): remove whole decoder blocks, keeping protected first/last blocks.

The result is a standard checkpoint with fewer layers: layers are re-indexed for the KV cache and
num_hidden_layers (and a pruned model's per-layer width lists) follow.
"""

from __future__ import annotations

from torch import nn

from rankadaptor.errors import check

PER_LAYER_LISTS = ("layer_num_attention_heads", "layer_num_key_value_heads", "layer_intermediate_size")


def choose_blocks(scores: list[float], num_blocks: int, protected: set[int]) -> list[int]:
    """The num_blocks lowest-scoring (least important) unprotected blocks, in index order."""
    candidates = [i for i in range(len(scores)) if i not in protected]
    check(num_blocks <= len(candidates),
          f"cannot remove {num_blocks} blocks: only {len(candidates)} of {len(scores)} are unprotected "
          f"(protected: {sorted(protected)})")
    order = sorted(candidates, key=lambda i: scores[i])
    return sorted(order[:num_blocks])


def remove_blocks(model: nn.Module, blocks: list[int]) -> nn.Module:
    """Delete decoder blocks in place and make the config and cache indices agree."""
    from rankadaptor.models.pruned_llama import PrunedLlamaConfig

    kept = [i for i in range(len(model.model.layers)) if i not in set(blocks)]
    model.model.layers = nn.ModuleList([model.model.layers[i] for i in kept])
    for new_index, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = new_index
    config = model.config
    config.num_hidden_layers = len(kept)
    if isinstance(config, PrunedLlamaConfig):
        for name in PER_LAYER_LISTS:
            setattr(config, name, [getattr(config, name)[i] for i in kept])
    return model
