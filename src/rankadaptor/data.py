"""Text for calibration, perplexity and recovery: read from files or URIs, or sampled from a model.

Formats: `.txt` (documents separated by blank lines), `.jsonl` / `.json` (records with a `text` field, or
Alpaca records with instruction/input/output). For a model with no public corpus at hand (the bundled
tiny model offline), `sample_corpus` draws text from the unpruned model itself: self-distillation text
that is in the model's own distribution, so pruning damage and recovery are measurable on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm import tqdm

from rankadaptor.errors import UserError
from rankadaptor.infra import storage


def read_text(uri: str) -> str:
    """The text of a UTF-8 file, local or s3://."""
    try:
        return storage.local_file(uri).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"data file {uri!r} is not UTF-8 text ({e.reason} at byte {e.start}): "
                        "convert it to UTF-8") from None


def read_records(uri: str) -> list[dict]:
    """Records of a .json (a list) or .jsonl file, local or s3://."""
    text = read_text(uri)
    if Path(uri).suffix == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"data file {uri!r} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    else:
        records = []
        for number, line in enumerate(text.splitlines(), start=1):  # the file's own line numbers, blanks counted
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"data file {uri!r} is not valid JSONL: {e.msg} at line {number} column {e.colno}") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise UserError(f"data file {uri!r} must hold a list of JSON objects (one per line for .jsonl)")
    if not records:
        raise UserError(f"data file {uri!r} is empty")
    return records


def record_text(record: dict, uri: str | None = None) -> str:
    """The text of one record; uri (the file it came from) is named in the error."""
    if "text" in record:
        return str(record["text"])
    if "instruction" in record:
        return "\n".join(str(record[k]) for k in ("instruction", "input", "output") if record.get(k))
    raise UserError(f"{f'data file {uri!r}: ' if uri else ''}record {str(record)[:80]!r} has neither a 'text' "
                    "field nor Alpaca fields (instruction/input/output)")


def read_texts(uri: str) -> list[str]:
    """Documents of a text or JSON(L) file."""
    if Path(uri).suffix in (".json", ".jsonl"):
        texts = [record_text(r, uri) for r in read_records(uri)]
    else:
        texts = [t.strip() for t in read_text(uri).split("\n\n") if t.strip()]
    if not texts:
        raise UserError(f"text file {uri!r} holds no text")
    return texts


def token_stream(tokenizer, texts: list[str]) -> torch.Tensor:
    """All texts tokenized and concatenated, each document starting with BOS and ending with EOS."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
        if tokenizer.bos_token_id is not None:
            ids.append(tokenizer.bos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def calibration_batch(tokenizer, texts: list[str], num_samples: int, seq_len: int, seed: int = 0,
                      source: str = "calibration text") -> torch.Tensor:
    """num_samples random windows of seq_len tokens, as LLM-Pruner draws its calibration examples."""
    stream = token_stream(tokenizer, texts)
    if len(stream) < num_samples * seq_len:
        raise UserError(f"{source} has {len(stream)} tokens; {num_samples} samples x {seq_len} tokens need "
                        f"{num_samples * seq_len}: give a longer file or fewer/shorter samples")
    generator = torch.Generator().manual_seed(seed)
    # Non-overlapping windows, in random order: distinct samples, reproducible for a seed.
    starts = torch.randperm(len(stream) // seq_len, generator=generator)[:num_samples] * seq_len
    return torch.stack([stream[s:s + seq_len] for s in starts.tolist()])


@torch.no_grad()
def sample_corpus(model, tokenizer, num_docs: int, max_new_tokens: int, seed: int = 0,
                  batch_size: int = 128, temperature: float = 1.0) -> list[str]:
    """Documents sampled from the model itself, started from BOS (self-distillation text)."""
    torch.manual_seed(seed)
    docs: list[str] = []
    for start in tqdm(range(0, num_docs, batch_size), desc="sampling corpus", unit="batch"):
        n = min(batch_size, num_docs - start)
        prompt = torch.full((n, 1), tokenizer.bos_token_id, dtype=torch.long)
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                             temperature=temperature, top_k=0, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id)
        docs.extend(t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True))
    return [d for d in docs if d]


def data_paths(data_uri: str) -> dict[str, str]:
    """data.json of a data artifact, with paths inside the artifact made absolute."""
    directory = storage.local_dir(data_uri)
    info = storage.read_json(directory / "data.json")
    return {k: (str(directory / v) if v and not storage.is_s3(v) and not Path(v).is_absolute()
                and (directory / v).exists() else v) for k, v in info.items()}
