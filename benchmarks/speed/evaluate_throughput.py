"""Throughput of our evaluate stage against lm-eval's HF model at the batch size a user would pick: its
`auto`, or the fastest of 8/16/32/64, each measured; same model, tasks and rows, in one run; checks that
every row is scored the same.

Both sides do the same work and are timed the same way: from loading the tasks (data files included) to
the last score, through lm-eval's `evaluator.evaluate` (ours calls it too; `simple_evaluate` would add an
environment probe of over a second to the baseline). One small warm-up evaluation runs first (the first
read of each data file converts it to Arrow, which neither side should pay). With --repeats the settings
alternate and the fastest run of each counts. Prints markdown tables; --json PATH writes the figures. Exits
with status 1 when a row's score differs between ours and the fastest baseline or the baseline at our
batch size.

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
import json
import os
import sys
import time

from benchmarks.speed.shapes import SHAPES, pruned_model

BASELINE_SIZES = ("auto", "8", "16", "32", "64")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from rankadaptor.evaluate.config import EvalConfig
    from rankadaptor.evaluate.tasks import TASKS
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
    parser.add_argument("--baseline-sizes", default=",".join(BASELINE_SIZES),
                        help="lm-eval batch sizes to measure; the fastest is the baseline")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="time each setting this many times, interleaved, and keep the fastest (busy machines)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    args.baseline_sizes = [s.strip() for s in args.baseline_sizes.split(",") if s.strip()]
    bad = [s for s in args.baseline_sizes if not (s == "auto" or s.isdigit() and int(s) > 0)]
    if bad or not args.baseline_sizes:
        parser.error(f"--baseline-sizes: {bad or 'empty'}; use 'auto' or positive integers")
    return args


def lm_eval_hf(model, tokenizer, config, max_length: int, batch_size: str) -> tuple[dict[str, list[int]], float]:
    """Per-row correctness and seconds of plain lm-eval: HFLM at batch_size on the rows ours scored (its
    `samples`), timed from loading the tasks to the last score."""
    import lm_eval.evaluator
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from rankadaptor.evaluate.harness import task_config
    from rankadaptor.evaluate.tasks import TASKS, data_files

    start = time.perf_counter()
    files = data_files(config.data_dir, config.tasks) if config.data_dir else {}
    manager = TaskManager(include_defaults=False)
    tasks = manager.load([task_config(name, files.get(name)) for name in config.tasks])["tasks"]
    for task in tasks.values():
        task.set_config(key="num_fewshot", value=0)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, max_length=max_length,
              batch_size=batch_size if batch_size == "auto" else int(batch_size))
    with torch.inference_mode():
        results = lm_eval.evaluator.evaluate(lm=lm, task_dict={"tasks": tasks}, samples=config.samples)
    seconds = time.perf_counter() - start
    return {name: [int(s[TASKS[name].metric]) for s in sorted(results["samples"][name], key=lambda s: s["doc_id"])]
            for name in config.tasks}, seconds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from rankadaptor.evaluate.config import EvalConfig
    from rankadaptor.evaluate.harness import evaluate
    from rankadaptor.models.loading import load_model, resolve_device

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
    model.config.use_cache = False  # as ours runs: no KV cache is needed to score whole sequences

    evaluate(model, tokenizer, EvalConfig(tasks=config.tasks, data_dir=data_dir, split="all", limit=2))  # warm-up
    seconds: dict[str, list[float]] = {"ours": [], **{size: [] for size in args.baseline_sizes}}
    scores: dict[str, dict[str, list[int]]] = {}
    for _ in range(args.repeats):
        ours = evaluate(model, tokenizer, config)
        seconds["ours"].append(ours["seconds"])
        config.samples = {name: task["row_ids"] for name, task in ours["tasks"].items()}
        scores["ours"] = {name: task["rows"] for name, task in ours["tasks"].items()}
        for size in args.baseline_sizes:
            scores[size], elapsed = lm_eval_hf(model, tokenizer, config, max_length, size)
            seconds[size].append(elapsed)
    best = {key: min(values) for key, values in seconds.items()}
    fastest = min(args.baseline_sizes, key=lambda s: best[s])
    n_rows = sum(len(r) for r in scores["ours"].values())
    differing = {key: sum(a != b for name in config.tasks for a, b in zip(scores["ours"][name], rows[name]))
                 for key, rows in scores.items()}

    name = f"random-init {args.shape} shape" if args.shape else args.model
    print(f"\nmodel {name} on {model.device} ({model.dtype}), torch threads {torch.get_num_threads()}, "
          f"max_length {max_length}\n")
    print(f"| task | metric | rows | ours | lm-eval batch_size={fastest} | rows differing |")
    print("|---|---|---:|---:|---:|---:|")
    for task_name, task in ours["tasks"].items():
        baseline = scores[fastest][task_name]
        diff = sum(a != b for a, b in zip(task["rows"], baseline))
        print(f"| {task_name} | {task['metric']} | {task['n']} | {task['value']:.4f} | "
              f"{sum(baseline) / len(baseline):.4f} | {diff} |")
    print("\n| setting | seconds | examples/s | vs fastest lm-eval | rows differing from ours |")
    print("|---|---:|---:|---:|---:|")
    for key in ["ours", *args.baseline_sizes]:
        label = f"ours (batch_size={config.batch_size})" if key == "ours" else f"lm-eval HFLM batch_size={key}"
        print(f"| {label}{' (fastest)' if key == fastest else ''} | {best[key]:.2f} | {n_rows / best[key]:.1f} | "
              f"{best[fastest] / best[key]:.2f}x | {differing[key]} |")
    speedup = best[fastest] / best["ours"]
    checked = [fastest] + ([str(config.batch_size)] if str(config.batch_size) in args.baseline_sizes else [])
    identical = all(differing[key] == 0 for key in checked)
    print(f"\nspeedup vs lm-eval at its fastest batch size ({fastest}): {speedup:.2f}x "
          f"(fastest of {args.repeats} run(s) each; timed from task loading to the last score, both sides)")
    print(f"scores identical: {identical} (against lm-eval at batch size {', '.join(checked)}; "
          f"{n_rows} rows)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": name, "device": str(device), "dtype": str(model.dtype), "rows": n_rows,
                       "tasks": config.tasks, "limit": args.limit, "our_batch_size": config.batch_size,
                       "seconds": best, "all_seconds": seconds, "fastest_baseline": fastest, "speedup": speedup,
                       "rows_differing": differing, "scores_identical": identical}, f, indent=1)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
