"""The recovery training loop: AdamW with warmup, gradient accumulation, bf16 autocast on GPU, and
checkpoints that make a killed run resume to the same result as an uninterrupted one.

The loss of an optimizer step is the mean over all label tokens of its micro-batches (each micro-batch's
mean loss weighted by its token count), so accumulation does not change what is optimised. A checkpoint
holds the trainable weights, optimizer and scheduler state, RNG state and (for AdaLoRA) the rank
allocator's importance averages; the batch order is a function of (seed, epoch), so a resumed run trains
on exactly the batches the uninterrupted one would have. It also records the settings that shape the
result (settings.json: them and their hash): a run with other settings refuses to resume it, naming what
differs, rather than mixing two runs or failing on mismatched tensor shapes; `restart` discards it.

Speed on GPU: micro-batches are cut by a token budget from length-sorted examples (batches.py), so forward
passes are large and hardly padded; the loop never waits for the GPU inside a step (token counts are
taken on the CPU before the copy, the loss is summed on the device and read once per step); AdamW is the
fused CUDA kernel; `compile` runs each decoder layer under torch.compile (regional compilation: one
layer's graph serves every layer of its shape, so compiling costs seconds, not minutes, at 1.1B) with
dynamic shapes (micro-batches vary in shape), or automatic ones with `packing` (rows of at most eight
lengths: static first, then one dynamic recompilation).
Optional levers, each measured in benchmarks/speed/recover_throughput.py: `packing` (batches.py), `liger`
(kernels.py: fused linear cross-entropy, RMSNorm, SwiGLU, RoPE; GPU only) and `prefetch` (the next
step's batches are built and pinned in a background thread while the GPU runs this one).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from rankadaptor.errors import UserError
from rankadaptor.infra import storage
from rankadaptor.recover.batches import IGNORE, collate, epoch_steps, micro_batches, pack, packed_rows


@dataclass
class TrainSettings:
    lr: float
    epochs: int
    batch_size: int
    micro_batch_tokens: int
    warmup_steps: int
    max_grad_norm: float
    save_steps: int
    seed: int
    max_steps: int | None = None
    group_by_length: bool = True
    compile: bool = False
    packing: bool = False
    liger: bool = False
    prefetch: bool = False


@dataclass
class TrainLog:
    step: int = 0
    losses: list[float] = field(default_factory=list)
    real_tokens: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0
    step_seconds: list[float] = field(default_factory=list)
    resumed_from: int | None = None
    compiled_graphs: int = 0  # graphs torch.compile built in this run (1 + graph breaks + recompiles)


def _warmup_linear(warmup: int, total: int):
    return lambda step: min((step + 1) / max(1, warmup), max(0.0, (total - step) / max(1, total - warmup)))


SLOTS = ("a", "b")  # saves alternate, so a save in progress never hides the checkpoint a resume would read
SETTINGS = "settings.json"  # what shaped the checkpointed run, and its hash


def settings_record(identity: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(identity, sort_keys=True, default=str)
    return {"hash": hashlib.sha256(text.encode()).hexdigest(), "settings": json.loads(text)}


def _shown(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64:  # a checksum: its start tells them apart
        return value[:12] + "..."
    return json.dumps(value) if value is not None else "none"


def _check_settings(slot: str, identity: dict[str, Any]) -> None:
    """Refuse to resume the checkpoint at slot unless it was written by a run with these settings."""
    path = storage.local_dir(slot) / SETTINGS
    saved = storage.read_json(path) if path.is_file() else {"hash": None, "settings": {}}
    now = settings_record(identity)
    if saved["hash"] == now["hash"]:
        return
    old, new = saved["settings"], now["settings"]
    differ = [f"{k}: {_shown(old.get(k))} there, {_shown(new.get(k))} now"
              for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    what = "; ".join(differ) if old else "it records no settings (written by an older version)"
    uri = slot.rsplit("/", 1)[0]
    raise UserError(f"checkpoint {uri!r} is of a run with other settings ({what}): resuming it would mix two runs; "
                    f"pass restart=true (--restart true) to discard it and train from the start, or rerun with "
                    f"its settings to resume it")


def check_checkpoint(uri: str, identity: dict[str, Any], restart: bool) -> None:
    """Before any compute: a checkpoint at uri of a run with other settings is refused (one line naming what
    differs), or discarded with restart (so is one of the same settings)."""
    latest = _latest_checkpoint(uri)
    if latest is None:
        return
    if restart:
        storage.remove(uri)
        return
    _check_settings(latest, identity)


def _save_checkpoint(uri: str, model, optimizer, scheduler, log: TrainLog, save_index: int,
                     identity: dict[str, Any]) -> None:
    trainable = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
    allocator = getattr(model.base_model, "rankallocator", None)
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "cpu_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
             "allocator": None if allocator is None else
             {k: getattr(allocator, k) for k in ("ipt", "exp_avg_ipt", "exp_avg_unc")}}
    with storage.writing_dir(storage.join(uri, SLOTS[save_index % 2])) as out:
        save_file(trainable, out / "trainable.safetensors")
        torch.save(state, out / "state.pt")
        (out / "log.json").write_text(json.dumps(vars(log)))
        (out / SETTINGS).write_text(json.dumps(settings_record(identity)))


def _latest_checkpoint(uri: str) -> str | None:
    complete = [slot for slot in (storage.join(uri, s) for s in SLOTS) if storage.exists(slot)]
    return max(complete, key=lambda slot: storage.read_json(storage.local_dir(slot) / "log.json")["step"],
               default=None)


def _load_checkpoint(uri: str, model, optimizer, scheduler, identity: dict[str, Any]) -> TrainLog | None:
    latest = _latest_checkpoint(uri)
    if latest is None:
        return None
    _check_settings(latest, identity)
    directory = storage.local_dir(latest)
    trainable = load_file(directory / "trainable.safetensors")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in trainable.items():
            params[name].copy_(value)
    try:
        state = torch.load(directory / "state.pt", weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and plain values
        raise UserError(f"checkpoint {latest!r} holds more than tensors and plain values, refused "
                        f"({type(e).__name__}); delete it to restart the run") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["cpu_rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    if state["allocator"] is not None:
        for key, value in state["allocator"].items():
            setattr(model.base_model.rankallocator, key, value)
    log = TrainLog(**json.loads((directory / "log.json").read_text()))
    log.resumed_from = log.step
    return log


def step_plan(examples: list[dict], settings: TrainSettings) -> list[list[list[int]]]:
    """Per optimizer step, its micro-batches of example indices; an epoch's last step may be smaller."""
    lengths = [len(e["input_ids"]) for e in examples]
    cut = packed_rows if settings.packing else micro_batches
    plan = [cut(step, lengths, settings.micro_batch_tokens) for epoch in range(settings.epochs)
            for step in epoch_steps(lengths, settings.batch_size, settings.seed, epoch, settings.group_by_length)]
    return plan[:settings.max_steps] if settings.max_steps else plan


