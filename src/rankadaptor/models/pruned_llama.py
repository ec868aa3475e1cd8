"""The pruned LLaMA classes: each decoder layer at its own width, registered with transformers' Auto classes.

Importing this module registers `pruned_llama` with AutoConfig/AutoModelForCausalLM (models.loading.load_config
and load_model import it); it is the one library module that needs transformers at import time.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from rankadaptor.widths import attn_head_dim


@strict
class PrunedLlamaConfig(LlamaConfig):
    model_type = "pruned_llama"

    layer_num_attention_heads: list[int] | None = None
    layer_num_key_value_heads: list[int] | None = None
    layer_intermediate_size: list[int] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        n = self.num_hidden_layers
        self.layer_num_attention_heads = list(self.layer_num_attention_heads or [self.num_attention_heads] * n)
        self.layer_num_key_value_heads = list(self.layer_num_key_value_heads or [self.num_key_value_heads] * n)
        self.layer_intermediate_size = list(self.layer_intermediate_size or [self.intermediate_size] * n)
        for name in ("layer_num_attention_heads", "layer_num_key_value_heads", "layer_intermediate_size"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} layers")


class PrunedLlamaForCausalLM(LlamaForCausalLM):
    config_class = PrunedLlamaConfig

    def __init__(self, config: PrunedLlamaConfig):
        super().__init__(config)
        for layer, heads, kv_heads, width in zip(self.model.layers, config.layer_num_attention_heads,
                                                 config.layer_num_key_value_heads, config.layer_intermediate_size):
            resize_layer(layer, config, heads, kv_heads, width)
        self.post_init()


def resize_layer(layer: nn.Module, config: LlamaConfig, heads: int, kv_heads: int, width: int) -> None:
    """Rebuild one decoder layer's projections at the given widths (new, uninitialised weights)."""
    attn, mlp, hidden, head_dim = layer.self_attn, layer.mlp, config.hidden_size, attn_head_dim(config)
    device, dtype = attn.q_proj.weight.device, attn.q_proj.weight.dtype

    def linear(n_in: int, n_out: int, bias: bool) -> nn.Linear:
        return nn.Linear(n_in, n_out, bias=bias, device=device, dtype=dtype)

    attn.q_proj = linear(hidden, heads * head_dim, config.attention_bias)
    attn.k_proj = linear(hidden, kv_heads * head_dim, config.attention_bias)
    attn.v_proj = linear(hidden, kv_heads * head_dim, config.attention_bias)
    attn.o_proj = linear(heads * head_dim, hidden, config.attention_bias)
    attn.num_key_value_groups = heads // kv_heads
    mlp.intermediate_size = width
    mlp.gate_proj = linear(hidden, width, config.mlp_bias)
    mlp.up_proj = linear(hidden, width, config.mlp_bias)
    mlp.down_proj = linear(width, hidden, config.mlp_bias)


AutoConfig.register("pruned_llama", PrunedLlamaConfig)
AutoModelForCausalLM.register(PrunedLlamaConfig, PrunedLlamaForCausalLM)
