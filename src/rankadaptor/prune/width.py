"""Width pruning (LLM-Pruner block-wise): drop the least important attention groups and MLP channels of
each pruned layer by one per-layer ratio; the hidden size is untouched.

The pruned weights are sliced out of the original and loaded into a `PrunedLlamaForCausalLM` built at
the new widths, so the result is an ordinary checkpoint whose logits equal the original's with the
removed heads and channels zeroed.
"""

from __future__ import annotations

import torch
from torch import nn

from rankadaptor.widths import attn_head_dim, layer_widths


def kept_count(total: int, ratio: float) -> int:
    """Groups kept out of total when removing `ratio` of them (at least one stays)."""
    return max(1, total - int(round(total * ratio)))


def keep_top(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """Indices of the highest-scoring groups, in their original order."""
    k = kept_count(len(scores), ratio)
    return torch.topk(scores, k, sorted=False).indices.sort().values


def pruned_widths(model: nn.Module, layers: range, ratio: float) -> list[dict[str, int]]:
    """The per-layer widths that pruning `layers` by `ratio` gives (arithmetic only)."""
    widths = layer_widths(model)
    for i in layers:
        w = widths[i]
        kv = kept_count(w["kv_heads"], ratio)
        widths[i] = {"heads": kv * (w["heads"] // w["kv_heads"]), "kv_heads": kv,
                     "intermediate": kept_count(w["intermediate"], ratio)}
    return widths


def _rows(weight: torch.Tensor, groups: torch.Tensor, group_size: int) -> torch.Tensor:
    index = (groups[:, None] * group_size + torch.arange(group_size)).flatten().to(weight.device)
    return weight.index_select(0, index)


def _cols(weight: torch.Tensor, groups: torch.Tensor, group_size: int) -> torch.Tensor:
    return _rows(weight.T, groups, group_size).T


def slice_layer(layer: nn.Module, config, kept_groups: torch.Tensor, kept_channels: torch.Tensor,
                prefix: str) -> dict[str, torch.Tensor]:
    """State-dict entries of one decoder layer restricted to the kept KV groups and MLP channels."""
    attn, mlp, head_dim = layer.self_attn, layer.mlp, attn_head_dim(config)
    q_group = attn.q_proj.out_features // (attn.k_proj.out_features // head_dim)  # query rows per KV group
    out = {f"{prefix}.self_attn.q_proj.weight": _rows(attn.q_proj.weight, kept_groups, q_group),
           f"{prefix}.self_attn.k_proj.weight": _rows(attn.k_proj.weight, kept_groups, head_dim),
           f"{prefix}.self_attn.v_proj.weight": _rows(attn.v_proj.weight, kept_groups, head_dim),
           f"{prefix}.self_attn.o_proj.weight": _cols(attn.o_proj.weight, kept_groups, q_group),
           f"{prefix}.mlp.gate_proj.weight": _rows(mlp.gate_proj.weight, kept_channels, 1),
           f"{prefix}.mlp.up_proj.weight": _rows(mlp.up_proj.weight, kept_channels, 1),
           f"{prefix}.mlp.down_proj.weight": _cols(mlp.down_proj.weight, kept_channels, 1)}
    for name in ("q_proj", "k_proj", "v_proj"):
        bias = getattr(attn, name).bias
        if bias is not None:
            size = q_group if name == "q_proj" else head_dim
            out[f"{prefix}.self_attn.{name}.bias"] = _rows(bias[:, None], kept_groups, size)[:, 0]
    for name in ("gate_proj", "up_proj"):
        bias = getattr(mlp, name).bias
        if bias is not None:
            out[f"{prefix}.mlp.{name}.bias"] = bias.index_select(0, kept_channels.to(bias.device))
    return out


def apply_width_pruning(model: nn.Module, keep: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> nn.Module:
    """A new PrunedLlamaForCausalLM holding `model` restricted to `keep[layer] = (kv groups, channels)`."""
    from rankadaptor.models.pruned_llama import PrunedLlamaConfig, PrunedLlamaForCausalLM

    state = dict(model.state_dict())
    for i, (groups, channels) in keep.items():
        state.update(slice_layer(model.model.layers[i], model.config, groups, channels, f"model.layers.{i}"))
    widths = layer_widths(model)
    for i, (groups, channels) in keep.items():
        n_rep = widths[i]["heads"] // widths[i]["kv_heads"]
        widths[i] = {"heads": len(groups) * n_rep, "kv_heads": len(groups), "intermediate": len(channels)}
    base = {k: v for k, v in model.config.to_dict().items()
            if k not in ("model_type", "architectures", "transformers_version")}
    config = PrunedLlamaConfig(**{**base,
                                  "layer_num_attention_heads": [w["heads"] for w in widths],
                                  "layer_num_key_value_heads": [w["kv_heads"] for w in widths],
                                  "layer_intermediate_size": [w["intermediate"] for w in widths]})
    with torch.device("meta"):
        pruned = PrunedLlamaForCausalLM(config)
    pruned.load_state_dict(state, strict=True, assign=True)
    pruned.tie_weights()
    buffers = dict(model.named_buffers())
    for name, buffer in pruned.named_buffers():  # rotary inverse frequencies: non-persistent, copy them
        module_name, _, attr = name.rpartition(".")
        pruned.get_submodule(module_name).register_buffer(attr, buffers[name].clone(), persistent=False)
    return pruned.to(model.dtype).eval()
