"""The prune stage: a base LLaMA in, a smaller (or sparse) checkpoint + prune_report.json out.

Width mode is LLM-Pruner's block-wise pruning; depth mode is Shortened LLaMA; unstructured mode is Wanda
(optionally N:M, optionally with LoSA's RMI layer-wise rates), zeros in dense tensors. Every mode records
each layer's reconstruction error against the dense model (LoSA's rank allocation reads it). Everything the user can
get wrong (ratio, layer range, architecture, paths, calibration length) is checked before the model is
loaded or any output is written.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from rankadaptor.data import calibration_batch, read_texts
from rankadaptor.errors import UserError, check
from rankadaptor.evaluate.perplexity import perplexity
from rankadaptor.infra import storage
from rankadaptor.models.loading import load_config, load_model, resolve_device
from rankadaptor.prune.config import MASK_RULE, PruneConfig
from rankadaptor.prune.depth import choose_blocks, remove_blocks
from rankadaptor.prune.importance import (
    block_ppl_scores,
    block_taylor_scores,
    calibration_gradients,
    layer_group_scores,
    projections,
)
from rankadaptor.prune.unstructured import (
    layer_features,
    layer_outputs,
    layer_sparsity,
    parse_nm,
    projection_sparsity,
    reconstruction_errors,
    rmi_importance,
    rmi_sparsities,
    wanda_prune,
)
from rankadaptor.prune.width import apply_width_pruning, keep_top, pruned_widths
from rankadaptor.widths import count_parameters, layer_widths


def fit_to_depth(config: PruneConfig, num_layers: int) -> tuple[PruneConfig, list[str]]:
    """The config with default layer settings that do not fit a shallow model clamped to its depth, and a
    note per change. The defaults are LLM-Pruner's for 32 layers (first 4 and last 2 layers kept); on a model
    too shallow for them the first and last layer are kept. Values the user set are left alone (and refused
    if they do not fit)."""
    defaults = {f.name: f.default for f in dataclasses.fields(PruneConfig)}
    first, last = (1, 1) if num_layers >= 3 else (0, 0)
    notes: list[str] = []
    if (config.mode == "width" and config.layer_end is None and config.layer_start == defaults["layer_start"]
            and config.layer_start >= num_layers - 2):
        notes.append(f"the default layer range [{config.layer_start}, {num_layers - 2}) does not fit the model's "
                     f"{num_layers} layers: layers [{first}, {num_layers - last}) pruned instead")
        config = dataclasses.replace(config, layer_start=first, layer_end=num_layers - last)
    defaults_protect = (defaults["protect_first"], defaults["protect_last"])
    if (config.mode == "depth" and (config.protect_first, config.protect_last) == defaults_protect
            and sum(defaults_protect) >= num_layers):
        notes.append(f"the default protect_first={defaults_protect[0]}, protect_last={defaults_protect[1]} leave "
                     f"none of the model's {num_layers} blocks removable: protect_first={first}, "
                     f"protect_last={last} used instead")
        config = dataclasses.replace(config, protect_first=first, protect_last=last)
    return config, notes


def pruned_layers(config: PruneConfig, num_layers: int) -> range:
    end = num_layers - 2 if config.layer_end is None else config.layer_end
    if not 0 <= config.layer_start < end <= num_layers:
        raise UserError(f"layer range [{config.layer_start}, {end}) is outside the model's {num_layers} layers: "
                        f"need 0 <= layer_start < layer_end <= {num_layers}")
    return range(config.layer_start, end)


def layer_ratio_for_global(model, layers: range, target: float) -> float:
    """The per-layer ratio whose pruned parameter count is closest to removing `target` of all parameters."""
    total = count_parameters(model.config, layer_widths(model))
    grid = [i / 1000 for i in range(1000)]
    removed = [1 - count_parameters(model.config, pruned_widths(model, layers, r)) / total for r in grid]
    return min(grid, key=lambda r: abs(removed[grid.index(r)] - target))


def blocks_for_global(model, target: float) -> int:
    """How many (equal-size) decoder blocks to remove to come closest to removing `target` of all parameters."""
    widths = layer_widths(model)
    total = count_parameters(model.config, widths)
    block = [count_parameters(model.config, [w]) - count_parameters(model.config, []) for w in widths]
    return min(range(len(widths) + 1), key=lambda k: abs(sum(sorted(block)[:k]) / total - target))


def layer_sparsities(model, batch: torch.Tensor, config: PruneConfig) -> tuple[list[float], dict]:
    """Each decoder layer's target sparsity (unstructured mode) and, for RMI, the evidence behind it."""
    num_layers = len(model.model.layers)
    if config.layer_sparsity is not None:
        check(len(config.layer_sparsity) == num_layers,
              f"layer_sparsity has {len(config.layer_sparsity)} entries but the model has {num_layers} decoder "
              f"layers: give one rate per layer")
        return list(config.layer_sparsity), {}
    if config.sparsity_allocation == "uniform":
        return [config.ratio] * num_layers, {}
    importance, rmi = rmi_importance(layer_features(model, batch))
    sizes = [sum(lin.weight.numel() for lin in projections(layer).values()) for layer in model.model.layers]
    return rmi_sparsities(importance, sizes, config.ratio, config.rmi_spread), {"rmi": rmi, "rmi_importance": importance}


