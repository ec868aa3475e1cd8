"""lm-eval's zero-shot scoring: task configs from lm-eval's own YAMLs (or a user's multiple-choice file),
its HFLM with context-bound requests, and evaluate(): per-row correctness for paired statistics.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from rankadaptor.config import to_dict
from rankadaptor.data import read_texts
from rankadaptor.errors import UserError, check
from rankadaptor.evaluate.config import EvalConfig
from rankadaptor.evaluate.perplexity import perplexity
from rankadaptor.evaluate.tasks import MC, MC_METRIC, TASKS, data_files, split_rows, task_file


def mc_config(name: str, data_file: Path) -> dict:
    """The lm-eval task config of a user's multiple-choice task: the fields as doc_to_text / doc_to_choice /
    doc_to_target, each answer scored as the continuation of the query after a space, acc and acc_norm."""
    return {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data_file)}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "query",
            "doc_to_choice": "choices", "doc_to_target": "gold", "target_delimiter": " ",
            "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                            for m in ("acc", "acc_norm")]}


def task_config(name: str, data_file: Path | None = None) -> dict:
    """lm-eval's built-in config of a task (prompts, metrics, process_docs), reading data_file if given."""
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    if name.startswith(MC):
        check(data_file is not None, f"task {name!r} reads {task_file(name)} from data_dir; set it")
        return mc_config(name, data_file)
    spec = TASKS[name]
    # Loaded from its own path so that `!function utils.process_docs` resolves next to the built-in YAML.
    config = load_yaml(Path(lm_eval.__file__).parent / "tasks" / spec.yaml)
    if data_file is not None:
        config.update(dataset_path="json", dataset_name=None, training_split=None, fewshot_split=None,
                      validation_split=spec.split if spec.split == "validation" else None,
                      test_split=spec.split if spec.split == "test" else None,
                      dataset_kwargs={"data_files": {spec.split: str(data_file)}})
    return config


def _lm_class():
    """lm-eval's HFLM, except that a request whose answer alone is longer than the context is left unscored
    (HFLM truncates contexts only, and asserts on such answers) and remembered, so that evaluate() can
    report its row as skipped and leave it out of the scores. Other requests are scored by HFLM's own
    batches, or with shared_prefix by evaluate/prefix.py (each context run once for all its continuations,
    packed rows of batch_tokens), where the model's attention honours custom masks."""
    from lm_eval.models.huggingface import HFLM

    from rankadaptor.evaluate import prefix

    class ContextBoundHFLM(HFLM):
        def __init__(self, *args, shared_prefix: bool = False, batch_tokens: int = 256, **kwargs):
            super().__init__(*args, **kwargs)
            self.unscorable: set[tuple[str, str]] = set()
            self.shared_prefix, self.batch_tokens = shared_prefix and prefix.can_share(self), batch_tokens

        def _loglikelihood_tokens(self, requests, disable_tqdm=False, override_bs=None):
            fits = [len(continuation) <= self.max_length for _, _, continuation in requests]
            self.unscorable.update(req[0] for req, ok in zip(requests, fits) if not ok)
            kept = [r for r, ok in zip(requests, fits) if ok]
            scored = iter(prefix.loglikelihood_tokens(self, kept, self.batch_tokens) if self.shared_prefix
                          else super()._loglikelihood_tokens(kept, disable_tqdm=disable_tqdm,
                                                             override_bs=override_bs))
            return [next(scored) if ok else (-math.inf, False) for ok in fits]

    return ContextBoundHFLM


