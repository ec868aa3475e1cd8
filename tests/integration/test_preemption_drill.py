"""The preemption drill through kfp.local: two trials' recover steps (as a search's parallel trials), the
one killed (SIGKILL, as a preempted pod) mid-training; the rerun resumes it from the durable checkpoint
(runtime.checkpoint_root, keyed by the recovery's identity) to a bit-identical adapter, and the other trial
never reads that checkpoint: each trial's identity, rank vector included, names its own."""

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from artifacts import CPU_PLACEMENT, write_corpus, write_proposal
from conftest import TINY_MODEL
from kfp import dsl
from safetensors.torch import load_file

from components.recover import recover
from pipelines.local import _run
from pipelines.placement import gpu_step
from rankadaptor.errors import ServiceError, UserError
from rankadaptor.job import job_to_json, load_job

pytestmark = pytest.mark.slow
TASKS = ("recover", "recover-2")  # the two trials' task names
VECTORS = ([8, 6, 10, 8], [8, 10, 6, 8])  # two trials of one search, in budget on the tiny model's 4 layers


def inputs(root: Path) -> tuple[str, list[str]]:
    return write_corpus(root / "data"), [write_proposal(root / f"proposal-{n}", v) for n, v in enumerate(VECTORS)]


def two_trials(job: str, data: str, proposals: list[str]):
    @dsl.pipeline(name="two-trials")
    def pipeline():
        model = dsl.importer(artifact_uri=str(TINY_MODEL), artifact_class=dsl.Model).output
        corpus = dsl.importer(artifact_uri=data, artifact_class=dsl.Dataset).output
        for uri in proposals:
            proposed = dsl.importer(artifact_uri=uri, artifact_class=dsl.Artifact).output
            gpu_step(recover, CPU_PLACEMENT, job=job, pruned_model=model, data=corpus, proposal=proposed)

    return pipeline


def task_dirs(root: Path) -> list[Path]:
    run = max((root / "pipeline").glob("two-trials-*"), key=lambda p: p.stat().st_mtime)
    return [run / task for task in TASKS]


def adapters(root: Path) -> list[dict]:
    return [load_file(task / "adapter" / "adapter_model.safetensors") for task in task_dirs(root)]


def outputs(root: Path) -> list[Path]:
    """Each task's executor output (its artifacts' metadata: the recover component records resumed_from)."""
    return [task / "executor_output.json" for task in task_dirs(root)]


def executors() -> list[int]:
    """This process's kfp.local step subprocesses (python -m kfp.dsl.executor_main)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
            pid = int(proc.name)
            parent = pid
            while parent > 1 and parent != os.getpid():
                parent = int((Path("/proc") / str(parent) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid() and b"kfp.dsl.executor_main" in cmdline:
            found.append(pid)
    return found


def saved_step(durable: Path) -> int:
    logs = [slot / "log.json" for slot in durable.glob("recover-*/*") if (slot / "manifest.json").exists()]
    return max((json.loads(log.read_text())["step"] for log in logs), default=0)


def test_a_killed_trial_resumes_bit_identically_and_parallel_trials_never_share_a_checkpoint(tmp_path):
    data, proposals = inputs(tmp_path)
    options = {"recover": {"epochs": 4}, "runtime": {"save_steps": 1, "micro_batch_tokens": 1024}}
    reference_job = load_job(None, {**options, "runtime": {**options["runtime"],
                                                          "checkpoint_root": str(tmp_path / "reference-ckpt")}})
    _run(two_trials(job_to_json(reference_job), data, proposals), {}, tmp_path / "reference", "", verbose=False)
    reference = adapters(tmp_path / "reference")

    durable = tmp_path / "durable"
    job = job_to_json(load_job(None, {**options, "runtime": {**options["runtime"], "checkpoint_root": str(durable)}}))
    killed: list[int] = []

    def preempt() -> None:  # kill the trial's step that runs first once it has a checkpoint of step 2 or later
        deadline = time.time() + 300
        while time.time() < deadline and saved_step(durable) < 2:
            time.sleep(0.02)
        for pid in executors():
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    watcher = threading.Thread(target=preempt)
    watcher.start()
    with pytest.raises((UserError, ServiceError), match=r"step recover(-2)? failed") as error:
        _run(two_trials(job, data, proposals), {}, tmp_path / "killed", "", verbose=False)
    watcher.join()
    victim = TASKS.index(re.search(r"step ([\w-]+) failed", str(error.value))[1])  # kfp.local's order varies
    assert killed, "the first trial finished before it could be killed"
    kept = sorted(p.name for p in durable.glob("recover-*"))
    assert len(kept) == 1 and saved_step(durable) >= 2  # the killed trial's checkpoint, and only it

    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:  # every checkpoint folder the rerun's two trials use
        while not done.is_set():
            seen.update(p.name for p in durable.glob("recover-*"))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    _run(two_trials(job, data, proposals), {}, tmp_path / "rerun", "", verbose=False)
    done.set()
    watcher.join()
    assert len(seen) == 2 and kept[0] in seen  # the first trial resumed its own; the second had its own
    resumed = [json.loads(path.read_text())["artifacts"]["adapter"]["artifacts"][0]["metadata"]["resumed_from"]
               for path in outputs(tmp_path / "rerun")]
    assert resumed[victim] >= 2 and resumed[1 - victim] is None  # the killed trial resumed; the other started afresh
    assert not list(durable.glob("recover-*"))  # each checkpoint is removed once its adapter is written
    for ours, theirs in zip(adapters(tmp_path / "rerun"), reference, strict=True):
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[name], theirs[name]) for name in ours)  # bit-identical
