"""Training examples and batches for recovery.

Alpaca records become (prompt + response) token sequences with the prompt masked from the loss, as in
LLM-Pruner's recovery; plain text is packed into full cutoff-length blocks.

An optimizer step takes `batch_size` examples of similar length, in an order fixed by (seed, epoch), so a
resumed run sees exactly the steps an uninterrupted one would. A step's examples are cut into micro-batches
of at most `micro_batch_tokens` padded tokens: short examples go many to a forward pass, long ones few, so
hardly any compute goes to padding and every forward pass is large. A step's gradient is the same however
it is cut, so the token budget sets activation memory, not the result.

With packing, a micro-batch is instead one row of at most `micro_batch_tokens` tokens holding several whole
examples (first-fit, longest first), no attention mask, and position ids that restart at each example:
transformers reads the restarts as document boundaries, so no example attends to another. A row is padded
up to a multiple of an eighth of the budget, so there are at most eight shapes (torch.compile). Each
example's first label is masked, so the last token of one example is never trained to predict the next.
"""

from __future__ import annotations

import random

import torch

from rankadaptor.data import read_records, read_texts, record_text, token_stream
from rankadaptor.errors import check

IGNORE = -100
PROMPT = ("Below is an instruction that describes a task{ctx}. Write a response that appropriately completes "
          "the request.\n\n### Instruction:\n{instruction}\n\n{input}### Response:\n")


def alpaca_prompt(record: dict) -> str:
    has_input = bool(record.get("input"))
    return PROMPT.format(ctx=", paired with an input that provides further context" if has_input else "",
                         instruction=record["instruction"],
                         input=f"### Input:\n{record['input']}\n\n" if has_input else "")


def instruction_example(tokenizer, record: dict, cutoff: int) -> dict[str, list[int]]:
    prompt = [tokenizer.bos_token_id] + tokenizer(alpaca_prompt(record), add_special_tokens=False)["input_ids"]
    response = tokenizer(str(record["output"]), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (prompt + response)[:cutoff]
    labels = ([IGNORE] * len(prompt) + response)[:cutoff]
    return {"input_ids": ids, "labels": labels}


def load_examples(uri: str, tokenizer, cutoff: int) -> list[dict[str, list[int]]]:
    """Alpaca records (instruction/input/output) or plain text, as token examples of at most cutoff tokens."""
    if uri.endswith((".json", ".jsonl")):
        records = read_records(uri)
        if all("instruction" in r and "output" in r for r in records):
            examples = [instruction_example(tokenizer, r, cutoff) for r in records]
            examples = [e for e in examples if any(label != IGNORE for label in e["labels"])]
            check(bool(examples), f"training data {uri!r}: every example's response is cut off by cutoff={cutoff}")
            return examples
        texts = [record_text(r, uri) for r in records]
    else:
        texts = read_texts(uri)
    stream = token_stream(tokenizer, texts).tolist()
    check(len(stream) >= cutoff, f"training data {uri!r} has {len(stream)} tokens, less than one block of "
                                 f"cutoff={cutoff}")
    return [{"input_ids": stream[i:i + cutoff], "labels": stream[i:i + cutoff]}
            for i in range(0, len(stream) - cutoff + 1, cutoff)]


def epoch_steps(lengths: list[int], batch_size: int, seed: int, epoch: int,
                group_by_length: bool = True) -> list[list[int]]:
    """Example indices per optimizer step for one epoch, in an order fixed by (seed, epoch): shuffled, then
    (group_by_length) sorted by length within mega-batches of 32 steps, so a step holds examples of
    similar length and its micro-batches carry little padding; the steps are then shuffled."""
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        mega = 32 * batch_size
        order = [i for s in range(0, len(order), mega) for i in sorted(order[s:s + mega], key=lambda i: -lengths[i])]
    steps = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    rng.shuffle(steps)
    return steps


def micro_batches(step: list[int], lengths: list[int], max_tokens: int) -> list[list[int]]:
    """One step's examples, longest first, cut into micro-batches of at most max_tokens padded tokens
    (examples x the longest one). A last micro-batch of one example takes a partner from the one before:
    torch.compile specializes on a batch of one, which would cost a second compilation."""
    batches: list[list[int]] = []
    for i in sorted(step, key=lambda i: -lengths[i]):
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    if len(batches) > 1 and len(batches[-1]) == 1 and len(batches[-2]) > 2:
        batches[-1].insert(0, batches[-2].pop())  # fits: 2 x its length <= 3 x the longest before it
    return batches


def collate(examples: list[dict], pad_id: int, length: int | None = None) -> dict[str, torch.Tensor]:
    """Right-pad to length (default: the longest example's); padding is masked from attention and loss."""
    length = length or max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[row, :n] = torch.tensor(e["input_ids"])
        labels[row, :n] = torch.tensor(e["labels"])
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def packed_rows(step: list[int], lengths: list[int], max_tokens: int) -> list[list[int]]:
    """One step's examples, longest first, packed first-fit into rows of at most max_tokens real tokens."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(step, key=lambda i: -lengths[i]):
        row = next((r for r, room in enumerate(free) if lengths[i] <= room), None)
        if row is None:
            rows.append([])
            free.append(max_tokens)
            row = len(rows) - 1
        rows[row].append(i)
        free[row] -= lengths[i]
    return rows


def packed_length(tokens: int, max_tokens: int) -> int:
    """A packed row's length: its tokens rounded up to a multiple of max_tokens / 8 (a few shapes only)."""
    bucket = max(1, max_tokens // 8)
    return min(max_tokens, -(-tokens // bucket) * bucket)


def pack(examples: list[dict], pad_id: int, max_tokens: int) -> dict[str, torch.Tensor]:
    """Examples side by side in one row (packed_length long); the rest is padding that is its own document
    (positions from 0, no labels). Position ids mark the documents; there is no attention mask."""
    length = packed_length(sum(len(e["input_ids"]) for e in examples), max_tokens)
    ids = torch.full((1, length), pad_id, dtype=torch.long)
    labels = torch.full((1, length), IGNORE, dtype=torch.long)
    positions = torch.zeros((1, length), dtype=torch.long)
    start = 0
    for e in examples:
        n = len(e["input_ids"])
        ids[0, start:start + n] = torch.tensor(e["input_ids"])
        labels[0, start + 1:start + n] = torch.tensor(e["labels"][1:])  # the first label is never a target
        positions[0, start:start + n] = torch.arange(n)
        start += n
    positions[0, start:] = torch.arange(length - start)
    return {"input_ids": ids, "labels": labels, "position_ids": positions}
