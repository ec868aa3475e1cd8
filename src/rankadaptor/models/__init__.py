"""The model: loading (pruned) LLaMA checkpoints, the pruned-LLaMA classes and a pruned model's structure."""
