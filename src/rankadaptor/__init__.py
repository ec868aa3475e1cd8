"""RankAdaptor: recover structurally pruned LLaMA models with per-layer LoRA ranks.

Importing the package registers the pruned-LLaMA config and model with transformers' Auto classes.
"""

from rankadaptor import modeling  # noqa: F401  (registers PrunedLlama with the Auto classes)

__version__ = "0.1.0"
