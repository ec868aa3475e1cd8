"""Prefix-shared scoring (evaluate/prefix.py) against lm-eval's HFLM at each batch size, task by task, in
one run: seconds, tokens through the model, and a per-row check of every score.

Every setting scores the same rows of the same tasks through lm-eval's `evaluator.evaluate` (lm-eval builds
the requests, tokenises them and computes acc / acc_norm on both sides); the timer runs from there to the
last score, the task loading (same on both sides) is left out. "ours" is our HFLM subclass with
shared_prefix on; the baselines are plain HFLM at batch sizes auto, 8, 16, 32, 64, and the fastest of them
(total seconds) counts. Tokens are counted at the model's input (padding included, as it is computed). The
check compares each answer's log-likelihood (within --tol), its is-greedy flag and each row's acc / acc_norm
against every baseline. Exit status 1 if any differs.

    python -m benchmarks.speed.prefix_scoring                      # bundled tiny model, all 7 tasks, all rows
    python -m benchmarks.speed.prefix_scoring --shape 512x8 --limit 40   # random-init LLaMA, hidden 512, 8 layers
    python -m benchmarks.speed.prefix_scoring --tasks arc_easy,piqa --limit 20 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

BASELINE_SIZES = ("auto", "8", "16", "32", "64")
# Random-init LLaMA shapes with the bundled tokenizer (scores at chance; time per token as a real model's).
SHAPES = {"512x8": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
                        intermediate_size=1376, vocab_size=32000, max_position_embeddings=2048)}


def parse_args(argv=None) -> argparse.Namespace:
    from rankadaptor.evaluate.tasks import TASKS
    from rankadaptor.job import BUNDLED

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model", default=str(BUNDLED / "aidreams-260k"), help="checkpoint (default: bundled)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None,
                        help="a random-init LLaMA of this shape instead of --model (its tokenizer is kept)")
    parser.add_argument("--data-dir", default=str(BUNDLED / "tasks"), help="<task>_<split>.jsonl directory")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated (default: all seven)")
    parser.add_argument("--limit", type=int, default=None, help="rows per task (default: all)")
    parser.add_argument("--baseline-sizes", default=",".join(BASELINE_SIZES), help="lm-eval HFLM batch sizes")
    parser.add_argument("--batch-tokens", type=int, default=None, help="ours: tokens per packed row "
                                                                       "(default: EvalConfig.batch_tokens)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per setting, interleaved; fastest counts")
    parser.add_argument("--tol", type=float, default=1e-4, help="largest allowed log-likelihood difference")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.baseline_sizes = [s for s in args.baseline_sizes.split(",") if s]
    return args


def load(args):
    import torch

    from rankadaptor.models.loading import load_model

    model, tokenizer = load_model(args.model, device=torch.device("cpu"))
    if args.shape:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**SHAPES[args.shape], bos_token_id=1, eos_token_id=2, pad_token_id=0))
    model.config.use_cache = False
    return model.eval(), tokenizer


def load_tasks(args, names):
    from lm_eval.tasks import TaskManager

    from rankadaptor.evaluate.harness import task_config
    from rankadaptor.evaluate.tasks import data_files

    files = data_files(args.data_dir, names)
    tasks = TaskManager(include_defaults=False).load([task_config(n, files[n]) for n in names])["tasks"]
    for task in tasks.values():
        task.set_config(key="num_fewshot", value=0)
    return tasks


def make_lm(setting, model, tokenizer, args):
    from lm_eval.models.huggingface import HFLM

    from rankadaptor.evaluate.config import EvalConfig
    from rankadaptor.evaluate.harness import _lm_class

    max_length = model.config.max_position_embeddings
    if setting == "ours":
        lm = _lm_class()(pretrained=model, tokenizer=tokenizer, batch_size=EvalConfig.batch_size,
                         max_length=max_length, shared_prefix=True,
                         batch_tokens=args.batch_tokens or EvalConfig.batch_tokens)
        assert lm.shared_prefix
        return lm
    return HFLM(pretrained=model, tokenizer=tokenizer, max_length=max_length,
                batch_size=setting if setting == "auto" else int(setting))


def scorable_rows(name, model, tokenizer, args) -> list[int]:
    """The first --limit rows of a task but those with an answer longer than the window (HFLM asserts on
    them; our evaluate() reports them as skipped)."""
    import lm_eval.evaluator
    import torch

    tasks = load_tasks(args, [name])
    n_rows = len(tasks[name].eval_docs)
    lm = make_lm("ours", model, tokenizer, args)
    with torch.inference_mode():
        results = lm_eval.evaluator.evaluate(lm=lm, task_dict={"tasks": tasks},
                                             samples={name: list(range(min(n_rows, args.limit or n_rows)))})
    return sorted(s["doc_id"] for s in results["samples"][name]
                  if not any(tuple(a) in lm.unscorable for a in s["arguments"]))


def run_one(setting, name, rows, model, tokenizer, args) -> tuple[float, float, int, list[dict]]:
    """Seconds end to end and in the scoring (_loglikelihood_tokens: the part prefix sharing schedules),
    tokens through the model (padding included), and the sorted samples of one task's rows."""
    import lm_eval.evaluator
    import torch

    tasks = load_tasks(args, [name])
    lm = make_lm(setting, model, tokenizer, args)
    tokens, scoring = [0], [0.0]
    inner = lm._loglikelihood_tokens

    def timed(*a, **kw):
        t0 = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            scoring[0] += time.perf_counter() - t0

    lm._loglikelihood_tokens = timed

    def count(module, a, kw):
        ids = kw.get("input_ids", a[0] if a else None)
        tokens[0] += ids.numel()

    hook = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        start = time.perf_counter()
        with torch.inference_mode():
            results = lm_eval.evaluator.evaluate(lm=lm, task_dict={"tasks": tasks}, samples={name: rows})
        seconds = time.perf_counter() - start
    finally:
        hook.remove()
    return seconds, scoring[0], tokens[0], sorted(results["samples"][name], key=lambda s: s["doc_id"])


