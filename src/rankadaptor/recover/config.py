"""The recover stage's options.
"""

from __future__ import annotations

from dataclasses import dataclass

from rankadaptor.config import option
from rankadaptor.errors import check
from rankadaptor.widths import BASELINE_RANK, RANK_CANDIDATES

METHODS = ("lora", "losa", "adalora")


ATTENTION = ("auto", "sdpa", "flex_attention", "eager")


SCHEDULES = ("uniform", "increasing", "losa")


@dataclass
class RecoverConfig:
    data: str = option("", "training data: Alpaca JSON/JSONL (instruction/input/output) or text "
                           "(.txt, or .jsonl with a text field), local or s3://", set_by_job=True)
    method: str = option("lora", f"one of {METHODS}; losa = LoRA whose update is masked by each weight's zeros "
                                 "(W + BA*M): a sparse model stays exactly as sparse after export", set_by_job=True)
    rank_vector: list[int] | None = option(None, "one LoRA rank per decoder layer (method lora); "
                                                 "default: the schedule", set_by_job=True)
    schedule: str = option("uniform", f"rank layout without a rank_vector, one of {SCHEDULES}: uniform = "
                                      "`rank` everywhere, increasing = the paper's 4/6/10/12 by quarters, losa = "
                                      "ranks in proportion to each layer's reconstruction error (prune report), "
                                      "same LoRA parameters as uniform `rank`")
    rank: int = option(BASELINE_RANK, "uniform rank; AdaLoRA's target average rank")
    candidates: list[int] = option(RANK_CANDIDATES, "ranks a rank vector may use")
    alpha_ratio: float = option(2.0, "lora_alpha = alpha_ratio * rank in every layer (LLM-Pruner: r 8, alpha 16)")
    rslora: bool = option(False, "rank-stabilised LoRA scaling alpha/sqrt(r)")
    dropout: float = option(0.05, "LoRA dropout")
    lr: float = option(1e-4, "peak learning rate (AdamW)")
    epochs: int = option(2, "passes over the data")
    batch_size: int = option(64, "examples per optimizer step")
    micro_batch_tokens: int = option(4096, "most tokens per forward pass (examples x the longest one): sets "
                                           "activation memory, not the result; at least cutoff", runtime=True)
    cutoff: int = option(256, "maximum tokens per example")
    warmup_ratio: float = option(0.06, "fraction of steps of linear warm-up")
    max_grad_norm: float = option(1.0, "gradient clipping")
    max_steps: int | None = option(None, "stop after this many optimizer steps (default: all epochs)")
    save_steps: int = option(50, "checkpoint every N optimizer steps", runtime=True)
    checkpoint_root: str = option("", "durable folder (e.g. s3://bucket/rankadaptor/checkpoints) of recovery "
                                      "checkpoints, one per training identity (settings, rank vector, model, data): "
                                      "a retried pod resumes there; empty: beside the output (<output>.ckpt)",
                                  runtime=True)
    checkpoint: str | None = option(None, "checkpoint URI for resuming (default: <output>.ckpt)", set_by_job=True)
    restart: bool = option(False, "discard an existing checkpoint and train from the start (one left by a run with "
                                  "other settings is refused otherwise)", runtime=True)
    allow_over_budget: bool = option(False, "accept a rank vector that trains more LoRA parameters than the "
                                            "budget (uniform `rank` on every layer)", runtime=True)
    group_by_length: bool = option(True, "make each step of examples of similar length (little padding)")
    compile: bool = option(False, "run each decoder layer under torch.compile (GPU; the first steps compile)",
                           runtime=True)
    packing: bool | None = option(None, "pack whole examples into rows of micro_batch_tokens tokens with "
                                        "document-aware attention: no padding; default (null): on with a CUDA "
                                        "GPU, where it was fastest at equal held-out loss (benchmarks/RESULTS.md), "
                                        "off on CPU", runtime=True)
    liger: bool = option(False, "liger-kernel's fused linear cross-entropy, RMSNorm, SwiGLU and RoPE (CUDA only)",
                         runtime=True)
    prefetch: bool = option(False, "build and pin the next step's batches in a background thread", runtime=True)
    attention: str = option("auto", f"attention implementation, one of {ATTENTION}; auto: flex_attention when "
                                    "packing on a CUDA GPU (fastest measured), else sdpa", runtime=True)
    device: str = option("auto", "auto, cpu, cuda or cuda:N", runtime=True)
    seed: int = option(0, "seed for adapter init, dropout and data order")

    def validate(self) -> None:
        check(self.method in METHODS, f"method={self.method!r} is not accepted; use one of {METHODS}")
        check(self.schedule in SCHEDULES, f"schedule={self.schedule!r} is not accepted; use one of {SCHEDULES}")
        check(bool(self.candidates) and all(r > 0 for r in self.candidates),
              f"candidates={self.candidates} must be positive ranks")
        check(self.rank in self.candidates or self.method == "adalora",
              f"rank={self.rank} is not in the candidate set {self.candidates}")
        check(0 < self.lr < 1, f"lr={self.lr} is outside (0, 1)")
        check(1 <= self.epochs <= 100, f"epochs={self.epochs} is outside [1, 100]")
        check(self.batch_size > 0, f"batch_size={self.batch_size} must be positive")
        check(self.cutoff > 1, f"cutoff={self.cutoff} must be > 1")
        check(self.micro_batch_tokens >= self.cutoff,
              f"micro_batch_tokens={self.micro_batch_tokens} must be at least cutoff={self.cutoff} (one full example)")
        check(0 <= self.dropout < 1, f"dropout={self.dropout} is outside [0, 1)")
        check(0 <= self.warmup_ratio < 1, f"warmup_ratio={self.warmup_ratio} is outside [0, 1)")
        check(self.alpha_ratio > 0 and self.max_grad_norm > 0, "alpha_ratio and max_grad_norm must be positive")
        check(self.save_steps > 0 and (self.max_steps is None or self.max_steps > 0),
              "save_steps and max_steps must be positive")
        check(self.rank_vector is None or self.method != "adalora", "rank_vector applies to methods 'lora' and 'losa' only")
        check(self.attention in ATTENTION, f"attention={self.attention!r} is not accepted; use one of {ATTENTION}")
