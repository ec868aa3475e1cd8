"""Training throughput of our recover loop, and of each of its speed levers, against what an LLM-Pruner or
peft user runs: Hugging Face `Trainer` with `group_by_length=True`, micro-batches of 4 padded by
`DataCollatorForSeq2Seq(pad_to_multiple_of=8)` (LLM-Pruner's collator), bf16 on GPU, fused AdamW, on the
same width-pruned LLaMA, non-uniform rank vector (LoRA alpha = 2r, dropout 0.05, all seven projections)
and examples, in one process.

Every method runs the same two phases from fresh adapters: an untimed warm-up (CUDA start-up, compilation)
of --warmup-steps steps on its own examples, then the timed phase: one epoch over the same --steps x
--batch-size examples (so both sides train on exactly the same examples in the timed window; each orders
them its own way). Real tokens are the examples' lengths, counted the same way for all. Afterwards each
method's loss on held-out examples that no method trained on is compared with the baseline's: the check
passes when it is within --loss-tol x (how much the baseline's training lowered that held-out loss).

The model is random-init (throughput does not depend on the weights): by default the 1.1B LLaMA shape
with a third of the MLP channels and one of the four KV groups of layers [4, 20) removed (20% of the
parameters). The data are synthetic instruction examples: lognormal lengths around an Alpaca-like
median, cut at the cutoff, the prompt masked from the loss, Zipf-distributed tokens (so the loss falls).
MFU = 4 * N * real tokens/s / peak, N = the parameters without the input embedding: LoRA does the
forward (2N) and the input gradients (2N) of the frozen matrices but not their weight gradients.

    python -m benchmarks.speed.recover_throughput --tiny                          # CPU smoke run
    python -m benchmarks.speed.recover_throughput --device cuda --json out.json   # the 1.1B shape on one GPU
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field

import torch
from benchmarks.speed.shapes import SHAPES, pruned_model

# variant -> (row name, options over ours' defaults: TrainSettings' packing/liger/prefetch/compile, the
# adapter's dropout, the model's attention implementation)
VARIANTS = {  # cheapest first: a run cut short by a time limit keeps the most rows
    "ours": ("ours", {}),
    "packing": ("ours + packing (sdpa)", {"packing": True}),
    "packing-flex": ("ours + packing (flex_attention)", {"packing": True, "attention": "flex_attention"}),
    "dropout0": ("ours + dropout 0", {"dropout": 0.0}),
    "prefetch": ("ours + prefetch", {"prefetch": True}),
    "liger": ("ours + liger", {"liger": True}),
    "compile": ("ours + compile", {"compile": True}),
    "all": ("ours + all (packing flex, liger, dropout 0, compile, prefetch)",
            {"packing": True, "attention": "flex_attention", "liger": True, "dropout": 0.0, "compile": True,
             "prefetch": True}),
}
BASELINE = "HF Trainer (group_by_length, micro-batch 4, pad x8)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny model and few steps (CPU smoke run)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--ratio", type=float, default=0.33,
                        help="width pruning ratio of the pruned layers (0.33: 20%% of the 1.1B's parameters)")
    parser.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default 16; tiny 6)")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed steps first, on other examples")
    parser.add_argument("--batch-size", type=int, default=None, help="examples per step (default 64; tiny 8)")
    parser.add_argument("--micro-batch-size", type=int, default=4, help="the baseline's examples per forward "
                                                                        "(LLM-Pruner: 4)")
    parser.add_argument("--micro-batch-tokens", type=int, default=None,
                        help="ours: most tokens per forward (default 4096, RecoverConfig's; tiny 512)")
    parser.add_argument("--cutoff", type=int, default=None, help="maximum tokens per example (default 256; tiny 64)")
    parser.add_argument("--median-length", type=float, default=None,
                        help="median example length (default 0.42 * cutoff, ~108 at 256: Alpaca-like)")
    parser.add_argument("--sigma", type=float, default=0.6, help="lognormal sigma of the lengths")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (high: the model is random)")
    parser.add_argument("--heldout", type=int, default=None, help="held-out examples (default 128; tiny 32)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--corrupt", default=None, metavar="VARIANT",
                        help="train VARIANT ('baseline' or one of --variants) on random labels: the quality "
                             "check must then fail")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="peak bf16 dense TFLOP/s (H100/H200 SXM)")
    parser.add_argument("--loss-tol", type=float, default=0.1,
                        help="held-out loss tolerance, as a fraction of the baseline's held-out improvement")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, full, tiny in (("steps", 16, 6), ("batch_size", 64, 8), ("cutoff", 256, 64),
                             ("micro_batch_tokens", 4096, 512), ("heldout", 128, 32)):
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else full)
    args.median_length = args.median_length or 0.42 * args.cutoff
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; accepted: {list(VARIANTS)}")
    if args.corrupt not in (None, "baseline", *args.variants):
        parser.error(f"--corrupt={args.corrupt!r}: use 'baseline' or one of the variants run")
    if args.batch_size % args.micro_batch_size:
        parser.error(f"--batch-size={args.batch_size} must be a multiple of --micro-batch-size={args.micro_batch_size}")
    if args.micro_batch_tokens < args.cutoff:
        parser.error(f"--micro-batch-tokens={args.micro_batch_tokens} must be at least --cutoff={args.cutoff}")
    return args


def synthetic_examples(n: int, vocab: int, cutoff: int, median: float, sigma: float, seed: int) -> list[dict]:
    """Instruction-like examples: BOS, prompt (masked), response, EOS; Zipf-distributed token ids (the
    Zipf law's order is fixed, so every seed draws from the same distribution)."""
    from rankadaptor.recover.batches import IGNORE

    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    order = torch.randperm(vocab - 3, generator=torch.Generator().manual_seed(0))
    zipf = 1.0 / torch.arange(1, vocab - 2, dtype=torch.float)[order]
    examples = []
    for _ in range(n):
        length = min(cutoff, max(8, round(rng.lognormvariate(math.log(median), sigma))))
        ids = [1] + (torch.multinomial(zipf, length - 2, replacement=True, generator=gen) + 3).tolist() + [2]
        prompt = round(length * rng.uniform(0.3, 0.6))
        examples.append({"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]})
    return examples


def corrupted(examples: list[dict], vocab: int, seed: int) -> list[dict]:
    """The same examples with every label token replaced by a uniformly random one: garbage to train on."""
    from rankadaptor.recover.batches import IGNORE

    rng = random.Random(seed + 1)
    return [{**e, "labels": [t if t == IGNORE else rng.randrange(3, vocab) for t in e["labels"]]} for e in examples]


@dataclass
class Result:
    method: str
    options: dict
    seconds: float = math.nan  # the timed phase, wall clock, GPU synchronised
    real_tokens: int = 0
    padded_tokens: int = 0
    peak_memory: int = 0  # bytes
    heldout_loss: float = math.nan
    compiled_graphs: int = 0
    error: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.real_tokens / self.seconds if self.seconds > 0 else math.nan


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the process's peak so far (Linux: KiB)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def heldout_loss(model, examples: list[dict], device: torch.device, rows: int = 8) -> float:
    """Mean loss per label token over the held-out examples, eval mode (no dropout), the same for every method."""
    from rankadaptor.recover.batches import IGNORE, collate

    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for s in range(0, len(examples), rows):
            batch = {k: v.to(device) for k, v in collate(examples[s:s + rows], 0).items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               use_cache=False).logits.float()
            labels = batch["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels.flatten(),
                                                     ignore_index=IGNORE, reduction="sum")
            total, count = total + float(loss), count + int((labels != IGNORE).sum())
    model.train(was_training)
    return total / count


def hf_trainer(peft_model, tokenizer, warm: list[dict], timed_examples: list[dict], args, device: torch.device,
               result: Result) -> None:
    """The baseline, as LLM-Pruner's post-training script runs it (its optimizer adamw_torch made fused,
    the faster variant; right padding so positions are those of ours; no evaluation or checkpoints)."""
    from transformers import DataCollatorForSeq2Seq, PrinterCallback, Trainer, TrainingArguments

    padded = [0]
    seq2seq = DataCollatorForSeq2Seq(tokenizer, pad_to_multiple_of=8, return_tensors="pt", padding=True)

    def collator(features):
        batch = seq2seq(features)
        padded[0] += batch["input_ids"].numel()
        return batch

    fields = TrainingArguments.__dataclass_fields__  # transformers 5.2x renamed group_by_length
    grouping = ({"train_sampling_strategy": "group_by_length"} if "train_sampling_strategy" in fields
                else {"group_by_length": True})

    def run(examples: list[dict], steps: int, output_dir: str) -> None:
        training = TrainingArguments(
            output_dir=output_dir, per_device_train_batch_size=args.micro_batch_size,
            gradient_accumulation_steps=args.batch_size // args.micro_batch_size, max_steps=steps,
            learning_rate=args.lr, warmup_steps=int(0.06 * steps), lr_scheduler_type="linear", weight_decay=0.0,
            max_grad_norm=1.0, bf16=device.type == "cuda", use_cpu=device.type == "cpu",
            optim="adamw_torch_fused" if device.type == "cuda" else "adamw_torch", **grouping,
            logging_steps=10, save_strategy="no", eval_strategy="no", report_to="none", seed=args.seed,
            disable_tqdm=True, remove_unused_columns=False, dataloader_pin_memory=device.type == "cuda")
        rows = [{**e, "attention_mask": [1] * len(e["input_ids"])} for e in examples]
        trainer = Trainer(model=peft_model, args=training, train_dataset=rows, data_collator=collator)
        trainer.remove_callback(PrinterCallback)  # its log lines would break up the table
        trainer.train()

    with tempfile.TemporaryDirectory() as tmp:
        run(warm, args.warmup_steps, f"{tmp}/warm")
        sync(device)
        padded[0] = 0
        start = time.perf_counter()
        run(timed_examples, args.steps, f"{tmp}/timed")
        sync(device)
        result.seconds = time.perf_counter() - start
    result.padded_tokens = padded[0]


def ours(peft_model, warm: list[dict], timed_examples: list[dict], args, device: torch.device, result: Result,
         options: dict) -> None:
    """Our recover stage's loop (rankadaptor.recover.train.train) with the variant's options."""
    from rankadaptor.recover.train import TrainSettings, train

    settings = {k: v for k, v in options.items() if k in ("packing", "liger", "prefetch", "compile")}

    def run(examples: list[dict], steps: int, tmp: str):
        config = TrainSettings(lr=args.lr, epochs=1, batch_size=args.batch_size,
                               micro_batch_tokens=args.micro_batch_tokens, warmup_steps=int(0.06 * steps),
                               max_grad_norm=1.0, save_steps=10 ** 9, seed=args.seed, **settings)
        return train(peft_model, examples, config, 0, f"{tmp}/checkpoint")

    with tempfile.TemporaryDirectory() as tmp:
        warm_log = run(warm, args.warmup_steps, f"{tmp}/warm")
        sync(device)
        start = time.perf_counter()
        log = run(timed_examples, args.steps, f"{tmp}/timed")
        sync(device)
        result.seconds = time.perf_counter() - start
    result.padded_tokens, result.compiled_graphs = log.padded_tokens, warm_log.compiled_graphs + log.compiled_graphs
    result.extra["graphs_in_timed_phase"] = log.compiled_graphs


def measure(key: str, method: str, options: dict, base_model, rank_vector: list[int], data: dict, tokenizer, args,
            device: torch.device) -> Result:
    """One method from fresh adapters on the shared base model; a failure is recorded, not raised."""
    from rankadaptor.recover.config import RecoverConfig
    from rankadaptor.recover.stage import add_adapters

    result = Result(method, options)
    if options.get("liger") and device.type != "cuda":
        result.error = "skipped: liger-kernel needs a CUDA GPU"
        return result
    if options.get("attention") == "flex_attention" and device.type != "cuda":
        result.error = "skipped: FlexAttention has no backward on CPU"
        return result
    corrupt = args.corrupt == key
    warm, timed_examples = (data["warm"], data["corrupt"] if corrupt else data["timed"])
    config = RecoverConfig(data="synthetic", dropout=options.get("dropout", RecoverConfig.dropout), seed=args.seed)
    base_model.set_attn_implementation(options.get("attention", "sdpa"))
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    peft_model = add_adapters(base_model, config, rank_vector, args.warmup_steps + args.steps)
    try:
        if method == BASELINE:
            hf_trainer(peft_model, tokenizer, warm, timed_examples, args, device, result)
        else:
            ours(peft_model, warm, timed_examples, args, device, result, options)
        result.real_tokens = sum(len(e["input_ids"]) for e in timed_examples)
        result.peak_memory = peak_memory(device)
        base_model.set_attn_implementation("sdpa")  # every method's held-out loss computed the same way
        result.heldout_loss = heldout_loss(peft_model, data["heldout"], device)
    except Exception as e:  # one failing variant must not lose the others' figures
        result.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        traceback.print_exc()
    finally:
        peft_model.unload()
        base_model.set_attn_implementation("sdpa")
    return result


def summary(results: list[Result], initial_loss: float, args, n_params: int) -> dict:
    base = results[0]
    improvement = initial_loss - base.heldout_loss
    rows = []
    for r in results:
        ok = r.error is None and math.isfinite(r.heldout_loss) and improvement > 0 and \
            abs(r.heldout_loss - base.heldout_loss) <= args.loss_tol * improvement
        rows.append({**asdict(r), "real_tokens_per_s": r.tokens_per_second,
                     "padded_tokens_per_s": r.padded_tokens / r.seconds if r.seconds > 0 else math.nan,
                     "real_fraction": r.real_tokens / r.padded_tokens if r.padded_tokens else math.nan,
                     "mfu": 4 * n_params * r.tokens_per_second / (args.peak_tflops * 1e12),
                     "speedup": r.tokens_per_second / base.tokens_per_second,
                     "quality_ok": bool(ok)})
    return {"initial_heldout_loss": initial_loss, "baseline_improvement": improvement, "loss_tol": args.loss_tol,
            "quality_ok": all(row["quality_ok"] for row in rows if not (row["error"] or "").startswith("skipped")),
            "rows": rows}


def print_row(row: dict, tol: float) -> None:
    if row["error"]:
        print(f"| {row['method']} | {row['error']} | | | | | | | |", flush=True)
        return
    print(f"| {row['method']} | {row['real_tokens_per_s']:,.0f} | {row['speedup']:.2f}x | "
          f"{row['real_fraction']:.2f} | {100 * row['mfu']:.3g}% | {row['peak_memory'] / 2 ** 30:.2f} | "
          f"{row['heldout_loss']:.4f} | {'yes' if row['quality_ok'] else 'NO'} | {row['compiled_graphs']} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from transformers import AutoTokenizer

    from rankadaptor.job import BUNDLED
    from rankadaptor.models.loading import resolve_device
    from rankadaptor.recover.ranks import increasing_schedule
    from rankadaptor.widths import count_parameters

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    shape = SHAPES["tiny" if args.tiny else "1.1b"]
    model, pruned = pruned_model(shape, args.ratio, args.cutoff, device,
                                 torch.bfloat16 if device.type == "cuda" else torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(BUNDLED / "aidreams-260k")  # only the collator's padding
    tokenizer.pad_token_id, tokenizer.padding_side = 0, "right"
    n_layers = shape["num_hidden_layers"]  # the paper's layout: rank 8 outside, 4/6/10/12 by quarters inside
    rank_vector = [8] * pruned.start + increasing_schedule(len(pruned)) + [8] * (n_layers - pruned.stop)

    def draw(n, seed):
        return synthetic_examples(n, shape["vocab_size"], args.cutoff, args.median_length, args.sigma, seed)

    data = {"warm": draw(args.warmup_steps * args.batch_size, args.seed + 1),
            "timed": draw(args.steps * args.batch_size, args.seed), "heldout": draw(args.heldout, args.seed + 2)}
    data["corrupt"] = corrupted(data["timed"], shape["vocab_size"], args.seed)
    n_params = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    full_width = {"heads": shape["num_attention_heads"], "kv_heads": shape["num_key_value_heads"],
                  "intermediate": shape["intermediate_size"]}
    removed = 1 - sum(p.numel() for p in model.parameters()) / count_parameters(model.config, [full_width] * n_layers)
    model.set_attn_implementation("sdpa")
    initial = heldout_loss(model, data["heldout"], device)
    lengths = [len(e["input_ids"]) for e in data["timed"]]

    print(f"\n{'tiny' if args.tiny else '1.1B'} LLaMA shape, layers {pruned.start}..{pruned.stop - 1} pruned by ratio "
          f"{args.ratio:g} ({removed:.1%} of the parameters removed): {n_params / 1e6:,.1f}M parameters without "
          f"the input embedding, on {device} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'})")
    print(f"rank vector {rank_vector}; timed: {args.steps} steps of {args.batch_size} examples (median length "
          f"{sorted(lengths)[len(lengths) // 2]}, mean {sum(lengths) / len(lengths):.0f}, cutoff {args.cutoff}) after "
          f"{args.warmup_steps} untimed steps; baseline micro-batches of {args.micro_batch_size}, ours of at most "
          f"{args.micro_batch_tokens} tokens; held-out loss on {args.heldout} other examples, "
          f"{initial:.4f} before training{f'; CORRUPTED: {args.corrupt} trains on random labels' if args.corrupt else ''}\n")
    print("| method | real tokens/s | vs baseline | real/padded | MFU | peak memory (GiB) | held-out loss | "
          "quality | compiled graphs |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|", flush=True)
    results = []
    for key, (method, options) in [("baseline", (BASELINE, {}))] + [(v, VARIANTS[v]) for v in args.variants]:
        results.append(measure(key, method, options, model, rank_vector, data, tokenizer, args, device))
        report = summary(results, initial, args, n_params)
        print_row(report["rows"][-1], args.loss_tol)
        if args.json:  # after every method, so a run cut short keeps what it measured
            with open(args.json, "w") as f:
                json.dump({"settings": {**vars(args), "device": str(device), "n_params": n_params,
                                        "rank_vector": rank_vector}, **report}, f, indent=1)
    print(f"\nMFU = 4 * N * real tokens/s / {args.peak_tflops:g} TFLOP/s, N = {n_params:,}; peak memory: "
          f"{'max_memory_allocated' if device.type == 'cuda' else 'process peak RSS (cumulative)'}; quality: "
          f"held-out loss within {args.loss_tol:g} x the baseline's improvement "
          f"({report['baseline_improvement']:.4f}) of the baseline's")
    print(f"held-out quality check passed: {report['quality_ok']}")
    failed = [r.method for r in results if r.error and not r.error.startswith("skipped")]
    if failed:
        print(f"failed: {failed}")
    return 0 if report["quality_ok"] and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
