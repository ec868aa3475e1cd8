"""The prune stage's options.
"""

from __future__ import annotations

from dataclasses import dataclass

from rankadaptor.config import option
from rankadaptor.errors import check
from rankadaptor.prune.importance import (
    WIDTH_ESTIMATORS,
)
from rankadaptor.prune.unstructured import (
    parse_nm,
)

MODES = ("width", "depth", "unstructured")


ALLOCATIONS = ("uniform", "rmi")


MASK_RULE = "mask = weight != 0 on every decoder projection (q,k,v,o,gate,up,down): pruned weights are exact zeros"


BLOCK_ESTIMATORS = ("taylor", "ppl")


SCOPES = ("global", "layer")


@dataclass
class PruneConfig:
    model: str = option("", "base model: local checkpoint directory, s3:// URI or hub id", set_by_job=True)
    mode: str = option("width", f"one of {MODES}: LLM-Pruner heads/channels, Shortened-LLaMA blocks, or "
                                "Wanda weight-by-weight sparsity (zeros in dense tensors)")
    ratio: float = option(0.2, "how much to remove, in [0, 1); see ratio_scope; unstructured mode: the sparsity, "
                               "the fraction of every decoder projection's weights set to zero")
    ratio_scope: str = option("global", "global: fraction of all parameters (converted to a per-layer ratio "
                                        "or a block count); layer: fraction of each pruned layer's heads and "
                                        "channels (width mode only)")
    importance: str = option("element1", f"width-mode importance, one of {WIDTH_ESTIMATORS}")
    block_importance: str = option("taylor", f"depth-mode block importance, one of {BLOCK_ESTIMATORS}")
    layer_start: int = option(4, "first pruned layer (width mode), 0-based")
    layer_end: int | None = option(None, "end of the pruned layer range, exclusive (default: num_layers - 2)")
    protect_first: int = option(4, "depth mode: never remove the first N blocks")
    protect_last: int = option(2, "depth mode: never remove the last N blocks")
    calibration: str = option("", "calibration text: .txt or .jsonl file, local or s3://", set_by_job=True)
    num_samples: int = option(10, "calibration samples")
    seq_len: int = option(64, "tokens per calibration sample")
    ppl_text: str | None = option(None, "held-out text (.txt/.jsonl) for perplexity before/after", set_by_job=True)
    ppl_seq_len: int = option(128, "window length for perplexity")
    sparsity_allocation: str = option("uniform", f"unstructured mode, one of {ALLOCATIONS}: the same sparsity "
                                                 "in every layer, or LoSA's layer-wise rates from Representation "
                                                 "Mutual Information between layers (mean stays `ratio`)")
    rmi_spread: float = option(0.02, "unstructured rmi: most a layer's sparsity may differ from `ratio` "
                                     "(LoSA: 0.01 up to 50%, 0.02 up to 60%, 0.03 up to 70%)")
    layer_sparsity: list[float] | None = option(None, "unstructured mode: one sparsity per decoder layer "
                                                      "(overrides ratio and sparsity_allocation)")
    nm: str = option("", "unstructured mode: N:M pattern such as '2:4' (zero the N lowest-scoring of every M "
                         "consecutive weights of a row); overrides ratio; empty: none")
    device: str = option("auto", "auto, cpu, cuda or cuda:N", runtime=True)
    seed: int = option(0, "seed for calibration sampling")

    def validate(self) -> None:
        check(self.mode in MODES, f"mode={self.mode!r} is not accepted; use one of {MODES}")
        check(0.0 <= self.ratio < 1.0, f"ratio={self.ratio} is outside [0, 1)")
        check(self.ratio > 0 or bool(self.nm) or self.layer_sparsity is not None,
              "ratio=0 prunes nothing: give a ratio in (0, 1) (a model to recover unpruned can go to "
              "`rankadaptor recover` as it is)")
        check(self.ratio_scope in SCOPES, f"ratio_scope={self.ratio_scope!r} is not accepted; use one of {SCOPES}")
        check(not (self.mode == "depth" and self.ratio_scope == "layer"),
              "ratio_scope='layer' applies to width mode only; depth mode takes a global ratio")
        check(self.importance in WIDTH_ESTIMATORS,
              f"importance={self.importance!r} is not accepted; use one of {WIDTH_ESTIMATORS}")
        check(self.block_importance in BLOCK_ESTIMATORS,
              f"block_importance={self.block_importance!r} is not accepted; use one of {BLOCK_ESTIMATORS}")
        check(self.num_samples > 0 and self.seq_len > 1,
              f"num_samples={self.num_samples} and seq_len={self.seq_len} must be positive (seq_len > 1)")
        check(self.protect_first >= 0 and self.protect_last >= 0, "protect_first/protect_last must be >= 0")
        check(self.sparsity_allocation in ALLOCATIONS,
              f"sparsity_allocation={self.sparsity_allocation!r} is not accepted; use one of {ALLOCATIONS}")
        check(0 <= self.rmi_spread < 1, f"rmi_spread={self.rmi_spread} is outside [0, 1)")
        unstructured_only = {"layer_sparsity": self.layer_sparsity, "nm": self.nm or None,
                             "sparsity_allocation": None if self.sparsity_allocation == "uniform" else "rmi"}
        for name, value in unstructured_only.items():
            check(value is None or self.mode == "unstructured",
                  f"{name}={value!r} applies to mode 'unstructured' only (mode is {self.mode!r})")
        check(self.layer_sparsity is None or all(0 <= s < 1 for s in self.layer_sparsity),
              f"layer_sparsity={self.layer_sparsity}: every rate must be in [0, 1)")
        check(self.layer_sparsity is None or any(s > 0 for s in self.layer_sparsity),
              f"layer_sparsity={self.layer_sparsity} prunes nothing: give at least one rate in (0, 1)")
        check(not self.nm or self.layer_sparsity is None and self.sparsity_allocation == "uniform",
              f"nm={self.nm!r} fixes every layer's sparsity at N/M: drop layer_sparsity / sparsity_allocation")
        if self.nm:
            parse_nm(self.nm)
