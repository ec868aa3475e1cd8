"""The evaluate stage on the tiny model and the bundled 200-row task samples (it scores at chance: these
tests check the path, the splits and the bookkeeping, not quality)."""

import copy
import json
import math
import statistics

import pytest
import torch

from rankadaptor import config as config_lib
from rankadaptor.data import token_stream
from rankadaptor.errors import UserError
from rankadaptor.evaluate.config import EvalConfig
from rankadaptor.evaluate.harness import evaluate
from rankadaptor.evaluate.stage import run_evaluate
from rankadaptor.evaluate.tasks import TASKS, split_rows
from rankadaptor.models.loading import load_model


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir))


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "seconds"}


@pytest.mark.slow
def test_offline_evaluation_is_repeatable_and_splits_are_disjoint(tiny, tasks_dir):
    model, tokenizer = tiny
    select = EvalConfig(data_dir=str(tasks_dir), split="select", limit=6)
    first, second = evaluate(model, tokenizer, select), evaluate(model, tokenizer, select)
    assert without_timing(first) == without_timing(second)
    assert list(first["tasks"]) == list(TASKS) and first["split"] == "select"
    for name, task in first["tasks"].items():
        assert task["metric"] == TASKS[name].metric
        assert task["n"] == len(task["rows"]) == len(task["row_ids"]) <= 6
        assert set(task["rows"]) <= {0, 1} and task["value"] == pytest.approx(sum(task["rows"]) / task["n"])
        assert task["stderr"] == pytest.approx(statistics.stdev(task["rows"]) / math.sqrt(task["n"]))
        chosen = split_rows(name, 200, "select", 0.5, 0, limit=6)
        assert sorted(task["row_ids"] + task["skipped"]) == chosen
    assert first["mean"] == pytest.approx(sum(t["value"] for t in first["tasks"].values()) / len(TASKS))

    report = evaluate(model, tokenizer, EvalConfig(tasks=["hellaswag"], data_dir=str(tasks_dir), split="report", limit=6))
    assert report["split"] == "report"
    all_select = split_rows("hellaswag", 200, "select", 0.5, 0)
    assert report["tasks"]["hellaswag"]["row_ids"] and not set(report["tasks"]["hellaswag"]["row_ids"]) & set(all_select)


def test_split_rows_partition_nest_and_depend_on_seed():
    for name, n, fraction in [("boolq", 200, 0.5), ("piqa", 101, 0.3), ("winogrande", 7, 0.5)]:
        select = split_rows(name, n, "select", fraction, seed=3)
        report = split_rows(name, n, "report", fraction, seed=3)
        assert not set(select) & set(report)
        assert sorted(select + report) == split_rows(name, n, "all", fraction, seed=3) == list(range(n))
        assert len(select) == round(n * fraction) and select == sorted(select)
        assert set(split_rows(name, n, "select", fraction, seed=3, limit=2)) <= set(
            split_rows(name, n, "select", fraction, seed=3, limit=3)) <= set(select)
        assert select == split_rows(name, n, "select", fraction, seed=3)
    assert split_rows("boolq", 200, "select", 0.5, seed=0) != split_rows("boolq", 200, "select", 0.5, seed=1)
    assert split_rows("boolq", 200, "select", 0.5, seed=0) != split_rows("piqa", 200, "select", 0.5, seed=0)
    # under a limit the rows are a random sample, not the start of the file
    assert split_rows("boolq", 200, "all", 0.5, seed=0, limit=10) != list(range(10))


@pytest.mark.slow
def test_peft_model_and_its_merged_form_score_the_same(tiny, tasks_dir):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny
    base = copy.deepcopy(model)
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    peft_model = get_peft_model(base, lora)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.2)
    peft_model.train()  # evaluate must switch dropout off itself, and give training mode back
    ids = torch.tensor([[1, 309, 375, 438, 437, 272]])
    with torch.no_grad():
        peft_model.eval()
        assert not torch.allclose(peft_model(ids).logits, model(ids).logits, atol=1e-3)
        peft_model.train()

    config = EvalConfig(tasks=["arc_easy", "winogrande"], data_dir=str(tasks_dir), split="all", limit=20)
    with_adapter = evaluate(peft_model, tokenizer, config)
    assert peft_model.training
    merged = evaluate(peft_model.merge_and_unload(), tokenizer, config)
    for name in config.tasks:
        assert with_adapter["tasks"][name]["row_ids"] == merged["tasks"][name]["row_ids"]
        assert with_adapter["tasks"][name]["rows"] == merged["tasks"][name]["rows"]
    assert with_adapter["mean"] == merged["mean"]


