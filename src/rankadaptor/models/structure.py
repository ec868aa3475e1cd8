"""A pruned model's structure artifact: its checksum, pruning, LoRA cost per rank and layer features,
written by the prune step so that the steps that need only the structure never download the weights.
"""

from __future__ import annotations

from rankadaptor.errors import check
from rankadaptor.infra import storage
from rankadaptor.trial import TrialContext
from rankadaptor.widths import attn_head_dim, config_widths, lora_cost_per_rank, structure_features

STRUCTURE_FILE = "structure.json"


def write_structure(pruned_uri: str, base_model: str, output_uri: str) -> dict:
    """The structure artifact of a pruned model: its checksum, pruning, LoRA cost per rank and the surrogate's
    layer features (the trial context but the data's checksum), from the pruned and the base model's configs."""
    from rankadaptor.models.loading import load_config

    config, base = load_config(pruned_uri), load_config(base_model)
    directory = storage.local_dir(pruned_uri)
    widths = config_widths(config)
    costs = lora_cost_per_rank(widths, config.hidden_size, attn_head_dim(config))
    report = storage.read_json(directory / "prune_report.json")
    importance = report.get("layer_importance") or None
    structure = {"model_checksum": storage.checksum(directory, skip=("prune_report.json",)),
                 "pruning": report["config"], "cost_per_rank": costs,
                 "layer_features": structure_features(widths, base.num_attention_heads, base.intermediate_size, costs,
                                                      importance if importance and min(importance) >= 0 else None)}
    with storage.writing_dir(output_uri) as out:
        storage.write_json_atomic(out / STRUCTURE_FILE, structure)
    return structure


def trial_context(structure_uri: str, data_uri: str) -> TrialContext:
    """The trial context of a job: its model's structure artifact (write_structure) and its data's checksum."""
    directory = storage.local_dir(structure_uri)
    check((directory / STRUCTURE_FILE).is_file(), f"{structure_uri!r} is not a structure artifact: no "
                                                  f"{STRUCTURE_FILE} (the prune step writes it)")
    return TrialContext(**storage.read_json(directory / STRUCTURE_FILE),
                        data_checksum=storage.checksum(storage.local_dir(data_uri)))
