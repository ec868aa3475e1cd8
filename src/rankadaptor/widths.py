"""Width arithmetic of a (pruned) LLaMA's layers: head size, per-layer widths, LoRA cost per rank,
parameter counts, and the surrogate's per-layer structure features. Pure arithmetic: importable by every
step, light or heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rankadaptor.errors import check

if TYPE_CHECKING:
    from transformers import LlamaConfig, PreTrainedModel

BASELINE_RANK = 8  # standard LoRA recovery rank (LLM-Pruner: r 8, alpha 16): the baseline and the default budget
RANK_CANDIDATES = [2, 4, 6, 8, 10, 12]  # the paper's rank choices per layer


def attn_head_dim(config: LlamaConfig) -> int:
    return config.head_dim or config.hidden_size // config.num_attention_heads


def config_widths(config: LlamaConfig) -> list[dict[str, int]]:
    """Per decoder layer: attention heads, KV heads and MLP channels, read off a (pruned) config."""
    n = config.num_hidden_layers
    heads = getattr(config, "layer_num_attention_heads", None) or [config.num_attention_heads] * n
    kv_heads = getattr(config, "layer_num_key_value_heads", None) or [config.num_key_value_heads] * n
    widths = getattr(config, "layer_intermediate_size", None) or [config.intermediate_size] * n
    return [{"heads": h, "kv_heads": k, "intermediate": i} for h, k, i in zip(heads, kv_heads, widths)]


def layer_widths(model: PreTrainedModel) -> list[dict[str, int]]:
    """Per decoder layer: attention heads, KV heads and MLP channels, read off the weights."""
    head_dim = attn_head_dim(model.config)
    return [{"heads": layer.self_attn.q_proj.out_features // head_dim,
             "kv_heads": layer.self_attn.k_proj.out_features // head_dim,
             "intermediate": layer.mlp.gate_proj.out_features} for layer in model.model.layers]


def lora_cost_per_rank(widths: list[dict[str, int]], hidden_size: int, head_dim: int) -> list[int]:
    """Per layer, LoRA parameters per unit of rank on q,k,v,o,gate,up,down: the sum of in + out features
    (a rank-r LoRA on an in -> out projection trains r * (in + out) parameters)."""
    return [7 * hidden_size + 2 * w["heads"] * head_dim + 2 * w["kv_heads"] * head_dim + 3 * w["intermediate"]
            for w in widths]


def lora_parameters(rank_vector: list[int], cost_per_rank: list[int]) -> int:
    """Trainable LoRA parameters of a rank vector (one rank per layer)."""
    return int(sum(int(r) * int(c) for r, c in zip(rank_vector, cost_per_rank)))


def budget(cost_per_rank: list[int], parameters: int | None = None, rank: int = BASELINE_RANK) -> int:
    """The LoRA-parameter budget every rank vector is held to: `parameters` when given, else uniform `rank`
    on every layer. The one place the budget is resolved (job, search, recovery and report use it)."""
    return parameters if parameters is not None else lora_parameters([rank] * len(cost_per_rank), cost_per_rank)


def count_parameters(config: LlamaConfig, widths: list[dict[str, int]]) -> int:
    """Parameters of a LLaMA with the given per-layer widths, by arithmetic (no model needed)."""
    hidden, head_dim, vocab = config.hidden_size, attn_head_dim(config), config.vocab_size
    attn_bias, mlp_bias = int(config.attention_bias), int(config.mlp_bias)
    total = vocab * hidden * (1 if config.tie_word_embeddings else 2) + hidden  # embeddings, head, final norm
    for w in widths:
        q, kv = w["heads"] * head_dim, w["kv_heads"] * head_dim
        total += (hidden + attn_bias) * (q + 2 * kv) + q * hidden + attn_bias * hidden
        total += (hidden + mlp_bias) * 2 * w["intermediate"] + w["intermediate"] * hidden + mlp_bias * hidden
        total += 2 * hidden  # the two RMSNorms
    return total


def model_bytes(config: LlamaConfig) -> int:
    """The size of a LLaMA checkpoint in its config's dtype, by arithmetic on its widths (no weights read)."""
    dtype = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
    return count_parameters(config, config_widths(config)) * (2 if dtype.endswith("float16") else 4)


def structure_features(widths: list[dict[str, int]], full_heads: int, full_intermediate: int,
                       cost_per_rank: list[int], importance: list[float] | None = None) -> list[list[float]]:
    """The suggested per-layer features, all O(1): fraction of attention heads kept, fraction of MLP
    channels kept, the layer's share of LoRA parameters per unit rank and (optional, else 1) its share of
    pruning importance, both shares times the layer count so that 1 means 'an average layer'.

    widths is `modeling.layer_widths(model)`; full_* are the unpruned model's widths."""
    num_layers = len(widths)
    check(len(cost_per_rank) == num_layers, f"cost_per_rank has {len(cost_per_rank)} entries for {num_layers} layers")
    total_cost = float(sum(cost_per_rank))
    if importance is None:
        importance_share = [1.0] * num_layers
    else:
        check(len(importance) == num_layers and sum(importance) > 0,
              f"importance must be {num_layers} non-negative values with a positive sum")
        importance_share = [num_layers * v / sum(importance) for v in importance]
    return [[w["heads"] / full_heads, w["intermediate"] / full_intermediate, num_layers * c / total_cost, s]
            for w, c, s in zip(widths, cost_per_rank, importance_share)]
