"""Training throughput of our recover loop against plain peft with an eager loop that pads each micro-batch
to its longest example (a multiple of 8: LLM-Pruner's recovery collator), on the same width-pruned LLaMA,
non-uniform rank vector and examples, in one process.

The model is random-init (throughput does not depend on the weights): by default the 1.1B LLaMA shape
(hidden 2048, 22 layers, 32 heads, 4 KV heads, MLP 5632) with a third of the MLP channels and one of
the four KV groups of layers [4, 20) removed, as LLM-Pruner would leave it: 20% of the parameters.
The data are synthetic instruction examples: lengths lognormal around an Alpaca-like median with a
long tail cut at the cutoff, the prompt part masked from the loss, tokens drawn from a Zipf law (so
the loss can fall). Throughput counts the steps after --untimed-steps (CUDA start-up, compilation).
MFU = 6 * N * tokens/s / peak, N = the model's parameters without the input embedding: the common
dense approximation (2N forward + 4N backward per token); LoRA skips the weight gradients of the
frozen matrices, so the work really done is nearer 4 * N per token.

    python benchmarks/recover_throughput.py --tiny                    # CPU smoke run, seconds
    python benchmarks/recover_throughput.py --device cuda --compile   # the 1.1B shape on one GPU
"""

from __future__ import annotations

import argparse
import math
import random
import resource
import sys
import tempfile
import time
from dataclasses import dataclass

import torch

from shapes import SHAPES, pruned_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny model and few steps (CPU smoke run)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--ratio", type=float, default=0.33,
                        help="width pruning ratio of the pruned layers (0.33: 20%% of the 1.1B's parameters)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per method (default 30; tiny 8)")
    parser.add_argument("--untimed-steps", type=int, default=3, help="first steps left out of the timing")
    parser.add_argument("--batch-size", type=int, default=None, help="examples per step (default 64; tiny 8)")
    parser.add_argument("--micro-batch-size", type=int, default=None,
                        help="the baseline's examples per forward (default 16; tiny 4); ours gets the same padded "
                             "tokens per forward, micro-batch-size x cutoff, as its micro_batch_tokens")
    parser.add_argument("--cutoff", type=int, default=None, help="maximum tokens per example (default 256; tiny 64)")
    parser.add_argument("--median-length", type=float, default=None,
                        help="median example length (default 0.42 * cutoff, ~108 at 256: Alpaca-like)")
    parser.add_argument("--sigma", type=float, default=0.6, help="lognormal sigma of the lengths")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (high: the model is random)")
    parser.add_argument("--compile", action="store_true", help="also time our loop under torch.compile")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="peak bf16 dense TFLOP/s (H100 SXM: 989)")
    parser.add_argument("--loss-tol", type=float, default=0.05, help="relative tolerance on the final losses")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, full, tiny in (("steps", 30, 8), ("batch_size", 64, 8), ("micro_batch_size", 16, 4), ("cutoff", 256, 64)):
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else full)
    args.median_length = args.median_length or 0.42 * args.cutoff
    if args.batch_size % args.micro_batch_size:
        parser.error(f"--batch-size={args.batch_size} must be a multiple of --micro-batch-size={args.micro_batch_size}")
    if not 0 <= args.untimed_steps < args.steps:
        parser.error(f"--untimed-steps={args.untimed_steps} must be in [0, --steps={args.steps})")
    return args


