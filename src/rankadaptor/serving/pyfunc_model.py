"""The registered model's code (MLflow "models from code": this file is logged as the model, no pickle).

MLflow copies this file into the model and runs it at load time; `set_model` at the bottom names the
model object. `load_context` rebuilds pruned base + LoRA adapter with `rankadaptor.recover.adapters.load_adapted`
from the model's artifacts:
- `adapter`: the adapter artifact directory (peft weights + rank_vector.json + manifest.json),
- `base_model_ref`: JSON {"uri", "checksum"} of the pruned base model,
- `base_model` (only when registered self-contained): a copy of the pruned base model directory.
Without the copy the base is fetched from its URI (s3:// or a shared path) and must still have the
recorded checksum, so a model version never silently runs on another base. Serving needs the rankadaptor
package installed (the project image), since the base may be a per-layer-width pruned LLaMA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel

DEFAULT_MAX_NEW_TOKENS = 32


def base_model_dir(artifacts: dict[str, str]) -> Path:
    """The local, checksum-verified directory of the pruned base model named by the artifacts."""
    from rankadaptor.errors import UserError
    from rankadaptor.infra import storage

    ref = storage.read_json(Path(artifacts["base_model_ref"]))
    local = storage.local_dir(artifacts["base_model"] if "base_model" in artifacts else ref["uri"])
    if storage.checksum(local) != ref["checksum"]:
        raise UserError(f"pruned base model {ref['uri']!r} has checksum {storage.checksum(local)} but this model "
                        f"version was registered with {ref['checksum']}: the base model changed since")
    return local


def prompts_of(model_input: Any) -> list[str]:
    """Prompts from a list of strings, one string, or a DataFrame/dict with a `prompt` column.

    MLflow hands a list of strings over as a one-column DataFrame: its only column is taken too."""
    from rankadaptor.errors import UserError

    if hasattr(model_input, "columns"):
        columns = list(model_input.columns)
        if "prompt" not in columns and len(columns) != 1:
            raise UserError(f"input has columns {columns}: expected a 'prompt' column or a list of prompts")
        model_input = model_input["prompt" if "prompt" in columns else columns[0]]
    elif isinstance(model_input, dict):
        model_input = model_input.get("prompt", [])
    prompts = [model_input] if isinstance(model_input, str) else list(model_input)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise UserError("input must be a non-empty list of prompt strings or a DataFrame with a 'prompt' column")
    return prompts


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
             temperature: float = 0.0) -> list[str]:
    """The continuation of each prompt (prompt not included); temperature 0 decodes greedily.

    max_new_tokens is capped so that prompt + continuation fit the model's context, with a warning."""
    import logging
    from numbers import Integral, Real

    import torch

    from rankadaptor.errors import check

    check(isinstance(max_new_tokens, Integral) and not isinstance(max_new_tokens, bool) and max_new_tokens >= 1,
          f"max_new_tokens={max_new_tokens!r} is not accepted: give an integer >= 1")
    check(isinstance(temperature, Real) and not isinstance(temperature, bool) and 0 <= temperature < 1e3,
          f"temperature={temperature!r} is not accepted: give a number >= 0 (0 = greedy)")
    tokenizer.padding_side = "left"  # decoder-only batches: new tokens must follow each prompt directly
    batch = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    room = model.config.max_position_embeddings - batch["input_ids"].shape[1]
    check(room >= 1, f"the longest prompt has {batch['input_ids'].shape[1]} tokens, the model's context "
                     f"{model.config.max_position_embeddings}: shorten it")
    max_new_tokens = int(max_new_tokens)
    if max_new_tokens > room:
        logging.getLogger(__name__).warning("max_new_tokens=%d capped at %d: the model's context is %d tokens",
                                            max_new_tokens, room, model.config.max_position_embeddings)
        max_new_tokens = room
    sampling = {"do_sample": True, "temperature": float(temperature)} if temperature > 0 else {"do_sample": False}
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                             **sampling)
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


class RankAdaptorModel(PythonModel):
    """Pruned LLaMA + per-layer-rank LoRA adapter, answering prompts with generated text."""

    def load_context(self, context) -> None:
        from rankadaptor.recover.adapters import load_adapted

        self.model, self.tokenizer = load_adapted(str(base_model_dir(context.artifacts)), context.artifacts["adapter"])

    def predict(self, context, model_input: list[str], params: dict[str, Any] | None = None) -> list[str]:
        """model_input's type hint makes MLflow check every request before this runs: a number, a list or a null
        among the prompts is an HTTP 400 naming it, never turned into the text of a prompt."""
        from mlflow.exceptions import MlflowException

        from rankadaptor.errors import UserError

        params = params or {}
        try:
            return generate(self.model, self.tokenizer, prompts_of(model_input),
                            params.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS), params.get("temperature", 0.0))
        except UserError as e:  # a bad request: HTTP 400 with this one line, no stack trace
            raise MlflowException.invalid_parameter_value(str(e)) from None


mlflow.models.set_model(RankAdaptorModel())
