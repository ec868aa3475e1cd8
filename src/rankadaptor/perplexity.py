"""Perplexity on text, as LLM-Pruner reports it: the token stream cut into non-overlapping windows."""

from __future__ import annotations

import math

import torch

from rankadaptor.data import token_stream
from rankadaptor.errors import check


@torch.no_grad()
def perplexity(model, tokenizer, texts: list[str], seq_len: int = 128, batch_size: int = 8) -> float:
    """exp(mean next-token NLL) over all full seq_len windows of the concatenated texts."""
    stream = token_stream(tokenizer, texts)
    n_windows = len(stream) // seq_len
    check(n_windows > 0, f"perplexity text has {len(stream)} tokens, fewer than one window of seq_len={seq_len}")
    windows = stream[: n_windows * seq_len].view(n_windows, seq_len)
    total_nll, total_tokens = 0.0, 0
    for start in range(0, n_windows, batch_size):
        ids = windows[start:start + batch_size].to(model.device)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")
        total_nll += float(nll)
        total_tokens += ids[:, 1:].numel()
    return math.exp(total_nll / total_tokens)
