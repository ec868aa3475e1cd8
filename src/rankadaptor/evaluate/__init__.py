"""The evaluate stage (lm-eval multiple choice and perplexity): its config, the harness and the run function.
Task grammar and files (no lm-eval import) are in `evaluate.tasks`."""

from rankadaptor.evaluate.config import EvalConfig
from rankadaptor.evaluate.harness import evaluate
from rankadaptor.evaluate.stage import run_evaluate

__all__ = ["EvalConfig", "evaluate", "run_evaluate"]