def evaluate(model, tokenizer, config: EvalConfig) -> dict:
    """Evaluate an in-memory model (plain, pruned or peft-wrapped) and return the metrics.json content:
    per task the metric, its value and lm-eval's stderr over the evaluated rows, n, and the 0/1
    correctness of every row with its row id (for paired bootstrap tests); the mean over tasks."""
    import lm_eval.evaluator
    from lm_eval.api.metrics import mean, mean_stderr
    from lm_eval.tasks import TaskManager

    config.validate()
    files = data_files(config.data_dir, config.tasks, config.task_files)
    ppl_texts = read_texts(config.ppl_text) if config.ppl_text else None
    max_length = config.max_length or model.config.max_position_embeddings
    check(not ppl_texts or config.ppl_seq_len <= max_length,
          f"ppl_seq_len={config.ppl_seq_len} is longer than the context max_length={max_length}")
    start = time.perf_counter()
    # An empty TaskManager: the tasks come in as config dicts, so lm-eval's 14k-task index is never built.
    manager, task_configs = TaskManager(include_defaults=False), [task_config(n, files.get(n)) for n in config.tasks]
    try:
        tasks = manager.load(task_configs)["tasks"]
    except Exception as e:  # datasets raises many kinds (offline hub, bad schema); name the cause
        where = f"data_dir={config.data_dir!r}" if config.data_dir else "the hub (offline? pass data_dir)"
        raise UserError(f"cannot load the task data from {where}: {type(e).__name__}: {e}") from None
    samples = {name: split_rows(name, len(task.eval_docs), config.split, config.select_fraction, config.seed,
                                config.limit) for name, task in tasks.items()}
    empty = [name for name, rows in samples.items() if not rows]
    check(not empty, f"split {config.split!r} of task(s) {empty} has no rows: too few rows for "
                     f"select_fraction={config.select_fraction}")

    was_training, used_cache = model.training, model.config.use_cache
    model.config.use_cache = False  # no KV cache is needed to score whole sequences
    try:
        lm = _lm_class()(pretrained=model, tokenizer=tokenizer, batch_size=config.batch_size, max_length=max_length,
                         shared_prefix=config.shared_prefix, batch_tokens=config.batch_tokens)
        # lm-eval's evaluate() rather than simple_evaluate(): the latter also probes the environment (`pip
        # list` and more in subprocesses: over a second per call) and reseeds the global RNGs of the caller.
        # What else it does for these tasks is the zero-shot setting, done here.
        for task in tasks.values():
            task.set_config(key="num_fewshot", value=0)
            task.set_fewshot_seed(seed=config.seed)
        with torch.inference_mode():
            results = lm_eval.evaluator.evaluate(lm=lm, task_dict={"tasks": tasks}, samples=samples)
            perplexity_value = (perplexity(model, tokenizer, ppl_texts, config.ppl_seq_len, config.batch_size)
                                if ppl_texts else None)
    finally:
        model.config.use_cache = used_cache
        model.train(was_training)

    metrics: dict = {"tasks": {}, "split": config.split, "config": to_dict(config)}
    for name in config.tasks:
        metric = MC_METRIC if name.startswith(MC) else TASKS[name].metric
        logged = sorted(results["samples"][name], key=lambda s: s["doc_id"])
        scored = [not any(tuple(args) in lm.unscorable for args in s["arguments"]) for s in logged]
        rows = [int(s[metric]) for s, ok in zip(logged, scored) if ok]
        check(bool(rows), f"no row of task {name!r} fits in max_length={max_length} tokens")
        # value and stderr are lm-eval's own aggregation (mean, mean_stderr) over the scored rows
        metrics["tasks"][name] = {
            "metric": metric, "value": mean(rows), "stderr": mean_stderr(rows) if len(rows) > 1 else None,
            "n": len(rows), "rows": rows, "row_ids": [s["doc_id"] for s, ok in zip(logged, scored) if ok],
            "skipped": [s["doc_id"] for s, ok in zip(logged, scored) if not ok],
            **({"acc_norm": mean([int(s["acc_norm"]) for s, ok in zip(logged, scored) if ok])}
               if name.startswith(MC) else {}),
        }
    metrics["mean"] = float(np.mean([t["value"] for t in metrics["tasks"].values()]))
    if perplexity_value is not None:
        metrics["perplexity"] = perplexity_value
    metrics["seconds"] = time.perf_counter() - start
    return metrics