def compare(ours: list[dict], theirs: list[dict]) -> dict:
    """Largest log-likelihood difference, and counts of differing is-greedy flags and acc / acc_norm."""
    worst, greedy, metric = 0.0, 0, 0
    for a, b in zip(ours, theirs, strict=True):
        assert a["doc_id"] == b["doc_id"]
        for (ll_a, g_a), (ll_b, g_b) in zip(a["filtered_resps"], b["filtered_resps"], strict=True):
            worst = max(worst, 0.0 if ll_a == ll_b else abs(ll_a - ll_b) if math.isfinite(ll_a - ll_b) else math.inf)
            greedy += g_a != g_b
        metric += any(a[m] != b[m] for m in ("acc", "acc_norm") if m in b)
    return {"max_abs_ll_diff": worst, "greedy_differing": greedy, "rows_differing": metric}


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import torch

    import lm_eval.models.huggingface as hf

    hf.eval_logger.setLevel("ERROR")  # the per-request truncation warnings
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load(args)
    settings = ["ours", *args.baseline_sizes]
    # warm-up (converts each data file to Arrow once, neither side pays it) and the rows both sides can score
    rows = {name: scorable_rows(name, model, tokenizer, args) for name in args.tasks}
    seconds = {s: {t: math.inf for t in args.tasks} for s in settings}
    scoring = {s: {t: math.inf for t in args.tasks} for s in settings}
    tokens: dict[str, dict[str, int]] = {s: {} for s in settings}
    samples: dict[str, dict[str, list]] = {s: {} for s in settings}
    for _ in range(args.repeats):
        for name in args.tasks:
            for s in settings:
                elapsed, scored, tokens[s][name], samples[s][name] = run_one(s, name, rows[name], model,
                                                                             tokenizer, args)
                seconds[s][name] = min(seconds[s][name], elapsed)
                scoring[s][name] = min(scoring[s][name], scored)
    total = {s: sum(seconds[s].values()) for s in settings}
    total_scoring = {s: sum(scoring[s].values()) for s in settings}
    fastest = min(args.baseline_sizes, key=lambda s: total[s])
    checks = {s: {t: compare(samples["ours"][t], samples[s][t]) for t in args.tasks} for s in args.baseline_sizes}
    ok = all(c["max_abs_ll_diff"] <= args.tol and not c["greedy_differing"] and not c["rows_differing"]
             for per in checks.values() for c in per.values())

    label = f"random-init LLaMA {args.shape} ({SHAPES[args.shape]})" if args.shape else args.model
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\nmodel {label}, {n_params / 1e6:.1f}M parameters, {model.dtype}, CPU, torch threads "
          f"{torch.get_num_threads()}, max_length {model.config.max_position_embeddings}, "
          f"rows per task {args.limit or 'all'}, fastest of {args.repeats} run(s)\n")
    print("| setting | seconds, all tasks | vs fastest lm-eval | of which scoring | scoring vs fastest | "
          "max abs log-lik diff | greedy differing | rows (acc/acc_norm) differing |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| ours (shared prefix, packed) | {total['ours']:.2f} | {total[fastest] / total['ours']:.2f}x | "
          f"{total_scoring['ours']:.2f} | {total_scoring[fastest] / total_scoring['ours']:.2f}x | | | |")
    for s in args.baseline_sizes:
        c = [checks[s][t] for t in args.tasks]
        print(f"| lm-eval HFLM batch_size={s}{' (fastest)' if s == fastest else ''} | {total[s]:.2f} | "
              f"{total[fastest] / total[s]:.2f}x | {total_scoring[s]:.2f} | "
              f"{total_scoring[fastest] / total_scoring[s]:.2f}x | {max(x['max_abs_ll_diff'] for x in c):.2e} | "
              f"{sum(x['greedy_differing'] for x in c)} | {sum(x['rows_differing'] for x in c)} |")
    print(f"\nper task, ours against lm-eval HFLM batch_size={fastest}:\n")
    print("| task | rows | requests | tokens ours | tokens lm-eval | token ratio | seconds ours | "
          "seconds lm-eval | speedup | scoring s ours | scoring s lm-eval | scoring speedup |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in args.tasks:
        reqs = sum(len(x["filtered_resps"]) for x in samples["ours"][t])
        print(f"| {t} | {len(samples['ours'][t])} | {reqs} | {tokens['ours'][t]} | {tokens[fastest][t]} | "
              f"{tokens[fastest][t] / tokens['ours'][t]:.2f}x | {seconds['ours'][t]:.2f} | "
              f"{seconds[fastest][t]:.2f} | {seconds[fastest][t] / seconds['ours'][t]:.2f}x | "
              f"{scoring['ours'][t]:.2f} | {scoring[fastest][t]:.2f} | {scoring[fastest][t] / scoring['ours'][t]:.2f}x |")
    tok_o, tok_f = sum(tokens["ours"].values()), sum(tokens[fastest].values())
    print(f"| **total** | | | {tok_o} | {tok_f} | {tok_f / tok_o:.2f}x | {total['ours']:.2f} | "
          f"{total[fastest]:.2f} | {total[fastest] / total['ours']:.2f}x | {total_scoring['ours']:.2f} | "
          f"{total_scoring[fastest]:.2f} | {total_scoring[fastest] / total_scoring['ours']:.2f}x |")
    floor = max((compare(samples[a][t], samples[b][t])["max_abs_ll_diff"] for a in args.baseline_sizes
                 for b in args.baseline_sizes if a < b for t in args.tasks), default=0.0)
    print(f"\nfloat rounding floor: lm-eval against itself across its batch sizes, max abs log-lik diff {floor:.2e}")
    skipped = {t: n for t in args.tasks if (n := min(args.limit or 10**9, len(load_tasks(args, [t])[t].eval_docs))
                                           - len(rows[t]))}
    if skipped:
        print(f"\nrows left out on both sides (an answer longer than the window, which HFLM asserts on): {skipped}")
    print(f"\nscores identical (log-lik within {args.tol}, greedy and acc/acc_norm equal, every baseline): {ok}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": label, "threads": torch.get_num_threads(), "limit": args.limit,
                       "seconds": seconds, "scoring_seconds": scoring,
                       "tokens": tokens, "fastest": fastest, "speedup": total[fastest] / total["ours"],
                       "checks": checks, "identical": ok}, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
