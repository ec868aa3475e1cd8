"""The GPU steps' scratch volume (docs/deploy.md 9.4): compiled in with `--scratch-size`, a generic ephemeral volume
on every GPU step and on no CPU step, the library's cache and TMPDIR on it; and the preflight refuses a job whose
model cannot fit it, in one line, before any GPU step."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from transformers import LlamaConfig

from rankadaptor.errors import UserError
from rankadaptor.job import load_job
from rankadaptor.ops.preflight import check_job, check_scratch
from rankadaptor.widths import model_bytes


ROOT = Path(__file__).resolve().parents[2]


def platform_and_configure(path: Path) -> tuple[dict, dict]:
    """(a compiled main pipeline's Kubernetes config per executor, its configure task's scratch_size argument)."""
    spec, platform = yaml.safe_load_all(path.read_text())
    configure = spec["root"]["dag"]["tasks"]["configure"]["inputs"]["parameters"]["scratch_size"]
    return platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"], configure


@pytest.mark.slow  # compiles the four pipelines in a fresh interpreter (the sub-pipelines are built at import)
def test_every_gpu_step_and_no_cpu_step_gets_the_volume_with_the_cache_on_it(tmp_path):
    subprocess.run([sys.executable, "-m", "pipelines", "compile", "--output", str(tmp_path), "--scratch-size", "150Gi"],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    executors, configure = platform_and_configure(tmp_path / "rankadaptor.yaml")
    assert configure == {"runtimeValue": {"constant": "150Gi"}}  # the preflight checks the size compiled in
    gpu = {name for name, config in executors.items() if "nodeSelector" in config}
    assert {"exec-recover", "exec-evaluate", "exec-prune", "exec-baselines", "exec-bootstrap"} <= gpu
    for name, config in executors.items():
        volumes = config.get("genericEphemeralVolume", [])
        if name in gpu:
            assert volumes == [{"volumeName": "scratch", "mountPath": "/scratch", "accessModes": ["ReadWriteOnce"],
                                "size": "150Gi", "defaultStorageClass": True}], name
        else:
            assert volumes == [], name
    deployed = yaml.safe_load_all((tmp_path / "rankadaptor.yaml").read_text())
    recover = next(deployed)["deploymentSpec"]["executors"]["exec-recover"]["container"]["env"]
    assert {"name": "RANKADAPTOR_CACHE", "value": "/scratch/cache"} in recover
    assert {"name": "TMPDIR", "value": "/scratch"} in recover


def test_the_committed_pipelines_have_no_volume_and_tell_configure_so():
    executors, configure = platform_and_configure(ROOT / "pipelines" / "compiled" / "rankadaptor.yaml")
    assert configure == {"runtimeValue": {"constant": ""}}
    assert not any("genericEphemeralVolume" in config for config in executors.values())


def llama_7b(path):
    """A LLaMA-7B's config.json alone (what the preflight reads of a base model)."""
    LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, vocab_size=32000, dtype="bfloat16").save_pretrained(path)
    return str(path)


def test_a_7b_model_needs_its_two_copies_with_headroom(tmp_path):
    job = load_job(overrides={"base_model": llama_7b(tmp_path / "llama-7b")})
    assert 13.4e9 < model_bytes(LlamaConfig.from_pretrained(job.base_model)) < 13.6e9  # 6.74 B parameters in bf16
    with pytest.raises(UserError, match=r"scratch_size=20Gi cannot hold .*llama-7b.*\(12\.6 GiB\).*31\.4 GiB with "
                                        r"headroom.*--scratch-size 32Gi"):
        check_scratch(job, "20Gi")
    check_scratch(job, "32Gi")


def test_the_bundled_job_fits_and_a_bad_size_is_named_in_the_one_line():
    job = load_job()
    check_job(job, scratch_size="1Gi")
    with pytest.raises(UserError, match="scratch_size='lots' is not accepted: give a Kubernetes quantity"):
        check_job(job, scratch_size="lots")
