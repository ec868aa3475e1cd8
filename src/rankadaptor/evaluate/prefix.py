"""Prefix-shared scoring: lm-eval's loglikelihood requests, scheduled so that each context runs once.

A multiple-choice question scores every answer as context + continuation; lm-eval's HFLM runs the whole
context again for each answer. Here the requests (lm-eval's own, already tokenised, trailing whitespace
moved to the continuation by lm-eval) are grouped by their *window prefix*: HFLM scores a request from
the input (context + continuation)[-(max_length + 1):][:-1], i.e. from the window
W = (context + continuation)[-(max_length + 1):] whose head W[:-len(continuation)] is the context left
after lm-eval's truncation from the left. Requests with the same head share it: one document holds the head
once and after it one segment per distinct continuation (its tokens but the last), each segment at the
positions it would have in its own request and seeing the head and itself only, never the other answers.
The first continuation token of every answer is scored from the head's last position, the others from its
segment. Documents are packed, whole, into rows of up to `batch_tokens` tokens with a document-aware
attention mask (a document sees nothing of the others), so there is no padding either.

The scores are lm-eval's: the same inputs at the same positions, the same log_softmax (HFLM's
softmax_dtype), the sum of the continuation's log-probabilities and whether each continuation token is the
argmax. Only the forward passes differ in shape, so the values agree to float rounding (about 1e-6 in
float32), not bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

# Attention implementations that honour a custom 4D mask (flash attention ignores it): others fall back.
EXACT_ATTENTION = ("sdpa", "eager")


@dataclass
class Document:
    """One window head and the distinct continuations scored after it; requests[i] are the indices of the
    requests whose continuation is conts[i]."""
    head: tuple[int, ...]
    conts: list[tuple[int, ...]] = field(default_factory=list)
    requests: list[list[int]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.head) + sum(len(c) - 1 for c in self.conts)


def window_head(context: list[int], continuation: list[int], max_length: int) -> tuple[int, ...]:
    """The context that HFLM's left truncation leaves before the continuation (never empty: HFLM asserts
    a non-empty context and a continuation of at most max_length tokens)."""
    window = (context + continuation)[-(max_length + 1):]
    return tuple(window[:-len(continuation)])


def plan(requests, max_length: int, batch_tokens: int) -> list[list[Document]]:
    """Group the requests by window head, split a document whose size exceeds the row into several (each
    with the head), and pack the documents into rows of at most max(batch_tokens, max_length) tokens,
    first-fit by decreasing size."""
    capacity = max(batch_tokens, max_length)
    by_head: dict[tuple[int, ...], Document] = {}
    for i, (_, context, continuation) in enumerate(requests):
        head = window_head(context, continuation, max_length)
        doc = by_head.setdefault(head, Document(head))
        cont = tuple(continuation)
        try:
            doc.requests[doc.conts.index(cont)].append(i)
        except ValueError:
            doc.conts.append(cont)
            doc.requests.append([i])
    docs: list[Document] = []
    for doc in by_head.values():
        part = Document(doc.head)
        for cont, reqs in zip(doc.conts, doc.requests):
            if part.conts and part.size + len(cont) - 1 > capacity:
                docs.append(part)
                part = Document(doc.head)
            part.conts.append(cont)
            part.requests.append(reqs)
        docs.append(part)
    rows: list[list[Document]] = []
    used: list[int] = []
    for doc in sorted(docs, key=lambda d: -d.size):
        slot = next((r for r, n in enumerate(used) if n + doc.size <= capacity), None)
        if slot is None:
            rows.append([doc])
            used.append(doc.size)
        else:
            rows[slot].append(doc)
            used[slot] += doc.size
    return rows


@dataclass
class Row:
    """A packed row as tensors: tokens, position ids, the additive 4D attention mask; and what to score:
    for each (document, continuation) the row positions whose logits predict its tokens, and the tokens."""
    tokens: torch.Tensor
    positions: torch.Tensor
    mask: torch.Tensor
    score_at: torch.Tensor  # [P] row positions, continuation after continuation
    targets: torch.Tensor  # [P] the continuation tokens predicted there
    spans: list[tuple[list[int], int, int]]  # (request indices, start, end) into score_at


def build_row(docs: list[Document], dtype: torch.dtype, device: torch.device) -> Row:
    tokens: list[int] = []
    positions: list[int] = []
    doc_id: list[int] = []
    seg_id: list[int] = []
    score_at: list[int] = []
    targets: list[int] = []
    spans: list[tuple[list[int], int, int]] = []
    for d, doc in enumerate(docs):
        start = len(tokens)
        tokens += doc.head
        positions += range(len(doc.head))
        doc_id += [d] * len(doc.head)
        seg_id += [0] * len(doc.head)
        last = len(tokens) - 1
        for s, (cont, reqs) in enumerate(zip(doc.conts, doc.requests), start=1):
            seg_start = len(tokens)
            tokens += cont[:-1]
            positions += range(len(doc.head), len(doc.head) + len(cont) - 1)
            doc_id += [d] * (len(cont) - 1)
            seg_id += [s] * (len(cont) - 1)
            first = len(score_at)
            score_at += [last, *range(seg_start, len(tokens))]
            targets += cont
            spans.append((reqs, first, len(score_at)))
        assert len(tokens) - start == doc.size
    n = len(tokens)
    doc_t = torch.tensor(doc_id, device=device)
    seg_t = torch.tensor(seg_id, device=device)
    idx = torch.arange(n, device=device)
    allowed = ((doc_t[:, None] == doc_t[None, :]) & (idx[None, :] <= idx[:, None])
               & ((seg_t[None, :] == 0) | (seg_t[None, :] == seg_t[:, None])))
    mask = torch.zeros(n, n, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
    return Row(tokens=torch.tensor([tokens], device=device), positions=torch.tensor([positions], device=device),
               mask=mask[None, None], score_at=torch.tensor(score_at, device=device),
               targets=torch.tensor(targets, device=device), spans=spans)


def can_share(lm) -> bool:
    """Whether the model honours a custom 4D attention mask and position ids (a causal HF model with sdpa
    or eager attention); otherwise HFLM's own path scores the requests."""
    config = getattr(lm.model, "config", None)
    return lm.backend == "causal" and getattr(config, "_attn_implementation", None) in EXACT_ATTENTION


