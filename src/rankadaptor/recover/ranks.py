"""Rank vectors: one LoRA rank per decoder layer, turned into peft patterns and counted exactly.

A rank vector r gives every LoRA-targeted projection of layer i the rank r[i]. peft expresses that with
`rank_pattern` / `alpha_pattern` (regex keys matched against full module names, first match wins), and
alpha = alpha_ratio * r[i] keeps LoRA's scale alpha/r the same in every layer (LLM-Pruner: r=8, alpha=16).
Parameter accounting (modeling.lora_cost_per_rank / lora_parameters): a rank-r LoRA on an in -> out
projection trains r * (in + out) parameters.
"""

from __future__ import annotations

from rankadaptor.errors import check

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CANDIDATES = [2, 4, 6, 8, 10, 12]


def layer_key(layer: int) -> str:
    """peft pattern key matching all seven target projections of one decoder layer."""
    return rf"model\.layers\.{layer}\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


def rank_patterns(rank_vector: list[int], alpha_ratio: float) -> tuple[dict[str, int], dict[str, float]]:
    ranks = {layer_key(i): r for i, r in enumerate(rank_vector)}
    return ranks, {key: alpha_ratio * r for key, r in ranks.items()}


def increasing_schedule(num_layers: int, ranks: tuple[int, ...] = (4, 6, 10, 12)) -> list[int]:
    """The paper's Section 2 example: the layers in four equal quarters get ranks 4, 6, 10, 12."""
    return [ranks[min(len(ranks) - 1, i * len(ranks) // num_layers)] for i in range(num_layers)]


def check_rank_vector(rank_vector: list[int], num_layers: int, candidates: list[int]) -> None:
    check(len(rank_vector) == num_layers,
          f"rank vector has {len(rank_vector)} entries but the model has {num_layers} decoder layers: "
          f"give one rank per layer")
    bad = sorted({r for r in rank_vector if r not in candidates})
    check(not bad, f"rank(s) {bad} in the rank vector are not in the candidate set {candidates}")
