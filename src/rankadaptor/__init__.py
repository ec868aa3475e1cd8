"""RankAdaptor: recover structurally pruned LLaMA models with per-layer LoRA ranks.

Importing the package imports nothing heavy: steps that need no model stay fast (docs/architecture.md).
"""

__version__ = "0.1.0"
