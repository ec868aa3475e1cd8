"""A user's own task (docs/tasks.md): the multiple-choice JSONL schema and its one-line errors, scoring equal to
lm-eval's multiple-choice rule computed by hand, a text corpus as ppl:<name>, the task data in the trial's
identity (a search on a custom task end to end: tests/integration/test_pipeline_local.py)."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import BUNDLED, TASKS_DIR

from rankadaptor.errors import UserError
from rankadaptor.evaluate.config import EvalConfig
from rankadaptor.evaluate.stage import run_evaluate, score
from rankadaptor.evaluate.tasks import split_rows, task_checksum
from rankadaptor.flows.trials import trial_key
from rankadaptor.job import load_job
from rankadaptor.models.loading import load_model
from rankadaptor.trial import TrialContext

EXAMPLE = TASKS_DIR / "everyday.jsonl"  # the shipped example task (docs/tasks.md)
ROW = {"query": "Snow is", "choices": ["white", "black"], "gold": 0}


def rows_text(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


@pytest.mark.parametrize("content, message", [
    (rows_text(ROW, {"query": "Fire is", "choices": ["hot", "cold"]}),
     "line 2: lacks field(s) ['gold']; each line is {\"query\""),
    (rows_text(ROW, ROW, {**ROW, "gold": 2}), "line 3: gold=2 is out of range: the index of the right answer among "
                                              "2 choices, 0 to 1"),
    (rows_text({**ROW, "gold": -1}), "line 1: gold=-1 is out of range"),
    (rows_text({**ROW, "gold": "0"}), "line 1: gold='0' is out of range"),
    (rows_text(ROW, {**ROW, "choices": ["white"]}), "line 2: choices=['white'] must be a list of at least 2 answers"),
    (rows_text({**ROW, "choices": "white or black"}), "line 1: choices='white or black' must be a list of at least 2"),
    (rows_text({**ROW, "choices": ["white", ""]}), "line 1: choices=['white', ''] must all be non-empty strings"),
    (rows_text({**ROW, "choices": ["white", "white"]}), "line 1: choices=['white', 'white'] repeat an answer"),
    (rows_text({**ROW, "query": ""}), "line 1: query='' must be a non-empty string"),
    (rows_text(ROW, "", "[1, 2]"), "line 3: is not a JSON object"),  # blank lines are skipped but counted
    (rows_text(ROW, "{not json"), "line 2 is not valid JSON"),
    ("\n", "is empty: expected one JSON object per line"),
    (None, "task 'mc:mine' needs the file mine.jsonl in data_dir="),
])
def test_a_bad_task_file_is_one_line_naming_file_line_and_fault(tiny_model_dir, tmp_path, content, message):
    data = tmp_path / "data"
    data.mkdir()
    if content is not None:
        (data / "mine.jsonl").write_text(content)
    config = EvalConfig(tasks=["mc:mine"], data_dir=str(data), split="all", device="cpu")
    with pytest.raises(UserError) as error:
        run_evaluate(config, str(tiny_model_dir), str(tmp_path / "eval"))
    text = str(error.value)
    assert message in text and "\n" not in text
    if content is not None and content.strip():
        assert text.startswith(f"{str(data / 'mine.jsonl')!r} line ")  # names the file first
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("tasks, data_dir, message", [
    (["mc:"], "d", "unknown task(s) ['mc:']; accepted: ['boolq'"),
    (["mc:../secret"], "d", "unknown task(s) ['mc:../secret']"),
    (["ppl:a/b"], "d", "unknown task(s) ['ppl:a/b']"),
    (["qa:mine"], "d", "mc:<name> (your multiple-choice rows <name>.jsonl in the data directory)"),
    (["mc:mine"], None, "task(s) ['mc:mine'] read ['mine.jsonl'] from the data directory: set data_dir"),
    (["ppl:notes"], None, "task(s) ['ppl:notes'] read ['notes.txt'] from the data directory"),
])
def test_task_names_say_what_is_accepted(tasks, data_dir, message):
    with pytest.raises(UserError) as error:
        EvalConfig(tasks=tasks, data_dir=data_dir).validate()
    assert message in str(error.value)


def by_hand(model, tokenizer, rows: list[dict]) -> tuple[list[int], list[int]]:
    """lm-eval's multiple-choice rule written out: each answer is the continuation " <answer>" of the query,
    scored by the sum of its tokens' log-probabilities; acc takes the best sum, acc_norm the best sum per
    character of the answer."""
    acc, acc_norm = [], []
    for row in rows:
        logliks = []
        for choice in row["choices"]:
            context = tokenizer(row["query"])["input_ids"]
            whole = tokenizer(row["query"] + " " + choice)["input_ids"]
            assert whole[:len(context)] == context
            with torch.no_grad():
                logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
            logliks.append(sum(logprobs[i - 1, whole[i]].item() for i in range(len(context), len(whole))))
        lengths = np.array([len(c) for c in row["choices"]], dtype=float)
        acc.append(int(np.argmax(logliks) == row["gold"]))
        acc_norm.append(int(np.argmax(np.array(logliks) / lengths) == row["gold"]))
    return acc, acc_norm


def test_a_custom_task_scores_like_lm_eval_multiple_choice_by_hand(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    model.eval()
    rows = [json.loads(line) for line in EXAMPLE.read_text().splitlines()]
    config = EvalConfig(tasks=["mc:everyday"], data_dir=str(TASKS_DIR), split="all", device="cpu")
    result = score(model, tokenizer, config)["tasks"]["mc:everyday"]
    acc, acc_norm = by_hand(model, tokenizer, rows)
    assert result["metric"] == "acc" and result["n"] == len(rows) == 48 and result["skipped"] == []
    assert result["row_ids"] == list(range(48)) and result["rows"] == acc  # row by row, not only the mean
    assert result["value"] == pytest.approx(np.mean(acc)) and result["acc_norm"] == pytest.approx(np.mean(acc_norm))
    assert 0 < sum(acc) < len(acc)  # a check that discriminates: neither all right nor all wrong


def test_a_custom_task_is_split_and_limited_like_the_lm_eval_tasks(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    config = EvalConfig(tasks=["mc:everyday"], data_dir=str(TASKS_DIR), split="select", limit=None, device="cpu")
    select = score(model, tokenizer, config)["tasks"]["mc:everyday"]
    report = score(model, tokenizer, EvalConfig(**{**vars(config), "split": "report", "limit": 7}))["tasks"]["mc:everyday"]
    assert select["row_ids"] == split_rows("mc:everyday", 48, "select", 0.5, 0) and select["n"] == 24
    assert report["row_ids"] == split_rows("mc:everyday", 48, "report", 0.5, 0, 7) and report["n"] == 7
    assert not set(select["row_ids"]) & set(report["row_ids"])


def test_a_text_corpus_is_scored_as_ppl_name_like_the_heldout_text(tiny_model_dir, tmp_path):
    docs = [d for d in (BUNDLED / "text" / "heldout.txt").read_text().split("\n\n") if d.strip()][:12]
    (tmp_path / "notes.txt").write_text("\n\n".join(docs))
    model, tokenizer = load_model(str(tiny_model_dir))
    config = EvalConfig(tasks=["ppl:notes", "ppl:heldout"], data_dir=str(tmp_path), split="all", device="cpu",
                        ppl_text=str(tmp_path / "notes.txt"))
    tasks = score(model, tokenizer, config)["tasks"]
    assert tasks["ppl:notes"]["n"] == 12 and tasks["ppl:notes"]["metric"] == "loglik_per_token"
    assert sorted(tasks["ppl:notes"]["rows"]) == pytest.approx(sorted(tasks["ppl:heldout"]["rows"]))
    with pytest.raises(UserError, match=r"task 'ppl:other' needs the file other.txt in data_dir="):
        score(model, tokenizer, EvalConfig(tasks=["ppl:other"], data_dir=str(tmp_path), device="cpu"))


def test_a_changed_task_file_is_a_new_trial(tmp_path):
    shutil.copy(EXAMPLE, tmp_path / "everyday.jsonl")
    job = load_job(None, {"eval_data_dir": str(tmp_path), "target_task": "mc:everyday"})
    context = TrialContext("m" * 64, {"ratio": 0.2}, [100] * 4, [[1.0]] * 4, "d" * 64)
    before = trial_key(job, context, "mc:everyday", "select", [8] * 4)
    assert before.task_checksum == task_checksum("mc:everyday", str(tmp_path)) != ""
    assert trial_key(job, context, "mc:everyday", "select", [8] * 4).id == before.id  # same file: same trial
    rows = EXAMPLE.read_text().splitlines()
    (tmp_path / "everyday.jsonl").write_text("\n".join(rows[:-1]) + "\n")  # one row fewer
    assert trial_key(job, context, "mc:everyday", "select", [8] * 4).id != before.id


def test_a_job_accepts_custom_tasks_everywhere_and_refuses_them_without_data():
    job = load_job(None, {"target_task": "mc:everyday", "source_tasks": ["ppl:piqa", "ppl:notes"],
                          "report_tasks": ["boolq", "mc:everyday"]})
    assert job.table_tasks == ["mc:everyday", "boolq"]
    assert job.all_tasks == ["mc:everyday", "boolq", "ppl:piqa", "ppl:notes"]
    with pytest.raises(UserError, match=r"task\(s\) \['ppl:notes'\] read \['notes.txt'\] from the data directory"):
        load_job(None, {"source_tasks": ["ppl:notes"], "eval_data_dir": ""})
    with pytest.raises(UserError, match=r"task 'mc:a b' is not accepted: use an lm-eval task or one of your own"):
        load_job(None, {"target_task": "mc:a b"})



def test_a_task_file_of_its_own_anywhere_is_read_checked_and_keyed_by_content(tiny_model_dir, tmp_path):
    """task_files: a custom task's rows from any path, instead of <name>.jsonl in the data directory (what a
    task catalog gives); scored like the same rows in the data directory, in the job's preflight and identity."""
    from rankadaptor.ops.preflight import job_problems

    mine = tmp_path / "elsewhere" / "rows-v1.jsonl"
    mine.parent.mkdir()
    shutil.copy(EXAMPLE, mine)
    model, tokenizer = load_model(str(tiny_model_dir))
    own = EvalConfig(tasks=["mc:everyday"], task_files={"mc:everyday": str(mine)}, split="all", device="cpu")
    in_dir = EvalConfig(tasks=["mc:everyday"], data_dir=str(TASKS_DIR), split="all", device="cpu")
    assert score(model, tokenizer, own)["tasks"]["mc:everyday"]["rows"] == \
        score(model, tokenizer, in_dir)["tasks"]["mc:everyday"]["rows"]
    job = load_job(None, {"target_task": "mc:everyday", "task_files": {"mc:everyday": str(mine)}})
    assert job.eval_config(job.table_tasks, "select", None).task_files == {"mc:everyday": str(mine)}
    assert task_checksum("mc:everyday", job.eval_data_dir, job.task_files) == task_checksum("mc:everyday", str(TASKS_DIR))
    mine.write_text(EXAMPLE.read_text().replace('"gold": 0', '"gold": 7', 1))
    assert any("rows-v1.jsonl' line" in p and "gold=7 is out of range" in p for p in job_problems(job))
    mine.unlink()
    assert any("task 'mc:everyday' needs its file: not found at" in p for p in job_problems(job))
    with pytest.raises(UserError, match=r"task_files names \['boolq'\]: only your own tasks"):
        EvalConfig(tasks=["boolq"], task_files={"boolq": str(mine)}).validate()
    with pytest.raises(UserError, match=r"task_files names \['mc:other'\], which no task of the job uses"):
        load_job(None, {"task_files": {"mc:other": str(mine)}})
