"""A nested-rank supernet (DyLoRA-style): one recovery at the largest rank each layer may take, each optimizer
step training a random truncation per layer, so that any rank vector is then scored by truncating A and B,
with no training per proposal.

Why a truncation is exactly an adapter of that rank vector: a rank-r LoRA adds B[:, :r] A[:r] x * s(r). The
supernet keeps rank r_max per layer; a step that trains rank r masks the output of A beyond its first r
entries (so only the first r rows of A and columns of B are used and get gradients) and sets the layer's
scaling to s(r) = alpha(r) / r (alpha(r) = alpha_ratio * r, the job's rule: s is alpha_ratio at every rank),
or alpha(r) / sqrt(r) with rslora. Truncating the trained weights to a vector gives a plain peft adapter of
that vector (the same shapes and parameter count as a fresh one), which the evaluate path scores as any
other. The truncation of a step is a function of (seed, step), so a resumed run trains the same ones.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

from rankadaptor.errors import check
from rankadaptor.infra import storage
from rankadaptor.recover.nested import SUPERNET_FILE, NestedRanks, layer_of

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from rankadaptor.recover.config import RecoverConfig


def train_supernet(config: RecoverConfig, allowed: list[list[int]], model_uri: str, output_uri: str) -> dict:
    """One recovery (method lora, the config's length and seed) of the supernet nesting `allowed` ranks per
    layer (allowed_ranks: what the search may propose); the artifact is a peft adapter at the largest ranks
    with supernet.json beside it."""
    from rankadaptor.models.loading import load_config
    from rankadaptor.recover.stage import run_recover

    check(config.method == "lora", f"a supernet nests plain LoRA ranks: method={config.method!r} is not supported; "
                                   "use method lora")
    num_layers = load_config(model_uri).num_hidden_layers
    check(len(allowed) == num_layers, f"allowed ranks for {len(allowed)} layers; the model has {num_layers}")
    nested = NestedRanks(allowed, config.alpha_ratio, config.rslora, config.seed)
    missing = sorted({r for ranks in nested.allowed for r in ranks} - set(config.candidates))
    check(not missing, f"search ranks {missing} are not in the recovery's candidate set {config.candidates}")
    supernet = dataclasses.replace(config, rank_vector=nested.max_vector, allow_over_budget=True)
    return run_recover(supernet, model_uri, output_uri, nested=nested)


def truncate_state(state: dict[str, torch.Tensor], rank_vector: list[int]) -> dict[str, torch.Tensor]:
    """The first r_l rows of every A and columns of every B of layer l (other tensors unchanged)."""
    out = {}
    for name, value in state.items():
        rank = rank_vector[layer_of(name)] if ".lora_" in name else None
        out[name] = (value[:rank] if ".lora_A." in name else value[:, :rank] if ".lora_B." in name else value)
    return {name: value.clone(memory_format=torch.contiguous_format) for name, value in out.items()}


def supernet_record(supernet_uri: str) -> dict[str, Any]:
    path = storage.local_dir(supernet_uri) / SUPERNET_FILE
    check(path.is_file(), f"{supernet_uri!r} has no {SUPERNET_FILE}: expected an adapter written by train_supernet")
    return storage.read_json(path)


def supernet_state(supernet_uri: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(storage.local_dir(supernet_uri) / "adapter_model.safetensors")


def truncated_adapter(model: PreTrainedModel, supernet_uri: str, rank_vector: list[int],
                      state: dict[str, torch.Tensor] | None = None):
    """model (a base model; it is wrapped in place) with a fresh peft adapter of rank_vector holding the
    supernet's weights truncated to it: what evaluate scores. `state`: the supernet's weights, read once by
    a caller that truncates many vectors."""
    from peft import set_peft_model_state_dict

    from rankadaptor.config import from_dict
    from rankadaptor.recover.config import RecoverConfig
    from rankadaptor.recover.ranks import check_rank_vector
    from rankadaptor.recover.stage import add_adapters

    record = supernet_record(supernet_uri)
    allowed = record["nested"]["allowed"]
    check_rank_vector(rank_vector, len(allowed), sorted({r for ranks in allowed for r in ranks}))
    bad = [i for i, (r, ranks) in enumerate(zip(rank_vector, allowed)) if r not in ranks]
    check(not bad, f"rank vector {rank_vector} gives layer(s) {bad} a rank the supernet does not nest ({allowed})")
    config = from_dict(RecoverConfig, {**record["recover"], "rank_vector": rank_vector})
    peft_model = add_adapters(model, config, rank_vector, steps=1)
    loaded = set_peft_model_state_dict(peft_model, truncate_state(state or supernet_state(supernet_uri), rank_vector))
    check(not loaded.unexpected_keys, f"supernet weights {loaded.unexpected_keys[:3]} do not fit the adapter")
    return peft_model.eval()


def write_truncated(supernet_uri: str, model_uri: str, rank_vector: list[int], output_uri: str) -> None:
    """The adapter artifact of rank_vector cut from the supernet at supernet_uri (loads with load_adapted)."""
    from rankadaptor.models.loading import load_model

    model, _ = load_model(model_uri)
    peft_model = truncated_adapter(model, supernet_uri, rank_vector)
    with storage.writing_dir(output_uri) as out:
        peft_model.save_pretrained(out)
        storage.write_json_atomic(out / "rank_vector.json", {
            "method": "lora", "rank_vector": rank_vector, "supernet": supernet_uri,
            "trainable_params": sum(p.numel() for p in peft_model.parameters() if p.requires_grad)})
