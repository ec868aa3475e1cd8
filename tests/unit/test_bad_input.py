"""Bad input: wrong or corrupt models and artifacts, malformed data, absurd options. Every refusal is a UserError
naming the bad value, raised before an output exists (docs/reliability.md)."""

import json
from pathlib import Path

import pytest
from servers import write_adapter, write_pruned_model
from transformers import AutoTokenizer

from rankadaptor.data import read_texts
from rankadaptor.errors import UserError
from rankadaptor.job import load_job
from rankadaptor.models.loading import load_model
from rankadaptor.recover.adapters import load_adapted
from rankadaptor.recover.batches import load_examples
from rankadaptor.search.config import SearchConfig
from rankadaptor.search.loop import Proposal, SearchState, update
from rankadaptor.search.surrogate import SurrogateConfig, new_surrogate


# ---------------------------------------------------------------------------------------------------------
# Bad input: models and artifacts


def test_a_tokenizer_larger_than_the_model_vocabulary_is_refused(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "mismatch"
    model_dir.mkdir()
    for path in tiny_model_dir.iterdir():
        (model_dir / path.name).write_bytes(path.read_bytes())
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_tokens([f"<extra_{i}>" for i in range(8)])
    tokenizer.save_pretrained(model_dir)
    with pytest.raises(UserError, match=r"tokenizer of .* has 520 tokens but the model's vocab_size is 512"):
        load_model(str(model_dir))


@pytest.mark.parametrize("target", ["pruned", "adapter"])
def test_a_corrupted_artifact_is_refused_by_its_checksum(target, tiny_model_dir, tmp_path):
    base = write_pruned_model(str(tmp_path / "pruned"), tiny_model_dir)
    adapter = write_adapter(str(tmp_path / "adapter"), base, [8, 2, 4, 8])
    weights = next(Path(tmp_path / target).glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF  # one flipped bit pattern in the tensor data: the file still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match=rf"checksum of '{weights.name}' does not match its manifest \(corrupt\)"):
        load_adapted(base, adapter)


# ---------------------------------------------------------------------------------------------------------
# Bad input: data


@pytest.mark.parametrize("name, content, match", [
    ("blank.txt", "\n\n   \n\n", "holds no text"),
    ("short.txt", "Only a few words.", r"has \d+ tokens, less than one block of cutoff=64"),
    ("latin1.txt", "caf\xe9 au lait".encode("latin-1"), "is not UTF-8 text"),
    ("object.json", '{"text": "one record, not a list"}', "must hold a list of JSON objects"),
    ("numbers.jsonl", "1\n2\n", "must hold a list of JSON objects"),
    ("long_prompt.jsonl", json.dumps({"instruction": "word " * 100, "output": "yes"}) + "\n",
     "every example's response is cut off by cutoff=64"),
    ("missing.txt", None, "no file at"),
])
def test_bad_training_data_is_named(name, content, match, tiny_model_dir, tmp_path):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    with pytest.raises(UserError, match=match) as error:
        load_examples(str(path), tokenizer, cutoff=64)
    assert name in str(error.value)


def test_records_without_text_are_named(tiny_model_dir, tmp_path):
    path = tmp_path / "fields.jsonl"
    path.write_text('{"title": "no text field"}\n')
    with pytest.raises(UserError, match=r"data file '.*fields.jsonl': record .* has neither a 'text' field"):
        read_texts(str(path))  # calibration and perplexity text
    with pytest.raises(UserError, match="has neither a 'text' field nor Alpaca fields"):
        load_examples(str(path), AutoTokenizer.from_pretrained(tiny_model_dir), cutoff=64)


# ---------------------------------------------------------------------------------------------------------
# Bad input: job options (checked when the job is loaded, before any step runs)


@pytest.mark.parametrize("overrides, match", [
    ({"target_task": "mmlu"}, r"task 'mmlu' is not accepted: use an lm-eval task"),
    ({"report_tasks": ["boolq", "squad"]}, r"task 'squad' is not accepted"),
    ({"source_tasks": ["ppl:boolq", "ppl:heldout"]}, "is also a source task"),
    ({"bootstrap_trials": 2}, "bootstrap_trials=2"),
    ({"corpus_docs": 1}, "corpus_docs=1 must be >= 10"),
    ({"seed": "seven"}, "seed='seven' is not accepted: input should be a valid integer"),
    ({"recover": {"epochs": 0}}, r"recover: epochs=0 is outside \[1, 100\]"),
    ({"recover": {"lr": 5.0}}, r"recover: lr=5.0 is outside \(0, 1\)"),
    ({"recover": {"lr": "fast"}}, "recover.lr='fast' is not accepted: input should be a valid number"),
    ({"recover": {"dropout": 1.0}}, r"recover: dropout=1.0 is outside \[0, 1\)"),
    ({"recover": {"cutoff": 1}}, "recover: cutoff=1 must be > 1"),
    ({"recover": {"rank": 7}}, r"recover: rank=7 is not in the candidate set"),
    ({"recover": {"max_steps": -3}}, "recover: save_steps and max_steps must be positive"),
    ({"recover": {"learning_rate": 1e-4}}, r"recover: unknown option\(s\) \['learning_rate'\]"),
    ({"prune": {"ratio": 1.5}}, r"prune: ratio=1.5 is outside \[0, 1\)"),
    ({"prune": {"num_samples": 0}}, "prune: num_samples=0"),
    ({"evaluate": {"limit": -5}}, "evaluate: limit=-5 must be a positive integer"),
    ({"search": {"threshold": 0}}, "search: threshold=0.0 can never be met"),
    ({"search": {"max_iterations": 0}}, r"search: max_iterations=0 must be in \[1, 10000\]"),
    ({"search": {"budget": -1}}, "search: budget=-1 must be a positive parameter count"),
    ({"search": {"candidates": [0, 8]}}, "search: candidates=.* must be a non-empty list of ranks"),
    ({"registry": {"model_name": "bad name!"}}, "registry: model_name='bad name!'"),
])
def test_absurd_job_options_are_refused_when_the_job_loads(overrides, match):
    with pytest.raises(UserError, match=match):
        load_job(None, overrides)


def test_a_proposal_that_does_not_fit_the_search_is_refused():
    state = SearchState("t", new_surrogate(SurrogateConfig(adapt_steps=1), [2, 4, 8]), [10, 20, 30, 40])
    config = SearchConfig(candidates=[2, 4, 8])
    with pytest.raises(UserError, match="rank vector has 3 layers; this search's model has 4"):
        update(state, Proposal([8, 8, 8], 0.5), 0.5, config)
    with pytest.raises(UserError, match="measured score=nan must be a finite number"):
        update(state, Proposal([8, 8, 8, 8], 0.5), float("nan"), config)