def prune_model(model, batch: torch.Tensor, config: PruneConfig) -> tuple[torch.nn.Module, dict]:
    """Prune an in-memory model; returns the pruned model and what was removed and why."""
    num_layers = len(model.model.layers)
    if config.mode == "unstructured":
        nm = parse_nm(config.nm) if config.nm else None
        targets, evidence = ([nm[0] / nm[1]] * num_layers, {}) if nm else layer_sparsities(model, batch, config)
        wanda_prune(model, batch, targets, nm)
        return model, {"layer_ratio": config.ratio, "pruned_layers": list(range(num_layers)), "removed_blocks": [],
                       "layer_importance": evidence.get("rmi_importance", []), "target_layer_sparsity": targets,
                       "nm": config.nm or None, **evidence}
    if config.mode == "width":
        layers = pruned_layers(config, num_layers)
        ratio = config.ratio if config.ratio_scope == "layer" else layer_ratio_for_global(model, layers, config.ratio)
        grads = None if config.importance == "l2" else calibration_gradients(model, batch, config.importance == "element2")
        keep, layer_importance = {}, [0.0] * num_layers
        for i in range(num_layers):
            head_scores, channel_scores = layer_group_scores(model.model.layers[i], model.config, config.importance, grads)
            layer_importance[i] = float(head_scores.sum() + channel_scores.sum())
            if i in layers:
                keep[i] = (keep_top(head_scores, ratio), keep_top(channel_scores, ratio))
        return apply_width_pruning(model, keep), {"layer_ratio": ratio, "pruned_layers": list(layers),
                                                 "layer_importance": layer_importance, "removed_blocks": []}
    protected = set(range(config.protect_first)) | set(range(num_layers - config.protect_last, num_layers))
    num_blocks = blocks_for_global(model, config.ratio)
    # Both scores are higher for a more important block (PPL: the model is worse without it).
    scores = (block_taylor_scores(model, calibration_gradients(model, batch)) if config.block_importance == "taylor"
              else block_ppl_scores(model, batch))
    blocks = choose_blocks(scores, num_blocks, protected)
    kept = [i for i in range(num_layers) if i not in blocks]
    return remove_blocks(model, blocks), {"removed_blocks": blocks, "block_scores": scores, "pruned_layers": [],
                                          "layer_importance": [scores[i] for i in kept]}


def run_prune(config: PruneConfig, output_uri: str) -> dict:
    """Prune config.model and write the checkpoint, tokenizer and prune_report.json to output_uri."""
    config.validate()
    check(bool(config.model), "model is required: a local checkpoint directory, s3:// URI or hub id")
    check(bool(config.calibration), "calibration is required: a .txt or .jsonl file of text, local or s3://")
    base_config = load_config(config.model)
    config, notes = fit_to_depth(config, base_config.num_hidden_layers)
    if config.mode == "width":
        pruned_layers(config, base_config.num_hidden_layers)
    texts = read_texts(config.calibration)
    ppl_texts = read_texts(config.ppl_text) if config.ppl_text else None
    model, tokenizer = load_model(config.model, device=resolve_device(config.device))
    batch = calibration_batch(tokenizer, texts, config.num_samples, config.seq_len, config.seed,
                              source=f"calibration file {config.calibration!r}")
    started = time.time()
    widths_before = layer_widths(model)
    params_before = sum(p.numel() for p in model.parameters())
    ppl_before = perplexity(model, tokenizer, ppl_texts, config.ppl_seq_len) if ppl_texts else None
    dense_outputs = layer_outputs(model, batch)
    pruned, details = prune_model(model, batch, config)
    params_after = sum(p.numel() for p in pruned.parameters())
    kept = [i for i in range(len(dense_outputs)) if i not in set(details["removed_blocks"])]
    details["reconstruction_error"] = reconstruction_errors(dense_outputs, layer_outputs(pruned, batch), kept)
    if config.mode == "unstructured":
        details.update(sparsity=projection_sparsity(pruned), layer_sparsity=layer_sparsity(pruned), mask_rule=MASK_RULE)
    report = {
        "model": config.model, "mode": config.mode, "config": vars(config).copy(),
        "params_before": params_before, "params_after": params_after,
        "removed_fraction": 1 - params_after / params_before,
        "widths_before": widths_before, "widths_after": layer_widths(pruned),
        "ppl_before": ppl_before,
        "ppl_after": perplexity(pruned, tokenizer, ppl_texts, config.ppl_seq_len) if ppl_texts else None,
        "seconds": time.time() - started, "notes": notes, **details,
    }
    dtype = stored_dtype(base_config)
    report["dtype"] = str(dtype).removeprefix("torch.")
    with storage.writing_dir(output_uri) as out:
        pruned.to(dtype).save_pretrained(out)  # pruning ran in float32; the checkpoint keeps the base's dtype
        tokenizer.save_pretrained(out)
        storage.write_json_atomic(out / "prune_report.json", report)
    return report


def stored_dtype(base_config) -> torch.dtype:
    """The dtype the base model's checkpoint declares (bf16 for LLaMA: half the bytes of float32 in every step
    that downloads the pruned model); float32 when it declares none."""
    declared = getattr(base_config, "dtype", None) or getattr(base_config, "torch_dtype", None)
    if isinstance(declared, str):
        declared = getattr(torch, declared, None)
    return declared if isinstance(declared, torch.dtype) else torch.float32
