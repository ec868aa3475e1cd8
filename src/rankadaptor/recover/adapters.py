"""A recovered model: a base checkpoint with its LoRA adapter on top (plain or masked), and the merged
standalone export.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rankadaptor.errors import UserError
from rankadaptor.infra import storage
from rankadaptor.models.loading import load_model

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def load_adapted(model_uri: str, adapter_uri: str | None, dtype: torch.dtype | None = None,
                 device: str | torch.device = "cpu") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model with its LoRA adapter artifact on top (a peft model, unmerged; plain or masked);
    the base alone when adapter_uri is None."""
    model, tokenizer = load_model(model_uri, dtype, device)
    if adapter_uri is None:
        return model, tokenizer
    from peft import PeftModel

    from rankadaptor.recover import masked

    adapter_dir = storage.local_dir(adapter_uri)
    if not (adapter_dir / "adapter_config.json").is_file():  # else peft looks for it on the hub
        raise UserError(f"adapter {adapter_uri!r} has no adapter_config.json: expected a LoRA adapter "
                        "directory written by `rankadaptor recover`")
    try:
        model = (masked.load_masked_adapter(model, adapter_dir) if masked.is_masked(adapter_dir)
                 else PeftModel.from_pretrained(model, str(adapter_dir)))
    except Exception as e:  # e.g. an adapter trained on another model: shapes differ
        raise UserError(f"cannot load the adapter {adapter_uri!r} on model {model_uri!r}: "
                        f"{type(e).__name__}: {str(e)[:500]}") from None
    return model.to(device).eval(), tokenizer


def export_merged(model_uri: str, adapter_uri: str, output_uri: str) -> None:
    """Write base + adapter merged into one standalone checkpoint (with its tokenizer).

    A width-pruned result loads after `import rankadaptor.models.pruned_llama`; a depth-only pruned one is a plain LLaMA
    checkpoint that any transformers-compatible server loads. A masked (LoSA) adapter merges masked, so
    an unstructured-sparse model keeps exactly its zeros."""
    model, tokenizer = load_adapted(model_uri, adapter_uri)
    merged = model.merge_and_unload()
    with storage.writing_dir(output_uri) as out:
        merged.save_pretrained(out)
        tokenizer.save_pretrained(out)
