"""The evaluate stage's options.
"""

from __future__ import annotations

from dataclasses import dataclass

from rankadaptor.config import option
from rankadaptor.errors import check
from rankadaptor.evaluate.tasks import ACCEPTED, SPLITS, TASKS, check_task_files, parse_task, task_file, task_ok


@dataclass
class EvalConfig:
    tasks: list[str] = option(list(TASKS), f"tasks to score: {ACCEPTED}", set_by_job=True)
    data_dir: str | None = option(None, "directory (local or s3://) of <task>_<split>.jsonl files, e.g. "
                                        "boolq_validation.jsonl, arc_easy_test.jsonl, and of your own tasks' "
                                        "<name>.jsonl / <name>.txt; default: the hub datasets",
                                  set_by_job=True)
    task_files: dict[str, str] = option({}, "your tasks' own files by task name, e.g. {'mc:tickets': "
                                            "'s3://b/tickets.jsonl'} (local or s3://), instead of <name>.jsonl / "
                                            "<name>.txt in data_dir", set_by_job=True)
    split: str = option("select", f"rows to evaluate, one of {SPLITS}: 'select' drives the search, 'report' is "
                                  "held out from it and reported to the user", set_by_job=True)
    select_fraction: float = option(0.5, "fraction of each task's rows in the 'select' split, in (0, 1)")
    limit: int | None = option(None, "at most this many rows per task after the split (cheap search trials)")
    batch_size: int = option(32, "requests per forward pass (lm-eval's default is 1)")
    max_length: int | None = option(None, "context length in tokens (default: the model's max_position_embeddings)")
    seed: int = option(0, "seed of the select/report split and of the row order under limit")
    ppl_text: str | None = option(None, "also report perplexity on this .txt/.jsonl file (local or s3://)",
                                   set_by_job=True)
    ppl_seq_len: int = option(128, "window length for perplexity (at most max_length)")
    device: str = option("auto", "auto, cpu, cuda or cuda:N", runtime=True)
    shared_prefix: bool = option(True, "score each question's context once for all its answers and pack short "
                                       "requests into rows (same scores as lm-eval's HFLM to float rounding; "
                                       "false: HFLM's own batches). Off by itself where the model's attention "
                                       "ignores custom masks (flash attention)")
    batch_tokens: int = option(256, "with shared_prefix: most tokens per packed row (batch_size rows a pass); at "
                                     "least the longest context + answer is used")

    def validate(self) -> None:
        check(bool(self.tasks), f"tasks is empty; accepted: {ACCEPTED}")
        unknown = [t for t in self.tasks if not task_ok(t)]
        check(not unknown, f"unknown task(s) {unknown}; accepted: {ACCEPTED}")
        custom = [t for t in self.tasks if parse_task(t).custom and t not in self.task_files]
        check(not custom or self.data_dir is not None,
              f"task(s) {custom} read {[task_file(t) for t in custom]} from the data directory: set data_dir "
              "(a job's eval_data_dir) or give their files in task_files")
        check_task_files(self.task_files)
        check(len(set(self.tasks)) == len(self.tasks), f"tasks={self.tasks} lists a task twice")
        check(self.split in SPLITS, f"split={self.split!r} is not accepted; use one of {SPLITS}")
        check(0.0 < self.select_fraction < 1.0, f"select_fraction={self.select_fraction} is outside (0, 1)")
        for name in ("limit", "max_length"):
            value = getattr(self, name)
            check(value is None or value > 0, f"{name}={value} must be a positive integer (or null)")
        for name in ("batch_size", "ppl_seq_len", "batch_tokens"):
            check(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be a positive integer")
        check(self.max_length is None or self.ppl_seq_len <= self.max_length,
              f"ppl_seq_len={self.ppl_seq_len} is longer than max_length={self.max_length}")
