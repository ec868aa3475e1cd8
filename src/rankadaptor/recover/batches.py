"""Training examples and batches for recovery.

Alpaca records become (prompt + response) token sequences with the prompt masked from the loss, as in
LLM-Pruner's recovery; plain text is packed into full cutoff-length blocks.

An optimizer step takes `batch_size` examples of similar length, in an order fixed by (seed, epoch), so a
resumed run sees exactly the steps an uninterrupted one would. A step's examples are cut into micro-batches
of at most `micro_batch_tokens` padded tokens: short examples go many to a forward pass, long ones few, so
hardly any compute goes to padding and every forward pass is large. A step's gradient is the same however
it is cut, so the token budget sets activation memory, not the result.
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
