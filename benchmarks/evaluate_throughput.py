"""Throughput of our evaluate stage against lm-eval with its default HF settings (batch_size=1), on the
same model, tasks and rows, in one run; checks that both give the same per-row correctness.

Both sides are timed from loading the tasks to the last score, after one small warm-up evaluation (the
first load of each data file converts it to Arrow, which neither side should pay); with --repeats the
sides alternate and the fastest run of each counts. Prints markdown tables
and exits with status 1 when any row's score differs.

    python benchmarks/evaluate_throughput.py                               # the bundled tiny model, all tasks
    python benchmarks/evaluate_throughput.py --tasks arc_easy,piqa --limit 20
    python benchmarks/evaluate_throughput.py --shape 1.1b --device cuda    # random-init 1.1B, no download
    python benchmarks/evaluate_throughput.py --model /models/llama-7b --data-dir hub --device cuda

With --shape the model is a random-init pruned LLaMA of that shape (as in recover_throughput.py) with the
bundled tokenizer: its scores are at chance, but both sides must still agree on every row, and the time
per row is that of a real model of the shape.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from shapes import SHAPES, pruned_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from rankadaptor.evaluate import TASKS, EvalConfig
    from rankadaptor.job import BUNDLED

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", default=str(BUNDLED / "aidreams-260k"),
                        help="checkpoint directory, s3:// URI or hub id (default: the bundled tiny model)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None,
                        help="instead of --model: a random-init pruned LLaMA of this shape, --model's tokenizer")
    parser.add_argument("--data-dir", default=str(BUNDLED / "tasks"),
                        help="directory of <task>_<split>.jsonl files, or 'hub' for lm-eval's hub datasets "
                             "(default: the bundled 200-row samples)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks (default: all seven)")
    parser.add_argument("--limit", type=int, default=None, help="rows per task (default: all)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=EvalConfig.batch_size, help="our batch size")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="time each side this many times, interleaved, and keep the fastest (busy machines)")
    return parser.parse_args(argv)


def lm_eval_default(model, tokenizer, tasks: list[str], data_dir: str | None, rows: dict[str, list[int]],
                    max_length: int) -> dict[str, list[int]]:
    """Per-row correctness from plain lm-eval: HFLM with its defaults (batch_size=1) on the same rows."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from rankadaptor.evaluate import TASKS, data_files, task_config

    files = data_files(data_dir, tasks) if data_dir else {}
    manager = TaskManager(include_defaults=False)
    loaded = manager.load([task_config(name, files.get(name)) for name in tasks])["tasks"]
    lm = HFLM(pretrained=model, tokenizer=tokenizer, max_length=max_length)
    results = lm_eval.simple_evaluate(model=lm, tasks=list(loaded.values()), task_manager=manager, samples=rows)
    return {name: [int(s[TASKS[name].metric]) for s in sorted(results["samples"][name], key=lambda s: s["doc_id"])]
            for name in tasks}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from rankadaptor.evaluate import EvalConfig, evaluate
    from rankadaptor.modeling import load_model, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = None if args.data_dir == "hub" else args.data_dir
    config = EvalConfig(tasks=args.tasks.split(","), data_dir=data_dir, split="all", limit=args.limit,
                        batch_size=args.batch_size)
    config.validate()
    device = resolve_device(args.device)
    model, tokenizer = load_model(args.model, device=device)
    if args.shape:  # same dtype as load_model gives the evaluate stage
        model = pruned_model(SHAPES[args.shape], 0.33, 2048, device, model.dtype)[0].eval()
    max_length = model.config.max_position_embeddings

    evaluate(model, tokenizer, EvalConfig(tasks=config.tasks, data_dir=data_dir, split="all", limit=2))  # warm-up
    ours_seconds, baseline_seconds = [], []
    for _ in range(args.repeats):
        ours = evaluate(model, tokenizer, config)
        ours_seconds.append(ours["seconds"])
        rows = {name: task["row_ids"] for name, task in ours["tasks"].items()}
        start = time.perf_counter()
        baseline = lm_eval_default(model, tokenizer, config.tasks, data_dir, rows, max_length)
        baseline_seconds.append(time.perf_counter() - start)
    ours_time, baseline_time = min(ours_seconds), min(baseline_seconds)

    n_rows = sum(len(r) for r in rows.values())
    name = f"random-init {args.shape} shape" if args.shape else args.model
    print(f"\nmodel {name} on {model.device}, torch threads {torch.get_num_threads()}, max_length {max_length}\n")
    print("| task | metric | rows | ours | lm-eval default | rows differing |")
    print("|---|---|---:|---:|---:|---:|")
    differing = 0
    for name, task in ours["tasks"].items():
        diff = sum(a != b for a, b in zip(task["rows"], baseline[name]))
        differing += diff
        print(f"| {name} | {task['metric']} | {task['n']} | {task['value']:.4f} | "
              f"{sum(baseline[name]) / len(baseline[name]):.4f} | {diff} |")
    print("\n| setting | seconds | examples/s |")
    print("|---|---:|---:|")
    print(f"| ours (batch_size={config.batch_size}) | {ours_time:.2f} | {n_rows / ours_time:.1f} |")
    print(f"| lm-eval default (batch_size=1) | {baseline_time:.2f} | {n_rows / baseline_time:.1f} |")
    print(f"\nspeedup: {baseline_time / ours_time:.2f}x (fastest of {args.repeats} run(s) each)")
    print(f"scores identical: {differing == 0} ({differing} of {n_rows} rows differ)")
    return 0 if differing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
