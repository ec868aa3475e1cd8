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
    with the head), and pack the documents into rows of at most batch_tokens tokens,
    first-fit by decreasing size. A row holds at least the longest head + answer (at most max_length)."""
    by_head: dict[tuple[int, ...], Document] = {}
    capacity = batch_tokens
    for i, (_, context, continuation) in enumerate(requests):
        head = window_head(context, continuation, max_length)
        capacity = max(capacity, len(head) + len(continuation) - 1)
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
    """A packed row: tokens and position ids, each token's document and segment (0: the head), and what to
    score: for each distinct continuation the row positions whose logits predict its tokens, and the tokens."""
    tokens: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    doc: list[int] = field(default_factory=list)
    seg: list[int] = field(default_factory=list)
    score_at: list[int] = field(default_factory=list)  # row positions, continuation after continuation
    targets: list[int] = field(default_factory=list)  # the continuation tokens predicted there
    spans: list[tuple[list[int], int, int]] = field(default_factory=list)  # (requests, start, end) in score_at


def build_row(docs: list[Document]) -> Row:
    row = Row()
    for d, doc in enumerate(docs):
        row.tokens += doc.head
        row.positions += range(len(doc.head))
        row.doc += [d] * len(doc.head)
        row.seg += [0] * len(doc.head)
        last = len(row.tokens) - 1
        for s, (cont, reqs) in enumerate(zip(doc.conts, doc.requests), start=1):
            seg_start, n = len(row.tokens), len(cont) - 1
            row.tokens += cont[:-1]
            row.positions += range(len(doc.head), len(doc.head) + n)
            row.doc += [d] * n
            row.seg += [s] * n
            first = len(row.score_at)
            row.score_at += [last, *range(seg_start, seg_start + n)]
            row.targets += cont
            row.spans.append((reqs, first, len(row.score_at)))
    return row


def batch_tensors(rows: list[Row], pad_id: int, dtype: torch.dtype, device: torch.device):
    """Rows right-padded to one length: input ids, position ids, the additive 4D attention mask (a token sees
    the earlier tokens of its document's head and of its own segment; a padding token sees only itself) and
    the boolean map of the positions to score."""
    length = max(len(r.tokens) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), length), dtype=torch.long)
    doc = -1 - torch.arange(length).repeat(len(rows), 1)  # padding: a document of its own
    seg = torch.zeros((len(rows), length), dtype=torch.long)
    keep = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, r in enumerate(rows):
        n = len(r.tokens)
        ids[i, :n], pos[i, :n] = torch.tensor(r.tokens), torch.tensor(r.positions)
        doc[i, :n], seg[i, :n] = torch.tensor(r.doc), torch.tensor(r.seg)
        keep[i, r.score_at] = True
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed = (causal & (doc[:, :, None] == doc[:, None, :])
               & ((seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None])))
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return ids.to(device), pos.to(device), mask[:, None].to(device), keep.to(device)


def can_share(lm) -> bool:
    """Whether the model honours a custom 4D attention mask and position ids (a causal HF model with sdpa
    or eager attention); otherwise HFLM's own path scores the requests."""
    config = getattr(lm.model, "config", None)
    return lm.backend == "causal" and getattr(config, "_attn_implementation", None) in EXACT_ATTENTION


def tokens_processed(requests, max_length: int, batch_tokens: int) -> int:
    """Tokens that prefix-shared scoring runs through the model for these requests (padding excluded)."""
    return sum(doc.size for row in plan(requests, max_length, batch_tokens) for doc in row)


def loglikelihood_tokens(lm, requests, batch_tokens: int, rows_per_pass: int | None = None
                         ) -> list[tuple[float, bool]]:
    """(log-likelihood, is-greedy) of each request (lm-eval's (key, context tokens, continuation tokens)),
    in request order, as HFLM._loglikelihood_tokens returns them. rows_per_pass packed rows go through the
    model at once (default: HFLM's batch size, 1 under auto); the LM head runs only at scored positions."""
    results: list[tuple[float, bool] | None] = [None] * len(requests)
    dtype = lm.mixed_precision_dtype or next(lm.model.parameters()).dtype
    pad_id = lm.tokenizer.pad_token_id or 0
    per_pass = rows_per_pass or (lm.batch_size if isinstance(lm.batch_size, int) else 1)
    rows = [build_row(docs) for docs in plan(requests, lm.max_length, batch_tokens)]
    for b in range(0, len(rows), per_pass):
        batch = rows[b:b + per_pass]
        ids, pos, mask, keep = batch_tensors(batch, pad_id, dtype, lm.device)
        with torch.no_grad(), torch.autocast(device_type=lm.device.type, dtype=lm.mixed_precision_dtype,
                                             enabled=lm.mixed_precision_dtype is not None):
            logits = lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep,
                              use_cache=False).logits
        logp = F.log_softmax(logits.reshape(-1, logits.shape[-1]), dim=-1, dtype=lm.softmax_dtype)  # [kept, V]
        argmax = logp.argmax(dim=-1)
        flat = keep.flatten().cumsum(0) - 1  # row-major rank of each kept position
        length = keep.shape[1]
        at = torch.tensor([i * length + p for i, r in enumerate(batch) for p in r.score_at], device=lm.device)
        targets = torch.tensor([t for r in batch for t in r.targets], device=lm.device)
        kept = flat[at]
        token_logp = logp[kept, targets]
        greedy = (argmax[kept] == targets).tolist()
        offset = 0
        for r in batch:
            for reqs, start, end in r.spans:
                # summed as HFLM sums (a float32 tensor sum), so that the rounding of the total is the same
                answer = (float(token_logp[offset + start:offset + end].sum()),
                          all(greedy[offset + start:offset + end]))
                for i in reqs:
                    results[i] = answer
            offset += len(r.score_at)
    for (key, _, _), answer in zip(requests, results):
        if key is not None:
            lm.cache_hook.add_partial("loglikelihood", key, answer)
    return results  # type: ignore[return-value]
