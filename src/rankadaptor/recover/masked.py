"""Sparsity-preserving LoRA (LoSA): the update of each adapted weight is multiplied by that weight's mask,
so W + (BA ⊙ M) * scale keeps every zero of a sparse model and merges into it at no inference cost.

The mask is the base weight's nonzeros (`weight != 0`), recomputed from the frozen weight, so nothing but
ordinary LoRA A/B matrices is trained or saved: the adapter is a standard peft LoRA adapter. The masked
layer is a subclass of peft's LoRA Linear registered through peft's custom-module mapping, so peft's own
merge, unmerge, save and load run through it. An adapter is marked as masked in MARKER next to it; load it
with `load_masked_adapter` (rankadaptor.recover.adapters.load_adapted does this), since plain
`PeftModel.from_pretrained` would apply the update unmasked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel
from peft.tuners.lora.layer import Linear as LoraLinear
from torch import nn

MARKER = "masked_lora.json"


class MaskedLoraLinear(LoraLinear):
    """peft LoRA Linear whose update is masked by the base weight's nonzeros."""

    def weight_mask(self) -> torch.Tensor:
        return self.get_base_layer().weight != 0

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        delta = super().get_delta_weight(adapter)
        return delta * self.weight_mask().to(delta.dtype)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters or self.merged or kwargs.get("adapter_names") is not None:
            return super().forward(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        mask = self.weight_mask()
        for name in self.active_adapters:
            if name not in self.lora_A:
                continue
            lora_a, lora_b = self.lora_A[name].weight, self.lora_B[name].weight
            delta = (lora_b @ lora_a) * mask.to(lora_a.dtype) * self.scaling[name]
            h = self._cast_input_dtype(x, lora_a.dtype)
            result = result + F.linear(self.lora_dropout[name](h), delta).to(result.dtype)
        return result


def register(config: LoraConfig) -> LoraConfig:
    """The LoRA config with every nn.Linear target adapted by MaskedLoraLinear (peft custom modules)."""
    config._register_custom_module({nn.Linear: MaskedLoraLinear})
    return config


def mark(adapter_dir: Path) -> None:
    (Path(adapter_dir) / MARKER).write_text('{"mask": "weight != 0 of each adapted base weight"}\n')


def is_masked(adapter_dir: Path) -> bool:
    return (Path(adapter_dir) / MARKER).is_file()


def load_masked_adapter(model: nn.Module, adapter_dir: Path) -> PeftModel:
    """A masked adapter on its (sparse) base model, with the masked layers it was trained with."""
    config = register(LoraConfig.from_pretrained(str(adapter_dir)))
    return PeftModel.from_pretrained(model, str(adapter_dir), config=config)
