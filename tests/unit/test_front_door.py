"""A new user's mistakes get one clear line naming the bad input, at once (issue: the front door)."""

import os
import shutil
import time
from pathlib import Path

import pytest

from rankadaptor.data import read_records
from rankadaptor.errors import UserError
from rankadaptor.infra import storage
from rankadaptor.models.loading import load_model
from rankadaptor.recover.adapters import load_adapted


def test_jsonl_error_names_the_files_own_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"\n{"text": "c"}\n')
    with pytest.raises(UserError, match=r"rows.jsonl.*not valid JSONL: .* at line 3 column"):
        read_records(str(path))


def test_json_error_names_line_and_column(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('[\n  {"text": "a"},\n  {"text": }\n]\n')
    with pytest.raises(UserError, match=r"not valid JSON: .* at line 3 column 12"):
        read_records(str(path))


def test_artifacts_are_readable_by_other_users_like_any_new_folder(tmp_path):
    old = os.umask(0o022)
    try:
        with storage.writing_dir(str(tmp_path / "artifact")) as out:
            (out / "x.json").write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "artifact").stat().st_mode & 0o777 == 0o755


def test_a_mistyped_local_path_fails_at_once_offline_not_as_a_hub_download(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    with pytest.raises(UserError, match=r"model 'modles/llama' not found: no such local directory"):
        load_model("modles/llama")
    assert time.monotonic() - started < 5


def test_a_folder_that_is_not_an_adapter_is_named(tiny_model_dir, tmp_path):
    with storage.writing_dir(str(tmp_path / "report")) as out:  # a rankadaptor artifact, but no adapter
        (out / "report.json").write_text("{}")
    with pytest.raises(UserError, match=r"adapter '.*report' has no adapter_config.json"):
        load_adapted(str(tiny_model_dir), str(tmp_path / "report"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match=r"artifact '.*plain' is incomplete or not written by rankadaptor"):
        load_adapted(str(tiny_model_dir), str(tmp_path / "plain"))


def test_a_gpu_step_without_a_gpu_fails_at_once_on_a_cluster(monkeypatch):
    import torch

    from rankadaptor.models.loading import require_gpus

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    require_gpus(1)  # kfp.local: placement has no effect
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    with pytest.raises(UserError, match="gpu_count=2: a step uses one GPU"):
        require_gpus(2)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="gpu_count=1 but this pod sees no usable GPU"):
            require_gpus(1)
    require_gpus(0)


def _cli(capsys, *argv):
    from rankadaptor.cli import main

    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_output_over_its_input_is_refused_before_any_compute_and_the_input_is_unchanged(capsys, tiny_model_dir,
                                                                                           tmp_path):
    tiny_model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "inputs" / "model"))  # never risk the bundled one
    before = _snapshot(tiny_model_dir)
    calibration = tmp_path / "calib.txt"
    calibration.write_text("some text to calibrate on. " * 50)
    for output in (tiny_model_dir, tiny_model_dir / "pruned", tiny_model_dir.parent):
        code, err = _cli(capsys, "prune", "--model", str(tiny_model_dir), "--calibration", str(calibration),
                         "--output", str(output), "--overwrite")
        assert code == 2 and len(err.splitlines()) == 1 and "is, contains or lies inside the input" in err, err
    code, err = _cli(capsys, "export", "--model", str(tiny_model_dir), "--adapter", str(tmp_path / "a"),
                     "--output", str(tiny_model_dir))
    assert code == 2 and "lies inside the input" in err
    assert _snapshot(tiny_model_dir) == before


def test_an_existing_output_is_refused_unless_overwrite(capsys, tiny_model_dir, tmp_path):
    done = tmp_path / "done"
    done.mkdir()
    (done / "keep.txt").write_text("earlier result")
    started = time.monotonic()
    code, err = _cli(capsys, "recover", "--model", str(tiny_model_dir), "--data", str(tmp_path / "d.jsonl"),
                     "--output", str(done))
    assert code == 2 and err.endswith("already exists: choose another or pass --overwrite"), err
    assert time.monotonic() - started < 10  # refused before the model loads
    (tmp_path / "a-file").write_text("x")
    code, err = _cli(capsys, "evaluate", "--model", str(tiny_model_dir), "--output", str(tmp_path / "a-file" / "out"))
    assert code == 2 and "which is a file, not a folder" in err, err
    assert _snapshot(done) == {Path("keep.txt"): b"earlier result"}


def test_a_yaml_syntax_error_in_an_option_names_the_option_line_and_column(capsys, tiny_model_dir, tmp_path):
    code, err = _cli(capsys, "recover", "--model", str(tiny_model_dir), "--data", str(tmp_path / "d.jsonl"),
                     "--output", str(tmp_path / "out"), "--rank-vector", "[8,8,8,8")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "--rank-vector: YAML/JSON syntax error at line 1, column 9" in err
    (tmp_path / "bad.yaml").write_text("lr: 0.1\nrank: [8\n")
    code, err = _cli(capsys, "recover", "--model", str(tiny_model_dir), "--data", str(tmp_path / "d.jsonl"),
                     "--output", str(tmp_path / "out"), "--config", str(tmp_path / "bad.yaml"))
    assert code == 2 and "bad.yaml" in err and "YAML/JSON syntax error at line 3" in err, err
    assert not (tmp_path / "out").exists()
