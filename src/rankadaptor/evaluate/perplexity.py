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


@torch.no_grad()
def document_log_likelihoods(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 16) -> list[float]:
    """Per document, the mean log-likelihood per predicted token (BOS-prefixed, truncated to max_length).

    One value per document lets a perplexity-type score be compared between two models with a paired
    bootstrap over documents, like accuracy rows; exp(-mean) of them is a document-averaged perplexity."""
    ids = [([tokenizer.bos_token_id] + tokenizer(t, add_special_tokens=False)["input_ids"])[:max_length] for t in texts]
    check(all(len(i) > 1 for i in ids), "every perplexity document needs at least one token of text")
    values: list[float] = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        width = max(len(i) for i in chunk)
        batch = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(batch)
        for row, seq in enumerate(chunk):
            batch[row, :len(seq)], mask[row, :len(seq)] = torch.tensor(seq), 1
        batch, mask = batch.to(model.device), mask.to(model.device)
        logits = model(input_ids=batch, attention_mask=mask, use_cache=False).logits[:, :-1].float()
        token_ll = -torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
        target_mask = mask[:, 1:].float()
        values.extend(((token_ll * target_mask).sum(1) / target_mask.sum(1)).tolist())
    return values