def row_logits(lm, row: Row) -> torch.Tensor:
    """The model's logits at the row's scored positions, [P, vocab] (the LM head only runs there)."""
    with torch.no_grad(), torch.autocast(device_type=lm.device.type, dtype=lm.mixed_precision_dtype,
                                         enabled=lm.mixed_precision_dtype is not None):
        out = lm.model(input_ids=row.tokens, attention_mask=row.mask, position_ids=row.positions,
                       logits_to_keep=row.score_at, use_cache=False)
    return out.logits[0]


def tokens_processed(requests, max_length: int, batch_tokens: int) -> int:
    """Tokens that prefix-shared scoring runs through the model for these requests."""
    return sum(doc.size for row in plan(requests, max_length, batch_tokens) for doc in row)


def loglikelihood_tokens(lm, requests, batch_tokens: int) -> list[tuple[float, bool]]:
    """(log-likelihood, is-greedy) of each request (lm-eval's (key, context tokens, continuation tokens)),
    in request order, as HFLM._loglikelihood_tokens returns them."""
    results: list[tuple[float, bool] | None] = [None] * len(requests)
    dtype = next(lm.model.parameters()).dtype
    if lm.mixed_precision_dtype is not None:
        dtype = lm.mixed_precision_dtype
    for docs in plan(requests, lm.max_length, batch_tokens):
        row = build_row(docs, dtype, lm.device)
        logp = F.log_softmax(row_logits(lm, row), dim=-1, dtype=lm.softmax_dtype)
        token_logp = logp.gather(1, row.targets[:, None])[:, 0]
        greedy = logp.argmax(dim=-1) == row.targets
        for reqs, start, end in row.spans:
            answer = (float(token_logp[start:end].sum()), bool(greedy[start:end].all()))
            for i in reqs:
                results[i] = answer
    for (key, _, _), answer in zip(requests, results):
        if key is not None:
            lm.cache_hook.add_partial("loglikelihood", key, answer)
    return results  # type: ignore[return-value]
