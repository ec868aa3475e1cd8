"""The ranks a nested-rank supernet nests per layer, and the forward hooks that make its rank-r_max adapter
compute a smaller rank vector's (supernet.py trains and truncates it; the recover stage attaches the hooks).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rankadaptor.errors import check

SUPERNET_FILE = "supernet.json"  # in a supernet adapter: the ranks it nests and the recovery that trained it
ADAPTER = "default"
_LAYER = re.compile(r"\.layers\.(\d+)\.")


def allowed_ranks(num_layers: int, candidates: list[int], searched_layers: list[int] | None,
                  fixed_rank: int) -> list[list[int]]:
    """Per decoder layer, the ranks the search may give it (SearchConfig's bounds): the candidates on a
    searched layer (all by default), fixed_rank on the others."""
    searched = set(range(num_layers) if searched_layers is None else searched_layers)
    check(max(searched) < num_layers,
          f"searched_layers={searched_layers!r} names a layer >= {num_layers}, the model's layer count")
    return [sorted(candidates) if i in searched else [fixed_rank] for i in range(num_layers)]


def lora_scaling(rank: int, alpha_ratio: float, rslora: bool) -> float:
    """peft's scaling of a rank-`rank` LoRA whose alpha is alpha_ratio * rank (ranks.rank_patterns)."""
    return alpha_ratio * rank / (math.sqrt(rank) if rslora else rank)


def layer_of(name: str) -> int:
    match = _LAYER.search(name)
    check(match is not None, f"LoRA weight {name!r} is not in a decoder layer (model.layers.N)")
    return int(match.group(1))


@dataclass(frozen=True)
class NestedRanks:
    """The ranks a supernet nests per layer, and how its steps draw a truncation."""
    allowed: list[list[int]]
    alpha_ratio: float
    rslora: bool
    seed: int

    @property
    def max_vector(self) -> list[int]:
        return [max(ranks) for ranks in self.allowed]

    def sample(self, step: int) -> list[int]:
        """The truncation step `step` trains: one allowed rank per layer, uniformly, from (seed, step)."""
        rng = np.random.default_rng([self.seed, step])
        return [int(ranks[rng.integers(len(ranks))]) for ranks in self.allowed]

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def attach(self, model) -> Truncation:
        return Truncation(model, self)


class Truncation:
    """Forward hooks that make a rank-r_max peft model compute the adapter of a smaller rank vector; call it
    with a step to train that step's draw, `set` a vector to evaluate one, `close` to remove the hooks."""

    def __init__(self, model, nested: NestedRanks) -> None:
        from peft.tuners.lora import LoraLayer

        self.nested = nested
        self.layers = [(layer_of(name), module) for name, module in model.named_modules()
                       if isinstance(module, LoraLayer) and ADAPTER in module.lora_A]
        check(bool(self.layers), "the model has no LoRA layers to truncate")
        self.masks: dict[int, torch.Tensor] = {}
        self.hooks = []
        for layer, module in self.layers:
            a = module.lora_A[ADAPTER]
            check(a.out_features == nested.max_vector[layer],
                  f"layer {layer} has LoRA rank {a.out_features}, the supernet nests up to {nested.max_vector[layer]}")
            mask = self.masks.setdefault(layer, torch.ones(a.out_features, device=a.weight.device,
                                                           dtype=a.weight.dtype))
            self.hooks.append(a.register_forward_hook(lambda _m, _i, out, mask=mask: out * mask))

    def set(self, rank_vector: list[int]) -> None:
        for layer, mask in self.masks.items():
            mask.zero_()[:rank_vector[layer]] = 1
        for layer, module in self.layers:
            module.scaling[ADAPTER] = lora_scaling(rank_vector[layer], self.nested.alpha_ratio, self.nested.rslora)

    def __call__(self, step: int) -> None:
        self.set(self.nested.sample(step))

    def close(self) -> None:
        """Back to the full supernet (rank r_max everywhere, its own scaling) with no hooks."""
        self.set(self.nested.max_vector)
        for hook in self.hooks:
            hook.remove()
