"""Shared test setup: one torch thread (2-core CI), offline hub, paths to the bundled fixtures."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "src" / "rankadaptor" / "bundled"  # the tiny model and task rows shipped with the package
TINY_MODEL = BUNDLED / "aidreams-260k"
TASKS_DIR = BUNDLED / "tasks"


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    return TINY_MODEL


@pytest.fixture(scope="session")
def tasks_dir() -> Path:
    return TASKS_DIR


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKADAPTOR_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def text_file(tmp_path_factory) -> Path:
    """Plain English text from the fixture task rows (calibration / perplexity text for tests)."""
    import json

    rows = [json.loads(line) for line in (TASKS_DIR / "hellaswag_validation.jsonl").read_text().splitlines()]
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text("\n\n".join(r["ctx"] + " " + r["endings"][int(r["label"])] for r in rows))
    return path


def make_random_llama(path: Path, num_layers: int = 8, heads: int = 4, kv_heads: int = 2,
                      hidden: int = 32, intermediate: int = 48, seed: int = 0) -> Path:
    """A random-init LLaMA (GQA when kv_heads < heads) with the fixture tokenizer, saved at path."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=512, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=num_layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(TINY_MODEL).save_pretrained(path)
    return path


@pytest.fixture(scope="session", params=["mha", "gqa"])
def random_llama_dir(request, tmp_path_factory) -> Path:
    kv_heads = 4 if request.param == "mha" else 2
    return make_random_llama(tmp_path_factory.mktemp(request.param), kv_heads=kv_heads)
