"""The recover stage: LoRA fine-tuning of a pruned model with one rank per decoder layer.

Methods: `lora` with a rank vector (or a uniform rank, the paper's increasing schedule, or LoSA's ranks
from reconstruction error), `losa` (the same, with each update masked by its weight's zeros so a sparse
model stays sparse when merged: recover/masked.py) and `adalora` (peft AdaLoRA, budget reallocated during
training, target average rank = `rank`). Output artifact: the peft adapter (safetensors), rank_vector.json
(ranks, exact trainable parameters, the budget of uniform `rank` on the same model) and train_metrics.json
(loss per step, tokens/s, seconds).

The budget: a rank vector may train at most the LoRA parameters of uniform `rank` on every layer, so that
rank layouts are compared at equal cost; one over it is refused unless `allow_over_budget`. A checkpoint
resumes only a run of the same `result_settings` (recover/train.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rankadaptor import config as cfg
from rankadaptor import widths
from rankadaptor.errors import check
from rankadaptor.infra import storage
from rankadaptor.models.loading import load_config, load_model, resolve, resolve_device
from rankadaptor.recover.batches import load_examples
from rankadaptor.recover.config import RecoverConfig
from rankadaptor.recover.ranks import (
    TARGET_MODULES,
    check_rank_vector,
    error_proportional_ranks,
    increasing_schedule,
    rank_patterns,
)
from rankadaptor.recover.train import TrainSettings, check_checkpoint, settings_record, step_plan, train
from rankadaptor.widths import attn_head_dim, config_widths, lora_cost_per_rank, lora_parameters

if TYPE_CHECKING:
    from rankadaptor.recover.nested import NestedRanks


def resolve_rank_vector(config: RecoverConfig, num_layers: int, model_uri: str | None = None,
                        costs: list[int] | None = None) -> list[int]:
    if config.rank_vector is not None:
        rank_vector = list(config.rank_vector)
    elif config.schedule == "losa":
        rank_vector = error_proportional_ranks(reconstruction_error(model_uri), costs, config.rank, config.candidates)
    elif config.schedule == "increasing":
        rank_vector = increasing_schedule(num_layers)
    else:
        rank_vector = [config.rank] * num_layers
    check_rank_vector(rank_vector, num_layers, config.candidates)
    return rank_vector


def fit_to_context(config: RecoverConfig, context: int) -> tuple[RecoverConfig, list[str]]:
    """The default cutoff lowered to a model's shorter context, with a note; a cutoff the user set beyond the
    context is refused (positions the model never saw)."""
    default = next(f.default for f in dataclasses.fields(RecoverConfig) if f.name == "cutoff")
    if config.cutoff <= context:
        return config, []
    check(config.cutoff == default, f"cutoff={config.cutoff} is longer than the model's context of {context} tokens "
                                    f"(max_position_embeddings): give a cutoff of at most {context}")
    return dataclasses.replace(config, cutoff=context), [
        f"the default cutoff={default} is longer than the model's context: cutoff={context} used"]


def result_settings(config: RecoverConfig) -> dict[str, Any]:
    """The options that decide a recovery's result: all but the runtime ones and the checkpoint's location."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if not cfg.is_runtime(f) and f.name != "checkpoint"}


def model_checksum(model_uri: str) -> str:
    """Identity of a model: its manifest's hash (rankadaptor artifacts), else its config and file sizes (a base
    model from elsewhere; hashing billions of weights at every start would cost more than it guards)."""
    source = resolve(model_uri)  # a local directory (an s3:// model downloaded) or a hub id
    directory = Path(source)
    if (directory / storage.MANIFEST).is_file():
        return storage.checksum(directory)
    if not directory.is_dir():
        return source
    files = {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()}
    config_text = (directory / "config.json").read_text()
    return hashlib.sha256(json.dumps([files, config_text]).encode()).hexdigest()


def training_identity(config: RecoverConfig, model_uri: str, rank_vector: list[int]) -> dict[str, Any]:
    """What a checkpoint must share with a run to be resumed by it: the result settings with the resolved rank
    vector, and the model and data by checksum."""
    return {**result_settings(config), "rank_vector": rank_vector if config.method != "adalora" else None,
            "model": model_checksum(model_uri), "data": storage.sha256_file(storage.local_file(config.data))}


