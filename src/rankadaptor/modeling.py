"""Loading (pruned) LLaMA checkpoints safely, and the width arithmetic of a model's layers.

torch and transformers are imported inside the functions that load models, so the arithmetic
(LoRA cost per rank, parameter counts) is usable from steps that never load one. The pruned-LLaMA
classes live in `pruned_llama`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rankadaptor import storage
from rankadaptor.errors import UserError

if TYPE_CHECKING:
    import torch
    from transformers import LlamaConfig, PreTrainedModel, PreTrainedTokenizerBase

LLAMA_TYPES = ("llama", "pruned_llama")


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


def require_gpus(gpu_count: int) -> None:
    """A step placed on a GPU node fails at once, in one line, when the pod sees no GPU (a driver too old for
    the image's CUDA, say) instead of running for hours on CPU; more than one GPU would sit idle. Off a
    cluster (kfp.local) placement has no effect, so nothing is checked there."""
    import os

    import torch

    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return
    if gpu_count > 1:
        raise UserError(f"gpu_count={gpu_count}: a step uses one GPU; set gpu_count to 1 (or 0 for CPU)")
    if gpu_count == 1 and not torch.cuda.is_available():
        raise UserError("gpu_count=1 but this pod sees no usable GPU (torch.cuda.is_available() is False): check the "
                        "node's NVIDIA driver against the image's CUDA, or set gpu_count to 0 to run on CPU")


def resolve_device(name: str) -> torch.device:
    """'auto' means the GPU when there is one."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device={name!r} is not accepted; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name!r} asked for a GPU but none is available; use auto or cpu")
    return device


def resolve(model_uri: str) -> str:
    """A local directory or hub id for a model given as a local path, s3:// URI or hub id."""
    if storage.is_s3(model_uri):
        return str(storage.local_dir(model_uri, verify_manifest=False))
    path = Path(model_uri).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"model path {model_uri!r} has no config.json: expected a transformers checkpoint "
                            "directory (config.json + safetensors weights)")
        return str(path)
    if model_uri.count("/") == 1 and not model_uri.startswith((".", "/", "~")):
        from huggingface_hub import is_offline_mode, try_to_load_from_cache

        if is_offline_mode() and not isinstance(try_to_load_from_cache(model_uri, "config.json"), str):
            raise UserError(f"model {model_uri!r} not found: no such local directory, and no cached hub model of "
                            "that id while offline (HF_HUB_OFFLINE=1); check the path")
        return model_uri  # a hub id; resolved by transformers (from its cache when offline)
    raise UserError(f"model {model_uri!r} not found: expected a local checkpoint directory, an s3:// URI "
                    "or a hub id like 'org/name'")


def load_config(model_uri: str, source: str | None = None) -> LlamaConfig:
    """The checked config of a LLaMA-family model (source: model_uri already resolved)."""
    from transformers import AutoConfig

    from rankadaptor import pruned_llama  # noqa: F401  (registers the pruned LLaMA with the Auto classes)

    source = source or resolve(model_uri)
    try:
        # Explicitly False: left unset, transformers asks on stdin whether to run a checkpoint's own code.
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    except Exception as e:  # transformers raises many kinds; the user needs to know which model failed
        raise UserError(f"cannot read the config of model {model_uri!r}: {e}") from None
    if config.model_type not in LLAMA_TYPES:
        raise UserError(f"model {model_uri!r} has architecture {config.model_type!r}; accepted: LLaMA-family "
                        f"checkpoints with model_type in {list(LLAMA_TYPES)}")
    return config


def load_model(model_uri: str, adapter_uri: str | None = None, dtype: torch.dtype | None = None,
               device: str | torch.device = "cpu") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a (pruned) LLaMA checkpoint and its tokenizer from a path, s3:// URI or hub id,
    optionally with a LoRA adapter artifact on top (a peft model, unmerged); dtype default float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve(model_uri)
    if not storage.is_s3(model_uri) and (Path(source) / storage.MANIFEST).is_file():
        # A local artifact written by rankadaptor (e.g. a pruned model): refuse it if changed or corrupt,
        # as local_dir does for one fetched from S3.
        storage.verify(Path(source), model_uri)
    config = load_config(model_uri, source)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, config=config, dtype=dtype or torch.float32,
                                                     use_safetensors=True, trust_remote_code=False)
    except Exception as e:
        raise UserError(f"cannot load the weights of model {model_uri!r} (safetensors expected): {e}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except Exception as e:
        raise UserError(f"cannot load the tokenizer of model {model_uri!r}: {e}") from None
    if len(tokenizer) > config.vocab_size:
        raise UserError(f"tokenizer of {model_uri!r} has {len(tokenizer)} tokens but the model's vocab_size is "
                        f"{config.vocab_size}: tokenizer and model do not match")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if adapter_uri is not None:
        from peft import PeftModel

        from rankadaptor.recover import masked

        adapter_dir = storage.local_dir(adapter_uri)
        if not (adapter_dir / "adapter_config.json").is_file():  # else peft looks for it on the hub
            raise UserError(f"adapter {adapter_uri!r} has no adapter_config.json: expected a LoRA adapter "
                            "directory written by `rankadaptor recover`")
        try:
            model = (masked.load_masked_adapter(model, adapter_dir) if masked.is_masked(adapter_dir)
                     else PeftModel.from_pretrained(model, str(adapter_dir)))
        except Exception as e:  # e.g. an adapter trained on another model: shapes differ
            raise UserError(f"cannot load the adapter {adapter_uri!r} on model {model_uri!r}: "
                            f"{type(e).__name__}: {str(e)[:500]}") from None
    return model.to(device).eval(), tokenizer


def export_merged(model_uri: str, adapter_uri: str, output_uri: str) -> None:
    """Write base + adapter merged into one standalone checkpoint (with its tokenizer).

    A width-pruned result loads after `import rankadaptor.pruned_llama`; a depth-only pruned one is a plain LLaMA
    checkpoint that any transformers-compatible server loads. A masked (LoSA) adapter merges masked, so
    an unstructured-sparse model keeps exactly its zeros."""
    model, tokenizer = load_model(model_uri, adapter_uri)
    merged = model.merge_and_unload()
    with storage.writing_dir(output_uri) as out:
        merged.save_pretrained(out)
        tokenizer.save_pretrained(out)


def lora_cost_per_rank(widths: list[dict[str, int]], hidden_size: int, head_dim: int) -> list[int]:
    """Per layer, LoRA parameters per unit of rank on q,k,v,o,gate,up,down: the sum of in + out features
    (a rank-r LoRA on an in -> out projection trains r * (in + out) parameters)."""
    return [7 * hidden_size + 2 * w["heads"] * head_dim + 2 * w["kv_heads"] * head_dim + 3 * w["intermediate"]
            for w in widths]


def lora_parameters(rank_vector: list[int], cost_per_rank: list[int]) -> int:
    """Trainable LoRA parameters of a rank vector (one rank per layer)."""
    return int(sum(int(r) * int(c) for r, c in zip(rank_vector, cost_per_rank)))


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