def test_perplexity_matches_a_direct_computation(tiny, tasks_dir, tmp_path):
    model, tokenizer = tiny
    passages = [json.loads(line)["passage"] for line in (tasks_dir / "boolq_validation.jsonl").read_text().splitlines()[:8]]
    text_file = tmp_path / "held_out.txt"
    text_file.write_text("\n\n".join(passages))
    config = EvalConfig(tasks=["arc_easy"], data_dir=str(tasks_dir), limit=2, ppl_text=str(text_file), ppl_seq_len=64)
    metrics = evaluate(model, tokenizer, config)

    stream = token_stream(tokenizer, passages)
    windows = stream[: len(stream) // 64 * 64].view(-1, 64)
    with torch.no_grad():  # every window has the same length, so the mean of window losses is the token mean
        losses = [model(input_ids=w[None], labels=w[None]).loss for w in windows]
    assert metrics["perplexity"] == pytest.approx(math.exp(torch.stack(losses).mean().item()), rel=1e-4)


def test_run_evaluate_writes_metrics(tiny_model_dir, tasks_dir, tmp_path):
    config = EvalConfig(tasks=["openbookqa"], data_dir=str(tasks_dir), split="report", limit=3, device="cpu")
    returned = run_evaluate(config, str(tiny_model_dir), str(tmp_path / "eval"))
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (tmp_path / "eval" / "manifest.json").exists()
    assert written == json.loads(json.dumps(returned))
    assert set(written) >= {"tasks", "mean", "split", "seconds"} and written["tasks"]["openbookqa"]["n"] == 3


@pytest.mark.slow
def test_run_evaluate_reads_task_data_from_s3_and_writes_metrics_there(tiny_model_dir, tasks_dir, tmp_path, monkeypatch):
    import boto3
    from servers import seaweedfs

    from rankadaptor.infra import storage

    (tmp_path / "seaweedfs").mkdir()
    with seaweedfs(tmp_path / "seaweedfs") as s3:
        for name, value in s3.env().items():
            monkeypatch.setenv(name, value)
        client = boto3.client("s3")
        for name in ("winogrande_validation.jsonl", "arc_challenge_test.jsonl"):
            client.upload_file(str(tasks_dir / name), s3.bucket, f"tasks/{name}")
        config = EvalConfig(tasks=["winogrande", "arc_challenge"], data_dir=f"s3://{s3.bucket}/tasks", limit=4,
                            device="cpu")
        returned = run_evaluate(config, str(tiny_model_dir), f"s3://{s3.bucket}/eval")
        written = json.loads((storage.local_dir(f"s3://{s3.bucket}/eval") / "metrics.json").read_text())
    local = evaluate(*load_model(str(tiny_model_dir)), EvalConfig(tasks=config.tasks, data_dir=str(tasks_dir), limit=4))
    assert without_timing(written) == without_timing(json.loads(json.dumps(returned)))
    assert written["tasks"] == local["tasks"]


@pytest.mark.parametrize("config, message", [
    (EvalConfig(tasks=["mmlu"]), "unknown task(s) ['mmlu']; accepted: ['boolq'"),
    (EvalConfig(tasks=["arc_easy"], split="train"), "split='train' is not accepted"),
    (EvalConfig(tasks=["arc_easy"], limit=2), "cannot load the task data from the hub (offline? pass data_dir)"),
])
def test_run_evaluate_refuses_bad_config_before_writing(tiny_model_dir, tmp_path, config, message):
    with pytest.raises(UserError) as error:
        run_evaluate(config, str(tiny_model_dir), str(tmp_path / "eval"))
    assert message in str(error.value)
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("values, message", [
    ({"tasks": ["boolq", "mmlu"]}, "unknown task(s) ['mmlu']; accepted: ['boolq', 'piqa'"),
    ({"split": "test"}, "split='test' is not accepted"),
    ({"select_fraction": 1.0}, "select_fraction=1.0 is outside (0, 1)"),
    ({"limit": 0}, "limit=0 must be a positive integer"),
    ({"batch_size": -1}, "batch_size=-1 must be a positive integer"),
])
def test_bad_options_are_refused(values, message):
    with pytest.raises(UserError) as error:
        config_lib.from_dict(EvalConfig, values)
    assert message in str(error.value)


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ('{"goal": "a", "sol1": "b"}\n', "lacks field(s) ['sol2', 'label']"),
    ('{"goal": "a", "sol1": "b", "sol2": "c", "label": 0}\nnot json\n', "line 2 is not valid JSON"),
    (None, "needs the file piqa_validation.jsonl"),
    (b'{"goal": "caf\xe9", "sol1": "b", "sol2": "c", "label": 0}\n', "is not UTF-8 text"),
])
def test_bad_data_files_are_refused_before_anything_is_written(tiny_model_dir, tasks_dir, tmp_path, content, message):
    data = tmp_path / "data"
    data.mkdir()
    (data / "arc_easy_test.jsonl").write_text((tasks_dir / "arc_easy_test.jsonl").read_text())
    if isinstance(content, bytes):
        (data / "piqa_validation.jsonl").write_bytes(content)
    elif content is not None:
        (data / "piqa_validation.jsonl").write_text(content)
    config = EvalConfig(tasks=["arc_easy", "piqa"], data_dir=str(data), limit=2, device="cpu")
    with pytest.raises(UserError) as error:
        run_evaluate(config, str(tiny_model_dir), str(tmp_path / "eval"))
    assert message in str(error.value)
    assert not (tmp_path / "eval").exists() and list(tmp_path.iterdir()) == [data]