def _prepare(examples: list[dict], step: list[list[int]], settings: TrainSettings, pad_id: int,
             pin: bool) -> list[tuple[dict[str, torch.Tensor], int, int]]:
    """A step's micro-batches on the CPU, each with its label tokens and real tokens."""
    prepared = []
    for indices in step:
        rows = [examples[i] for i in indices]
        batch = pack(rows, pad_id, settings.micro_batch_tokens) if settings.packing else collate(rows, pad_id)
        if pin:
            batch = {k: v.pin_memory() for k, v in batch.items()}
        prepared.append((batch, int((batch["labels"][:, 1:] != IGNORE).sum()),
                         sum(len(e["input_ids"]) for e in rows)))
    return prepared


def _loss_function(model, settings: TrainSettings):
    """forward(batch) -> the micro-batch's mean loss over its label tokens.

    With liger the decoder's last hidden states go to liger's fused linear cross-entropy, which never
    holds the full-vocabulary logits and skips masked tokens."""
    if not settings.liger:
        return lambda batch: model(**batch, use_cache=False).loss
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    causal_lm = model.get_base_model()
    decoder, head, fused = causal_lm.model, causal_lm.lm_head, LigerFusedLinearCrossEntropyLoss()

    def forward(batch):
        labels = batch["labels"]
        hidden = decoder(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).last_hidden_state
        return fused(head.weight, hidden[:, :-1].reshape(-1, hidden.shape[-1]), labels[:, 1:].reshape(-1))

    return forward


