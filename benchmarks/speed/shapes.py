"""Random-init LLaMA shapes for the throughput benchmarks (throughput does not depend on the weights), so
they run on a GPU host with no model download: the 1.1B LLaMA shape and a tiny one for CPU smoke runs.

    python -m benchmarks.speed.shapes [--shape 1.1b] [--ratio 0.33]   # the shape and its parameter counts
"""

from __future__ import annotations

import argparse
import json

import torch

SHAPES = {"1.1b": dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                       intermediate_size=5632, vocab_size=32000),
          "tiny": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=176, vocab_size=512)}


def pruned_model(shape: dict, ratio: float, max_positions: int, device: torch.device, dtype: torch.dtype):
    """A random-init LLaMA whose layers [4, L-2) keep (1 - ratio) of their KV groups and MLP channels, as
    LLM-Pruner leaves them (ratio 0.33 on the 1.1B shape removes 20% of the parameters); returns the model
    and the range of pruned layers."""
    from rankadaptor.models.pruned_llama import PrunedLlamaConfig, PrunedLlamaForCausalLM
    from rankadaptor.prune.width import kept_count

    n = shape["num_hidden_layers"]
    pruned = range(min(4, n // 4), n - min(2, n // 4))
    kv, width = shape["num_key_value_heads"], shape["intermediate_size"]
    kv_heads = [kept_count(kv, ratio) if i in pruned else kv for i in range(n)]
    config = PrunedLlamaConfig(**shape, max_position_embeddings=max_positions, bos_token_id=1, eos_token_id=2,
                               pad_token_id=0, layer_num_key_value_heads=kv_heads,
                               layer_num_attention_heads=[k * shape["num_attention_heads"] // kv for k in kv_heads],
                               layer_intermediate_size=[kept_count(width, ratio) if i in pruned else width
                                                        for i in range(n)])
    torch.manual_seed(0)
    with torch.device(device):
        model = PrunedLlamaForCausalLM(config)
    return model.to(dtype), pruned


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--ratio", type=float, default=0.33, help="pruning ratio of the middle layers")
    args = parser.parse_args(argv)
    model, pruned = pruned_model(SHAPES[args.shape], args.ratio, 256, torch.device("meta"), torch.float32)
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    print(json.dumps({"shape": args.shape, "config": SHAPES[args.shape], "pruned_layers": [pruned.start, pruned.stop],
                      "parameters": total, "parameters_without_input_embedding": total - embedding}, indent=1))


if __name__ == "__main__":
    main()
