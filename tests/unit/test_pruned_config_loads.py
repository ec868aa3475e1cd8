"""A width-pruned checkpoint's config loads in a fresh process through load_config alone: the pruned LLaMA
registers itself with transformers' Auto classes there (an import kept only for that side effect)."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, TINY_MODEL


@pytest.mark.slow  # a fresh interpreter
def test_load_config_registers_the_pruned_llama_in_a_fresh_process(tmp_path):
    config = json.loads((TINY_MODEL / "config.json").read_text())
    n = config["num_hidden_layers"]
    config.update({"model_type": "pruned_llama", "architectures": ["PrunedLlamaForCausalLM"],
                   "layer_intermediate_size": [config["intermediate_size"]] * n,
                   "layer_num_attention_heads": [config["num_attention_heads"]] * n,
                   "layer_num_key_value_heads": [config["num_key_value_heads"]] * n})
    (tmp_path / "config.json").write_text(json.dumps(config))
    code = ("import sys; from rankadaptor.models.loading import load_config; "
            "print(load_config(sys.argv[1]).model_type)")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "pruned_llama", result.stderr[-2000:]