def check_budget(config: RecoverConfig, rank_vector: list[int], costs: list[int]) -> tuple[int, int]:
    """(used, budget) LoRA parameters; a rank vector over the budget is refused unless allow_over_budget.
    AdaLoRA is at the budget by construction (target average rank = `rank`)."""
    budget = widths.budget(costs, rank=config.rank)
    used = lora_parameters(rank_vector, costs) if config.method != "adalora" else budget
    check(used <= budget or config.allow_over_budget,
          f"rank vector {rank_vector} trains {used:,} LoRA parameters, {used / budget - 1:.0%} over the budget of "
          f"{budget:,} (uniform rank {config.rank} on every layer): lower some ranks, or pass "
          f"allow_over_budget=true (--allow-over-budget true) to train it anyway")
    return used, budget


def reconstruction_error(model_uri: str) -> list[float]:
    """Per-layer reconstruction error recorded by `rankadaptor prune` next to the pruned model."""
    report = Path(resolve(model_uri)) / "prune_report.json"
    check(report.is_file() and "reconstruction_error" in storage.read_json(report),
          f"schedule 'losa' needs the per-layer reconstruction_error of the prune report of {model_uri!r}: "
          f"prune the model with `rankadaptor prune` (any mode) or give a rank_vector")
    return storage.read_json(report)["reconstruction_error"]


def adapter_config(config: RecoverConfig, rank_vector: list[int], steps: int):
    from peft import AdaLoraConfig, LoraConfig

    from rankadaptor.recover import masked

    if config.method == "adalora":
        return AdaLoraConfig(target_r=config.rank, init_r=max(config.candidates), lora_alpha=config.alpha_ratio * config.rank,
                             lora_dropout=config.dropout, target_modules=TARGET_MODULES, total_step=steps,
                             tinit=steps // 10, tfinal=steps // 5, deltaT=max(1, steps // 20), task_type="CAUSAL_LM")
    ranks, alphas = rank_patterns(rank_vector, config.alpha_ratio)
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha_ratio * config.rank, rank_pattern=ranks,
                      alpha_pattern=alphas, lora_dropout=config.dropout, target_modules=TARGET_MODULES,
                      use_rslora=config.rslora, task_type="CAUSAL_LM")
    return masked.register(lora) if config.method == "losa" else lora


def add_adapters(model, config: RecoverConfig, rank_vector: list[int], steps: int):
    """The model wrapped with freshly initialised adapters (seeded)."""
    from peft import get_peft_model

    torch.manual_seed(config.seed)
    return get_peft_model(model, adapter_config(config, rank_vector, steps))


def allocated_ranks(rank_pattern: dict[str, list[bool]], num_layers: int) -> list[float]:
    """AdaLoRA's final mean rank per decoder layer (over its seven projections)."""
    per_layer = [[] for _ in range(num_layers)]
    for name, mask in rank_pattern.items():
        per_layer[int(name.split("layers.")[1].split(".")[0])].append(sum(mask))
    return [sum(r) / len(r) if r else 0.0 for r in per_layer]


