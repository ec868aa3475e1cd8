"""Unstructured (and N:M) sparsity with Wanda, layer-wise rates from RMI, and per-layer reconstruction error.

Wanda (Sun et al. 2024) scores weight W[i, j] by |W[i, j]| * ||X_j||_2, the L2 norm of input feature j
over all calibration tokens, and compares weights within each output row: every row of every projection
loses the same fraction of its weights (or N of every M consecutive weights for N:M). Layers are pruned
one after another and each layer's inputs come from the already pruned layers before it, as in Wanda's
code. Pruned weights are set to zero in place, so the result is an ordinary dense checkpoint and the mask
is `weight != 0` (see `masks`).

LoSA's layer-wise rates and reconstruction error are described in docs/architecture.md ("Unstructured
sparsity (LoSA)").
"""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm import tqdm

from rankadaptor.errors import UserError
from rankadaptor.prune.importance import projections


class _Stop(Exception):
    pass


@torch.no_grad()
def layer_inputs(model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, tuple, dict]:
    """The hidden states entering decoder layer 0 and the other arguments every layer is called with
    (position embeddings, attention mask), caught by stopping the forward pass at layer 0."""
    caught = {}

    def catch(module, args, kwargs):
        caught["args"], caught["kwargs"] = args, kwargs
        raise _Stop

    handle = model.model.layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        model(input_ids=batch.to(model.device), use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    args, kwargs = caught["args"], dict(caught["kwargs"])
    hidden = args[0] if args else kwargs.pop("hidden_states")
    kwargs.pop("past_key_values", None)
    kwargs.pop("past_key_value", None)
    return hidden, tuple(args[1:]), kwargs


def _run_layer(layer: nn.Module, hidden: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    out = layer(hidden, *args, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def wanda_scores(weight: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """|W| x the L2 norm of each input feature over the calibration tokens (broadcast over rows)."""
    return weight.abs().float() * input_norm.float()[None, :]


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """True where a weight is kept: in each row, all but the round(sparsity * columns) lowest scores
    (rounded, not truncated as in Wanda's code, so layer-wise rates keep their mean)."""
    pruned = round(scores.shape[1] * sparsity)
    keep = torch.ones_like(scores, dtype=torch.bool)
    if pruned:
        keep.scatter_(1, torch.sort(scores, dim=1, stable=True).indices[:, :pruned], False)
    return keep


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """True where a weight is kept: in each group of m consecutive weights of a row, the n lowest are zeroed."""
    rows, cols = scores.shape
    if cols % m:
        raise UserError(f"N:M pattern {n}:{m} needs input widths divisible by {m}; a projection has {cols}")
    groups = scores.reshape(rows, cols // m, m)
    keep = torch.ones_like(groups, dtype=torch.bool)
    keep.scatter_(2, torch.topk(groups, n, dim=2, largest=False).indices, False)
    return keep.reshape(rows, cols)


def parse_nm(pattern: str) -> tuple[int, int]:
    try:
        n, m = (int(x) for x in pattern.split(":"))
    except ValueError:
        raise UserError(f"nm={pattern!r} is not an N:M pattern; use e.g. '2:4' (zero 2 of every 4 weights)") from None
    if not 0 < n < m:
        raise UserError(f"nm={pattern!r}: need 0 < N < M, e.g. '2:4' or '4:8'")
    return n, m


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The sparsity mask of every decoder projection, recomputed from its zeros (True = kept)."""
    return {f"model.layers.{i}.{'self_attn' if name.endswith(('q_proj', 'k_proj', 'v_proj', 'o_proj')) else 'mlp'}"
            f".{name}": lin.weight != 0
            for i, layer in enumerate(model.model.layers) for name, lin in projections(layer).items()}


def layer_sparsity(model: nn.Module) -> list[float]:
    """Fraction of exactly-zero weights over each decoder layer's seven projections."""
    out = []
    for layer in model.model.layers:
        weights = [lin.weight for lin in projections(layer).values()]
        out.append(sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights))
    return out


def projection_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over all decoder projections (what the sparse kernels use)."""
    weights = [lin.weight for layer in model.model.layers for lin in projections(layer).values()]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


@torch.no_grad()
def layer_features(model: nn.Module, batch: torch.Tensor) -> list[torch.Tensor]:
    """Each decoder layer's input hidden states, one row per calibration sample (samples x tokens*hidden)."""
    out = model(input_ids=batch.to(model.device), output_hidden_states=True, use_cache=False)
    return [h.float().reshape(h.shape[0], -1) for h in out.hidden_states[:-1]]


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations of the same samples (rows): the normalised HSIC of their Gram
    matrices; 1 for representations equal up to rotation and scale."""
    gx, gy = x @ x.T, y @ y.T
    n = gx.shape[0]
    center = torch.eye(n, dtype=gx.dtype, device=gx.device) - 1.0 / n
    gx, gy = center @ gx @ center, center @ gy @ center
    denominator = gx.norm() * gy.norm()
    return float((gx * gy).sum() / denominator) if denominator > 0 else 0.0


def rmi_importance(features: list[torch.Tensor], beta: float = 1.0) -> tuple[list[float], list[list[float]]]:
    """LoSA's layer importance: exp(-beta * share of the layer's summed RMI with every other layer).
    A layer whose representation others already carry (high RMI) is less important."""
    n = len(features)
    rmi = [[linear_cka(features[i], features[j]) if i != j else 1.0 for j in range(n)] for i in range(n)]
    redundancy = [sum(rmi[i][j] for j in range(n) if j != i) for i in range(n)]
    total = sum(redundancy) or 1.0
    return [math.exp(-beta * r / total) for r in redundancy], rmi


def rmi_sparsities(importance: list[float], sizes: list[int], target: float, spread: float) -> list[float]:
    """LoSA's allocation: minimise sum(sparsity_l * importance_l) with each rate in target +/- spread and
    the size-weighted mean equal to target. The linear program's optimum fills the least important layers
    to target + spread first (closed form of the SLSQP solve in LoSA's code)."""
    low, high = max(0.0, target - spread), min(1.0, target + spread)
    rates = [low] * len(importance)
    budget = target * sum(sizes) - low * sum(sizes)  # zeros still to place, in weights
    for layer in sorted(range(len(importance)), key=lambda i: importance[i]):
        extra = min(high - low, max(0.0, budget / sizes[layer]))
        rates[layer] += extra
        budget -= extra * sizes[layer]
    return rates


@torch.no_grad()
def wanda_prune(model: nn.Module, batch: torch.Tensor, sparsities: list[float],
                nm: tuple[int, int] | None = None) -> nn.Module:
    """Zero weights of every decoder projection in place by Wanda score, layer after layer."""
    hidden, args, kwargs = layer_inputs(model, batch)
    for i, layer in enumerate(tqdm(model.model.layers, desc="wanda", unit="layer")):
        linears = projections(layer)
        sq_norms = {lin: torch.zeros(lin.in_features, dtype=torch.float32, device=lin.weight.device)
                    for lin in linears.values()}

        def accumulate(module, inputs, _output):
            x = inputs[0].detach().float()
            sq_norms[module] += x.reshape(-1, x.shape[-1]).square().sum(0)

        handles = [lin.register_forward_hook(accumulate) for lin in linears.values()]
        try:
            _run_layer(layer, hidden, args, kwargs)
        finally:
            for handle in handles:
                handle.remove()
        for lin in linears.values():
            scores = wanda_scores(lin.weight, sq_norms[lin].sqrt())
            keep = nm_mask(scores, *nm) if nm else row_mask(scores, sparsities[i])
            lin.weight.mul_(keep.to(lin.weight.dtype))
        hidden = _run_layer(layer, hidden, args, kwargs)  # the next layer sees this layer's pruned output
    return model


@torch.no_grad()
def layer_outputs(model: nn.Module, batch: torch.Tensor) -> list[torch.Tensor]:
    """Each decoder layer's output on the calibration batch (float32, on the CPU). Hooks, not
    output_hidden_states: transformers replaces the last hidden state by its final-normed value."""
    outputs = []

    def keep(_module, _inputs, output):
        outputs.append((output[0] if isinstance(output, tuple) else output).float().cpu())

    handles = [layer.register_forward_hook(keep) for layer in model.model.layers]
    try:
        model(input_ids=batch.to(model.device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def reconstruction_errors(dense: list[torch.Tensor], pruned: list[torch.Tensor], kept: list[int]) -> list[float]:
    """Per layer of the pruned model, LoSA's reconstruction error of its output against the dense
    model's layer kept[l]: sum of squared differences, each hidden dimension scaled by the L2 norm of the
    dense output over all tokens, divided by the hidden size. The last hidden state is left out of
    `dense`/`pruned` comparisons only through the final norm, which both models apply alike."""
    errors = []
    for layer, original in enumerate(kept):
        target, got = dense[original], pruned[layer]
        scale = target.reshape(-1, target.shape[-1]).norm(dim=0).clamp_min(1e-12)
        errors.append(float(((target - got) / scale).square().sum() / target.shape[-1]))
    return errors


def merged_sparsity(model: nn.Module) -> float:
    """Projection sparsity of a model with its adapter (if any) merged in: what a server would run.
    Merges in place."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return projection_sparsity(model)
