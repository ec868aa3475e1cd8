"""Rank vectors: one LoRA rank per decoder layer, turned into peft patterns and counted exactly.

A rank vector r gives every LoRA-targeted projection of layer i the rank r[i]. peft expresses that with
`rank_pattern` / `alpha_pattern` (regex keys matched against full module names, first match wins), and
alpha = alpha_ratio * r[i] keeps LoRA's scale alpha/r the same in every layer (LLM-Pruner: r=8, alpha=16).
Parameter accounting (widths.lora_cost_per_rank / lora_parameters): a rank-r LoRA on an in -> out
projection trains r * (in + out) parameters.
"""

from __future__ import annotations

from rankadaptor.errors import check

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


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


def error_proportional_ranks(errors: list[float], cost_per_rank: list[int], base_rank: int,
                             candidates: list[int]) -> list[int]:
    """LoSA's rank allocation: ranks in proportion to each layer's reconstruction error, spending at most
    the LoRA parameters of uniform `base_rank` (sum of rank x cost per rank), snapped to `candidates`.

    The continuous allocation r_l = k * e_l with k chosen to spend the budget exactly is rounded down to a
    candidate, then the layers furthest below their share are raised one candidate at a time while the
    budget allows (or lowered, furthest above first, if the smallest candidate overspends)."""
    check(len(errors) == len(cost_per_rank),
          f"{len(errors)} reconstruction errors for {len(cost_per_rank)} decoder layers: prune report and model differ")
    check(all(e >= 0 for e in errors), f"reconstruction errors must be >= 0, got {errors}")
    budget = base_rank * sum(cost_per_rank)
    steps = sorted(set(candidates))
    weights = errors if sum(errors) > 0 else [1.0] * len(errors)  # no error anywhere: nothing to favour
    scale = budget / sum(w * c for w, c in zip(weights, cost_per_rank))
    share = [w * scale for w in weights]
    ranks = [max([r for r in steps if r <= s], default=steps[0]) for s in share]

    def spent() -> int:
        return sum(r * c for r, c in zip(ranks, cost_per_rank))

    while spent() > budget:  # only when the smallest candidate exceeds some layers' shares
        above = [i for i, r in enumerate(ranks) if r > steps[0]]
        check(bool(above), f"the smallest candidate rank {steps[0]} exceeds the budget of uniform rank {base_rank}")
        i = max(above, key=lambda i: ranks[i] - share[i])
        ranks[i] = steps[steps.index(ranks[i]) - 1]
    while True:
        raisable = [i for i, r in enumerate(ranks) if r < steps[-1]
                    and spent() + (steps[steps.index(r) + 1] - r) * cost_per_rank[i] <= budget]
        if not raisable:
            return ranks
        i = max(raisable, key=lambda i: (share[i] - ranks[i]) / max(share[i], 1e-12))
        ranks[i] = steps[steps.index(ranks[i]) + 1]
