"""Importance of prunable groups from calibration gradients (LLM-Pruner and Shortened LLaMA criteria).

Groups are coupled structures removed together: an attention group is one KV head with the query heads
that share it (q/k/v rows + o_proj columns; with MHA, one head) and an MLP channel is a gate/up row with
its down_proj column. Per-weight salience is reduced over each group:
  element1  sum |W * g|                          (first-order Taylor, LLM-Pruner's default)
  element2  sum |W * g - 1/2 * W * F * W|        (adds the diagonal Fisher F = mean per-sample g^2)
  vector    |sum W * g|                          (first-order Taylor of the whole group)
  l2        sqrt(sum W^2)                        (magnitude, no gradients)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from rankadaptor.widths import attn_head_dim

WIDTH_ESTIMATORS = ("element1", "element2", "vector", "l2")
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


def projections(layer: nn.Module) -> dict[str, nn.Linear]:
    return {**{n: getattr(layer.self_attn, n) for n in ATTN}, **{n: getattr(layer.mlp, n) for n in MLP}}


@dataclass
class Gradients:
    """Mean gradient (and mean squared per-sample gradient, for element2) of every projection weight."""
    grad: dict[nn.Linear, torch.Tensor]
    fisher: dict[nn.Linear, torch.Tensor] | None


def calibration_gradients(model: nn.Module, batch: torch.Tensor, with_fisher: bool = False) -> Gradients:
    """Gradients of the LM loss, one sample at a time (bounded activation memory, per-sample Fisher)."""
    linears = [lin for layer in model.model.layers for lin in projections(layer).values()]
    was_training = model.training
    model.eval()
    grad = {lin: torch.zeros_like(lin.weight, dtype=torch.float32) for lin in linears}
    fisher = {lin: torch.zeros_like(lin.weight, dtype=torch.float32) for lin in linears} if with_fisher else None
    for sample in tqdm(batch, desc="calibration gradients", unit="sample"):
        model.zero_grad(set_to_none=True)
        ids = sample[None].to(model.device)
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        for lin in linears:
            g = lin.weight.grad.float()
            grad[lin] += g / len(batch)
            if fisher is not None:
                fisher[lin] += g.square() / len(batch)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return Gradients(grad, fisher)


def weight_salience(lin: nn.Linear, estimator: str, grads: Gradients | None) -> torch.Tensor:
    """Per-weight salience; for `vector` it is signed (abs is taken after summing over the group)."""
    w = lin.weight.float()
    if estimator == "l2":
        return w.square()
    g = grads.grad[lin]
    if estimator == "element1":
        return (w * g).abs()
    if estimator == "vector":
        return w * g
    if estimator == "element2":
        return (w * g - 0.5 * w * grads.fisher[lin] * w).abs()
    raise ValueError(estimator)


def _finish(group_sums: torch.Tensor, estimator: str) -> torch.Tensor:
    if estimator == "vector":
        return group_sums.abs()
    if estimator == "l2":
        return group_sums.sqrt()
    return group_sums


@torch.no_grad()
def layer_group_scores(layer: nn.Module, config, estimator: str,
                       grads: Gradients | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(score per KV group, score per MLP channel) of one decoder layer."""
    p, head_dim = projections(layer), attn_head_dim(config)
    n_kv = p["k_proj"].out_features // head_dim
    s = {name: weight_salience(lin, estimator, grads) for name, lin in p.items()}
    attn = (s["q_proj"].sum(1).view(n_kv, -1).sum(1) + s["k_proj"].sum(1).view(n_kv, -1).sum(1)
            + s["v_proj"].sum(1).view(n_kv, -1).sum(1) + s["o_proj"].sum(0).view(n_kv, -1).sum(1))
    mlp = s["gate_proj"].sum(1) + s["up_proj"].sum(1) + s["down_proj"].sum(0)
    return _finish(attn, estimator), _finish(mlp, estimator)


@torch.no_grad()
def block_taylor_scores(model: nn.Module, grads: Gradients) -> list[float]:
    """Shortened LLaMA's Taylor+: per block, the sum over its weight matrices of |sum W * g|."""
    return [sum(float((lin.weight.float() * grads.grad[lin]).sum().abs()) for lin in projections(layer).values())
            for layer in model.model.layers]


@torch.no_grad()
def block_ppl_scores(model: nn.Module, batch: torch.Tensor) -> list[float]:
    """Shortened LLaMA's PPL criterion: the perplexity of the model with each block dropped in turn."""
    layers = model.model.layers
    ids = batch.to(model.device)
    scores = []
    try:
        for i in tqdm(range(len(layers)), desc="block PPL", unit="block"):
            model.model.layers = nn.ModuleList([layer for j, layer in enumerate(layers) if j != i])
            scores.append(float(model(input_ids=ids, labels=ids, use_cache=False).loss.exp()))
    finally:
        model.model.layers = layers
    return scores