def run_recover(config: RecoverConfig, model_uri: str, output_uri: str, step_fraction: float = 1.0,
                nested: NestedRanks | None = None) -> dict:
    """Fine-tune adapters on the pruned model at model_uri and write the adapter artifact to output_uri.
    step_fraction < 1: a short (cheap) recovery of that share of the steps, its schedule over those steps;
    nested: train a supernet of these nested ranks (config's rank vector is their largest: supernet.py)."""
    config.validate()
    check(0 < step_fraction <= 1, f"step_fraction={step_fraction} must be in (0, 1]")
    check(bool(config.data), "data is required: Alpaca JSON/JSONL or a text file, local or s3://")
    model_config = load_config(model_uri)
    config, notes = fit_to_context(config, model_config.max_position_embeddings)
    for note in notes:
        print(f"note: {note}")
    num_layers = model_config.num_hidden_layers
    costs = lora_cost_per_rank(config_widths(model_config), model_config.hidden_size, attn_head_dim(model_config))
    rank_vector = resolve_rank_vector(config, num_layers, model_uri, costs)
    used, budget = check_budget(config, rank_vector, costs)
    device = resolve_device(config.device)
    check(not config.liger or device.type == "cuda",
          f"liger=True needs a CUDA GPU (liger-kernel's Triton kernels); device={config.device!r} is {device}")
    identity = training_identity(config, model_uri, rank_vector)
    if step_fraction < 1:
        identity["step_fraction"] = step_fraction  # a short run's checkpoint resumes only a short run
    if nested is not None:
        check(rank_vector == nested.max_vector, f"a supernet trains its largest ranks {nested.max_vector}, "
                                                f"not {rank_vector}")
        identity["nested"] = nested.record()
    checkpoint_uri = config.checkpoint or (
        storage.join(config.checkpoint_root, f"recover-{settings_record(identity)['hash'][:24]}")
        if config.checkpoint_root else f"{output_uri.rstrip('/')}.ckpt")
    check_checkpoint(checkpoint_uri, identity, config.restart)
    model, tokenizer = load_model(model_uri, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32,
                                  device=device)
    packing = device.type == "cuda" if config.packing is None else config.packing
    attention = config.attention if config.attention != "auto" else (
        "flex_attention" if packing and device.type == "cuda" else "sdpa")
    model.set_attn_implementation(attention)
    examples = load_examples(config.data, tokenizer, config.cutoff)
    settings = TrainSettings(lr=config.lr, epochs=config.epochs, batch_size=config.batch_size,
                             micro_batch_tokens=config.micro_batch_tokens, warmup_steps=0,
                             max_grad_norm=config.max_grad_norm, save_steps=config.save_steps, seed=config.seed,
                             max_steps=config.max_steps, group_by_length=config.group_by_length,
                             compile=config.compile, packing=packing, liger=config.liger,
                             prefetch=config.prefetch)
    steps = len(step_plan(examples, settings))
    if step_fraction < 1:
        settings.max_steps = max(1, math.ceil(step_fraction * steps))
        steps = len(step_plan(examples, settings))
    settings.warmup_steps = int(config.warmup_ratio * steps)
    peft_model = add_adapters(model, config, rank_vector, steps)
    started = time.time()
    truncation = nested.attach(peft_model) if nested is not None else None
    log = train(peft_model, examples, settings, tokenizer.pad_token_id, checkpoint_uri,
                adalora=config.method == "adalora", identity=identity, on_step=truncation)
    if truncation is not None:
        truncation.close()
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    allocated = peft_model.peft_config["default"].rank_pattern if config.method == "adalora" else None
    ranks = {
        "method": config.method,
        "rank_vector": rank_vector if config.method != "adalora" else None,
        "trainable_params": trainable,
        "lora_params": lora_parameters(rank_vector, costs) if config.method != "adalora" else trainable,
        "uniform_rank": config.rank,
        "uniform_params": budget,  # the budget: uniform `rank` on every layer
        "within_budget": used <= budget,
        "cost_per_rank": costs,
        "allocated_ranks": None if allocated is None else allocated_ranks(allocated, num_layers),
    }
    metrics = {"losses": log.losses, "steps": log.step, "examples": len(examples), "seconds": time.time() - started,
               "train_seconds": log.seconds, "real_tokens": log.real_tokens, "padded_tokens": log.padded_tokens,
               "tokens_per_second": log.real_tokens / max(log.seconds, 1e-9), "resumed_from": log.resumed_from,
               "device": str(device), "notes": notes, "step_fraction": step_fraction}
    print(f"LoRA parameters: {used:,} of a budget of {budget:,} (uniform rank {config.rank} on every layer)"
          + ("" if used <= budget else f", {used / budget - 1:.0%} over (allow_over_budget)"))
    with storage.writing_dir(output_uri) as out:
        peft_model.save_pretrained(out)
        if config.method == "losa":
            from rankadaptor.recover import masked

            masked.mark(out)
        storage.write_json_atomic(out / "rank_vector.json", ranks)
        storage.write_json_atomic(out / "train_metrics.json", metrics)
        if nested is not None:
            from rankadaptor.recover.nested import SUPERNET_FILE

            storage.write_json_atomic(out / SUPERNET_FILE, {"nested": nested.record(),
                                                            "recover": result_settings(config),
                                                            "seconds": metrics["seconds"]})
    storage.remove(checkpoint_uri)
    return {**ranks, **metrics}
