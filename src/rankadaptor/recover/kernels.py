"""liger-kernel's Triton kernels for RMSNorm, SwiGLU and RoPE on a (peft-wrapped) LLaMA, for the length of
a training run: fewer, fused kernels and less activation memory. GPU only.

The swap is per module instance and undone on exit (liger's own `apply_liger_kernel_to_llama` patches
the transformers classes for the whole process). The LoRA-wrapped projections stay as they are: liger's
SwiGLU forward calls gate_proj, up_proj and down_proj as modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def liger_kernels(model) -> Iterator[None]:
    from liger_kernel.transformers import LigerSwiGLUMLP, liger_rotary_pos_emb
    from liger_kernel.transformers.monkey_patch import _patch_rms_norm_module, _patch_swiglu_module
    from transformers.models.llama import modeling_llama

    decoder = model.get_base_model().model
    norms = [decoder.norm] + [n for layer in decoder.layers for n in (layer.input_layernorm,
                                                                        layer.post_attention_layernorm)]
    mlps = [layer.mlp for layer in decoder.layers]
    rope = modeling_llama.apply_rotary_pos_emb
    try:
        for norm in norms:
            _patch_rms_norm_module(norm, eps=norm.variance_epsilon)
        for mlp in mlps:
            _patch_swiglu_module(mlp, LigerSwiGLUMLP)
        modeling_llama.apply_rotary_pos_emb = liger_rotary_pos_emb
        yield
    finally:
        modeling_llama.apply_rotary_pos_emb = rope
        for module in norms + mlps:
            for name in ("forward", "extra_repr", "_get_name"):
                module.__dict__.pop(name, None)