@contextmanager
def _compiled_layers(model, settings: TrainSettings) -> Iterator[None]:
    """Each decoder layer's forward under torch.compile for the run, restored afterwards."""
    if not settings.compile:
        yield
        return
    layers = model.get_base_model().model.layers
    for layer in layers:
        layer.forward = torch.compile(layer.forward, dynamic=None if settings.packing else True)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward  # the instance attribute: the class's forward again


def _compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def train(model, examples: list[dict], settings: TrainSettings, pad_id: int, checkpoint_uri: str,
          adalora: bool = False, identity: dict[str, Any] | None = None,
          on_step: Callable[[int], None] | None = None) -> TrainLog:
    """Train the model's trainable (adapter) parameters in place; resumes from checkpoint_uri if present and
    written by a run of the same identity (the settings that shape the result: run_recover's). on_step(step) runs
    before each optimizer step (a supernet draws its truncation there: supernet.py)."""
    identity = identity or {}
    device = model.device
    on_gpu = device.type == "cuda"
    if settings.liger and not on_gpu:
        raise UserError(f"liger=True needs a CUDA GPU (liger-kernel's Triton kernels); this run is on {device}")
    plan = step_plan(examples, settings)
    steps = len(plan)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.lr,
                                  weight_decay=0.0, fused=on_gpu)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_linear(settings.warmup_steps, steps))
    torch.manual_seed(settings.seed)
    log = _load_checkpoint(checkpoint_uri, model, optimizer, scheduler, identity) or TrainLog()
    graphs = _compiled_graphs()
    if settings.liger:
        from rankadaptor.recover.kernels import liger_kernels
    kernels = liger_kernels(model) if settings.liger else nullcontext()
    pool = ThreadPoolExecutor(max_workers=1) if settings.prefetch else None

    def prepare(step):
        return _prepare(examples, plan[step], settings, pad_id, on_gpu and settings.prefetch)

    model.train()
    bar = tqdm(total=steps, initial=log.step, desc="recover", unit="step")
    with kernels, _compiled_layers(model, settings):
        forward = _loss_function(model, settings)
        upcoming = pool.submit(prepare, log.step) if pool and log.step < steps else None
        for step in range(log.step, steps):
            started = time.time()
            if on_step:
                on_step(step)
            batches = upcoming.result() if upcoming else prepare(step)
            upcoming = pool.submit(prepare, step + 1) if pool and step + 1 < steps else None
            n_targets = sum(n for _, n, _ in batches)
            step_loss = torch.zeros((), device=device)
            for batch, n, real in batches:
                weight = n / n_targets
                log.real_tokens += real
                log.padded_tokens += batch["input_ids"].numel()
                if n == 0:  # nothing to learn from (every label masked); its mean loss would be NaN
                    continue
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                try:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
                        loss = forward(batch) * weight
                    loss.backward()
                except torch.OutOfMemoryError:
                    rows, length = batch["input_ids"].shape
                    raise UserError(f"out of {device} memory on a micro-batch of {rows} x {length} tokens: lower "
                                    f"micro_batch_tokens (now {settings.micro_batch_tokens})") from None
                step_loss += loss.detach()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                           settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            if adalora:
                model.base_model.update_and_allocate(step)
            optimizer.zero_grad(set_to_none=True)
            step_loss = step_loss.item()  # the step's one wait for the GPU
            elapsed = time.time() - started
            log.step, log.seconds = step + 1, log.seconds + elapsed
            log.step_seconds.append(elapsed)
            log.losses.append(step_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{log.real_tokens / max(log.seconds, 1e-9):.0f}")
            if log.step % settings.save_steps == 0 and log.step < steps:
                _save_checkpoint(checkpoint_uri, model, optimizer, scheduler, log, log.step // settings.save_steps,
                                 identity)
    if pool:
        pool.shutdown(wait=True, cancel_futures=True)
    bar.close()
    log.compiled_graphs = _compiled_graphs() - graphs
    model.eval()
    return log