def synthetic_examples(n: int, vocab: int, cutoff: int, median: float, sigma: float, seed: int) -> list[dict]:
    """Instruction-like examples: BOS, prompt (masked), response, EOS; Zipf-distributed token ids."""
    from rankadaptor.recover.batches import IGNORE

    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    zipf = 1.0 / torch.arange(1, vocab - 2, dtype=torch.float)[torch.randperm(vocab - 3, generator=gen)]
    examples = []
    for _ in range(n):
        length = min(cutoff, max(8, round(rng.lognormvariate(math.log(median), sigma))))
        ids = [1] + (torch.multinomial(zipf, length - 2, replacement=True, generator=gen) + 3).tolist() + [2]
        prompt = round(length * rng.uniform(0.3, 0.6))
        examples.append({"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]})
    return examples


def padded_length(examples: list[dict], batch: list[int], multiple_of: int) -> int:
    return -(-max(len(examples[i]["input_ids"]) for i in batch) // multiple_of) * multiple_of


def step_tokens(examples: list[dict], micro_batches: list[list[int]], multiple_of: int) -> tuple[int, int]:
    """(real, padded) tokens of one step's micro-batches, each padded to its longest rounded up to multiple_of."""
    real = sum(len(examples[i]["input_ids"]) for batch in micro_batches for i in batch)
    return real, sum(len(batch) * padded_length(examples, batch, multiple_of) for batch in micro_batches)


@dataclass
class Result:
    method: str
    losses: list[float]
    seconds: float  # of the timed steps
    real_tokens: int  # of the timed steps
    padded_tokens: int
    peak_memory: int  # bytes


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the process's peak so far (Linux: KiB)


def timed(method: str, losses: list[float], step_seconds: list[float], tokens: list[tuple[int, int]], skip: int,
          device: torch.device) -> Result:
    return Result(method, losses, sum(step_seconds[skip:]), sum(t[0] for t in tokens[skip:]),
                  sum(t[1] for t in tokens[skip:]), peak_memory(device))


def plain_peft(model, lora_config, examples: list[dict], args, warmup: int, device: torch.device) -> Result:
    """The baseline: peft + an eager loop, random order, each micro-batch padded to its longest (x8)."""
    from peft import get_peft_model
    from transformers import get_linear_schedule_with_warmup

    from rankadaptor.recover.batches import collate

    torch.manual_seed(args.seed)
    peft_model = get_peft_model(model, lora_config)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, args.steps)
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(args.seed)).tolist()
    accum, micro = args.batch_size // args.micro_batch_size, args.micro_batch_size
    losses, seconds, tokens = [], [], []
    peft_model.train()
    for step in range(args.steps):
        start = time.perf_counter()
        micro_batches = [order[(step * accum + m) * micro:(step * accum + m + 1) * micro] for m in range(accum)]
        step_loss = 0.0
        for indices in micro_batches:
            batch = collate([examples[i] for i in indices], 0, padded_length(examples, indices, 8))
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = peft_model(**batch, use_cache=False).loss / accum
            loss.backward()
            step_loss += loss.item()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # ours reads its loss after the optimizer step: time the same work
        seconds.append(time.perf_counter() - start)
        losses.append(step_loss)
        tokens.append(step_tokens(examples, micro_batches, 8))
    peft_model.unload()
    return timed("plain peft, eager, padded per micro-batch", losses, seconds, tokens, args.untimed_steps, device)


def ours(model, lora_config, examples: list[dict], args, warmup: int, device: torch.device, compile: bool) -> Result:
    """Our recover stage's loop (rankadaptor.recover.train.train) on the same model, adapters and examples."""
    from peft import get_peft_model

    from rankadaptor.recover.train import TrainSettings, step_plan, train

    torch.manual_seed(args.seed)
    peft_model = get_peft_model(model, lora_config)
    settings = TrainSettings(lr=args.lr, epochs=1, batch_size=args.batch_size,
                             micro_batch_tokens=args.micro_batch_size * args.cutoff,
                             warmup_steps=warmup, max_grad_norm=1.0, save_steps=10 ** 9, seed=args.seed,
                             max_steps=args.steps, compile=compile)
    with tempfile.TemporaryDirectory() as tmp:
        log = train(peft_model, examples, settings, 0, f"{tmp}/checkpoint")
    tokens = [step_tokens(examples, step, 1) for step in step_plan(examples, settings)]
    assert (log.real_tokens, log.padded_tokens) == tuple(map(sum, zip(*tokens))), "token counts differ from train()"
    peft_model.unload()
    method = "ours: recover.train" + (" + torch.compile" if compile else "")
    return timed(method, log.losses, log.step_seconds, tokens, args.untimed_steps, device)


def print_table(results: list[Result], flops_per_token: float, peak: float, tail: int) -> None:
    print("| method | real tokens/s | padded tokens/s | peak memory (GiB) | MFU (real) | MFU (padded) | final loss |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        real, padded = r.real_tokens / r.seconds, r.padded_tokens / r.seconds
        print(f"| {r.method} | {real:,.0f} | {padded:,.0f} | {r.peak_memory / 2 ** 30:.2f} | "
              f"{100 * flops_per_token * real / peak:.3g}% | {100 * flops_per_token * padded / peak:.3g}% | "
              f"{sum(r.losses[-tail:]) / tail:.4f} |")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rankadaptor.modeling import count_parameters, resolve_device
    from rankadaptor.recover import RecoverConfig, adapter_config
    from rankadaptor.recover.ranks import increasing_schedule

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    shape = SHAPES["tiny" if args.tiny else "1.1b"]
    model, pruned = pruned_model(shape, args.ratio, args.cutoff, device,
                                 torch.bfloat16 if device.type == "cuda" else torch.float32)
    n_layers = shape["num_hidden_layers"]  # the paper's layout: rank 8 outside, 4/6/10/12 by quarters inside
    rank_vector = [8] * pruned.start + increasing_schedule(len(pruned)) + [8] * (n_layers - pruned.stop)
    lora_config = adapter_config(RecoverConfig(data="synthetic"), rank_vector, args.steps)
    examples = synthetic_examples(args.steps * args.batch_size, shape["vocab_size"], args.cutoff, args.median_length,
                                  args.sigma, args.seed)
    n_params = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    full_width = {"heads": shape["num_attention_heads"], "kv_heads": shape["num_key_value_heads"],
                  "intermediate": shape["intermediate_size"]}
    unpruned = count_parameters(model.config, [full_width] * n_layers)
    warmup = int(0.06 * args.steps)

    results = []
    for method, options in [(plain_peft, {}), (ours, {"compile": False})] + [(ours, {"compile": True})] * args.compile:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        results.append(method(model, lora_config, examples, args, warmup, device, **options))

    lengths = [len(e["input_ids"]) for e in examples]
    removed = 1 - sum(p.numel() for p in model.parameters()) / unpruned
    print(f"\n{'tiny' if args.tiny else '1.1B'} LLaMA shape, layers {pruned.start}..{pruned.stop - 1} pruned by ratio "
          f"{args.ratio:g} ({removed:.1%} of the parameters removed): {n_params / 1e6:,.1f}M parameters without "
          f"the input embedding, on {device} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'})")
    print(f"rank vector {rank_vector}; {len(examples)} examples, median length {sorted(lengths)[len(lengths) // 2]}, "
          f"mean {sum(lengths) / len(lengths):.0f}, cutoff {args.cutoff}; {args.steps} steps of {args.batch_size} "
          f"(baseline: micro-batches of {args.micro_batch_size}; ours: of at most {args.micro_batch_size * args.cutoff} "
          f"tokens), the first {args.untimed_steps} untimed\n")
    tail = max(1, args.steps // 4)
    print_table(results, 6 * n_params, args.peak_tflops * 1e12, tail)
    base = results[0]
    print(f"\nMFU = 6 * N * tokens/s / {args.peak_tflops:g} TFLOP/s, N = {n_params:,}; final loss = mean of the "
          f"last {tail} steps; peak memory: {'max_memory_allocated' if device.type == 'cuda' else 'process peak RSS'}")
    for r in results[1:]:
        speedup = r.real_tokens / r.seconds / (base.real_tokens / base.seconds)
        print(f"speedup ({r.method} / plain peft), real tokens/s: {speedup:.2f}x")
    first, last = ([sum(r.losses[s]) / tail for r in results] for s in (slice(tail), slice(-tail, None)))
    trained = all(math.isfinite(b) and b < a for a, b in zip(first, last))
    agree = all(abs(b - last[0]) <= args.loss_tol * last[0] for b in last[1:])
    print(f"all methods trained (loss fell from the first {tail} steps to the last {tail}): {trained}")
    print(f"final losses agree within {args.loss_tol:.0%}: {agree}")
    return 0 if trained and agree else 1


if __name__ == "__main__":
    sys.exit(main())
