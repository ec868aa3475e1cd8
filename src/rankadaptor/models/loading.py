"""Loading (pruned) LLaMA checkpoints safely: the device, the config and the base model with its tokenizer.

torch and transformers are imported inside the functions, so the light steps that never load a model can
import this module. The width arithmetic is in `rankadaptor.widths`, the pruned-LLaMA classes in
`models.pruned_llama`, and a model with its adapter in `recover.adapters`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rankadaptor.errors import UserError
from rankadaptor.infra import storage

if TYPE_CHECKING:
    import torch
    from transformers import LlamaConfig, PreTrainedModel, PreTrainedTokenizerBase

LLAMA_TYPES = ("llama", "pruned_llama")


def require_gpus(gpu_count: int) -> None:
    """A step placed on a GPU node fails at once, in one line, when the pod sees no GPU (a driver too old for
    the image's CUDA, say) instead of running for hours on CPU; more than one GPU would sit idle. A scratch
    volume (pipelines.placement.scratch) that this user cannot write fails here too, before any download. Off a
    cluster (kfp.local) placement has no effect, so nothing is checked there."""
    import os

    import torch

    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return
    if gpu_count > 1:
        raise UserError(f"gpu_count={gpu_count}: a step uses one GPU; set gpu_count to 1 (or 0 for CPU)")
    if gpu_count == 1 and not torch.cuda.is_available():
        raise UserError("gpu_count=1 but this pod sees no usable GPU (torch.cuda.is_available() is False): check the "
                        "node's NVIDIA driver against the image's CUDA, or set gpu_count to 0 to run on CPU")
    if cache := os.environ.get("RANKADAPTOR_CACHE"):  # the scratch volume (pipelines.placement.scratch)
        try:
            Path(cache).mkdir(parents=True, exist_ok=True)
        except PermissionError:
            raise UserError(f"the scratch volume at {Path(cache).parent} is not writable by uid {os.getuid()}: KFP sets no "
                            "fsGroup, so give it a storage class whose volumes this user can write, or compile without "
                            "--scratch-size (docs/deploy.md 9.4)") from None


def resolve_device(name: str) -> torch.device:
    """'auto' means the GPU when there is one."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device={name!r} is not accepted; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name!r} asked for a GPU but none is available; use auto or cpu")
    return device


def resolve(model_uri: str) -> str:
    """A local directory or hub id for a model given as a local path, s3:// URI or hub id."""
    if storage.is_s3(model_uri):
        return str(storage.local_dir(model_uri, verify_manifest=False))
    path = Path(model_uri).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"model path {model_uri!r} has no config.json: expected a transformers checkpoint "
                            "directory (config.json + safetensors weights)")
        return str(path)
    if model_uri.count("/") == 1 and not model_uri.startswith((".", "/", "~")):
        from huggingface_hub import is_offline_mode, try_to_load_from_cache

        if is_offline_mode() and not isinstance(try_to_load_from_cache(model_uri, "config.json"), str):
            raise UserError(f"model {model_uri!r} not found: no such local directory, and no cached hub model of "
                            "that id while offline (HF_HUB_OFFLINE=1); check the path")
        return model_uri  # a hub id; resolved by transformers (from its cache when offline)
    raise UserError(f"model {model_uri!r} not found: expected a local checkpoint directory, an s3:// URI "
                    "or a hub id like 'org/name'")


def load_config(model_uri: str, source: str | None = None) -> LlamaConfig:
    """The checked config of a LLaMA-family model (source: model_uri already resolved)."""
    from transformers import AutoConfig

    from rankadaptor.models import pruned_llama  # noqa: F401  (registers the pruned LLaMA with the Auto classes)

    source = source or resolve(model_uri)
    try:
        # Explicitly False: left unset, transformers asks on stdin whether to run a checkpoint's own code.
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    except Exception as e:  # transformers raises many kinds; the user needs to know which model failed
        raise UserError(f"cannot read the config of model {model_uri!r}: {e}") from None
    if config.model_type not in LLAMA_TYPES:
        raise UserError(f"model {model_uri!r} has architecture {config.model_type!r}; accepted: LLaMA-family "
                        f"checkpoints with model_type in {list(LLAMA_TYPES)}")
    return config


def load_model(model_uri: str, dtype: torch.dtype | None = None,
               device: str | torch.device = "cpu") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a (pruned) LLaMA checkpoint and its tokenizer from a path, s3:// URI or hub id; dtype
    default float32. Weights are safetensors only and no checkpoint code runs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve(model_uri)
    if not storage.is_s3(model_uri) and (Path(source) / storage.MANIFEST).is_file():
        # A local artifact written by rankadaptor (e.g. a pruned model): refuse it if changed or corrupt,
        # as local_dir does for one fetched from S3.
        storage.verify(Path(source), model_uri)
    config = load_config(model_uri, source)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, config=config, dtype=dtype or torch.float32,
                                                     use_safetensors=True, trust_remote_code=False)
    except Exception as e:
        raise UserError(f"cannot load the weights of model {model_uri!r} (safetensors expected): {e}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except Exception as e:
        raise UserError(f"cannot load the tokenizer of model {model_uri!r}: {e}") from None
    if len(tokenizer) > config.vocab_size:
        raise UserError(f"tokenizer of {model_uri!r} has {len(tokenizer)} tokens but the model's vocab_size is "
                        f"{config.vocab_size}: tokenizer and model do not match")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer
