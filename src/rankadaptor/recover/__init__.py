"""The recover stage (LoRA with one rank per layer, LoSA, AdaLoRA): its config, its run function and the
adapted model's loading."""

from rankadaptor.recover.adapters import export_merged, load_adapted
from rankadaptor.recover.config import RecoverConfig
from rankadaptor.recover.stage import run_recover

__all__ = ["RecoverConfig", "export_merged", "load_adapted", "run_recover"]
