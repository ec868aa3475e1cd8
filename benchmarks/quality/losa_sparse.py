"""Unstructured sparsity end to end on one model: dense, Wanda-pruned, and four recoveries side by side
in one process, each merged into a standalone checkpoint whose held-out perplexity and sparsity are
measured (the sparsity of what a server would run, not of the adapter-applied model).

Rows: plain LoRA at the uniform rank (the simple choice; merging fills the zeros), LoSA-masked LoRA at
the uniform rank, LoSA-masked LoRA with LoSA's reconstruction-error ranks (LoSA's recipe, one shot),
and plain LoRA with those ranks (the allocation alone). All use the same data, steps, seed and LoRA
budget (the ranks' parameters never exceed uniform --rank). Data: a self-distillation corpus sampled
from the dense model (train + held-out), as the bundled job uses.

    python -m benchmarks.quality.losa_sparse                       # the bundled model at 50%, CPU, a few minutes
    python -m benchmarks.quality.losa_sparse --nm 2:4 --seeds 0 1  # 2:4 instead, two recovery seeds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from rankadaptor.config import from_dict
from rankadaptor.data import sample_corpus
from rankadaptor.evaluate.perplexity import perplexity
from rankadaptor.models.loading import load_model
from rankadaptor.prune.config import PruneConfig
from rankadaptor.prune.stage import run_prune
from rankadaptor.prune.unstructured import projection_sparsity
from rankadaptor.recover.adapters import export_merged
from rankadaptor.recover.config import RecoverConfig
from rankadaptor.recover.stage import run_recover

BUNDLED = Path(__file__).resolve().parents[2] / "src" / "rankadaptor" / "bundled" / "aidreams-260k"
ROWS = {  # name -> (method, schedule)
    "lora (uniform)": ("lora", "uniform"),
    "losa-masked lora (uniform)": ("losa", "uniform"),
    "losa-masked lora (losa ranks)": ("losa", "losa"),
    "lora (losa ranks)": ("lora", "losa"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(BUNDLED), help="dense model (default: the bundled aidreams-260k)")
    parser.add_argument("--sparsity", type=float, default=0.5, help="unstructured sparsity (prune ratio)")
    parser.add_argument("--nm", default=None, help="N:M pattern instead, e.g. 2:4")
    parser.add_argument("--allocation", default="uniform", choices=["uniform", "rmi"], help="layer-wise sparsity")
    parser.add_argument("--rank", type=int, default=8, help="uniform rank; the LoSA ranks spend the same budget")
    parser.add_argument("--docs", type=int, default=320, help="self-distillation documents (a fifth held out)")
    parser.add_argument("--tokens", type=int, default=96, help="tokens per document")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="recovery seeds (mean over them)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    return parser.parse_args(argv)


def measure(model_dir: Path, heldout: list[str]) -> tuple[float, float]:
    model, tokenizer = load_model(str(model_dir))
    return perplexity(model, tokenizer, heldout, seq_len=64), projection_sparsity(model)


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="losa-bench-") as work:
        return _run(args, Path(work))


def _run(args: argparse.Namespace, work: Path) -> dict:
    started = time.time()
    dense, tokenizer = load_model(args.model)
    docs = sample_corpus(dense, tokenizer, args.docs, args.tokens, seed=0)
    n_heldout = max(2, len(docs) // 5)
    heldout, train = docs[:n_heldout], docs[n_heldout:]
    (work / "train.txt").write_text("\n\n".join(train))
    prune = {"model": args.model, "calibration": str(work / "train.txt"), "mode": "unstructured",
             "ratio": args.sparsity, "nm": args.nm or "", "sparsity_allocation": args.allocation, "device": args.device}
    report = run_prune(from_dict(PruneConfig, prune), str(work / "pruned"))
    rows = [{"method": "dense", "ppl": perplexity(dense, tokenizer, heldout, seq_len=64),
             "sparsity": projection_sparsity(dense), "ranks": None, "lora_params": 0}]
    ppl, sparsity = measure(work / "pruned", heldout)
    rows.append({"method": "pruned (wanda)", "ppl": ppl, "sparsity": sparsity, "ranks": None, "lora_params": 0})
    for name, (method, schedule) in ROWS.items():
        runs = []
        for seed in args.seeds:
            adapter, merged = work / f"{method}-{schedule}-{seed}", work / f"{method}-{schedule}-{seed}-merged"
            recover = {"data": str(work / "train.txt"), "method": method, "schedule": schedule, "rank": args.rank,
                       "cutoff": 128, "batch_size": 16, "micro_batch_tokens": 1024, "epochs": args.epochs,
                       "lr": args.lr, "save_steps": 1000, "seed": seed, "device": args.device}
            result = run_recover(from_dict(RecoverConfig, recover), str(work / "pruned"), str(adapter))
            export_merged(str(work / "pruned"), str(adapter), str(merged))
            runs.append((*measure(merged, heldout), result))
        rows.append({"method": name, "ppl": statistics.mean(r[0] for r in runs),
                     "ppl_runs": [r[0] for r in runs], "sparsity": min(r[1] for r in runs),
                     "ranks": runs[0][2]["rank_vector"], "lora_params": runs[0][2]["lora_params"]})
    return {"settings": vars(args), "reconstruction_error": report["reconstruction_error"],
            "pruned_sparsity": report["sparsity"], "rows": rows, "seconds": time.time() - started}


def table(result: dict) -> str:
    lines = ["| method | LoRA ranks | LoRA params | merged sparsity | held-out ppl |", "|---|---|---:|---:|---:|"]
    for row in result["rows"]:
        ppl = f"{row['ppl']:.2f}" + (f" ({', '.join(f'{p:.2f}' for p in row['ppl_runs'])})"
                                     if len(row.get("ppl_runs", [])) > 1 else "")
        lines.append(f"| {row['method']} | {row['ranks'] or '-'} | {row['lora_params']:,} | {row['sparsity']:.4f} | {ppl} |")
    errors = ", ".join(f"{e:.3f}" for e in result["reconstruction_error"])
    return "\n".join(lines) + f"\n\nper-layer reconstruction error (prune report): {errors}; {result['seconds']:.0f} s"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    with contextlib.redirect_stdout(sys.stderr):  # the stages' progress lines; stdout is the table or JSON
        result = run(args)
    print(json.dumps(result, default=str) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
