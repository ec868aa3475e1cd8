"""The lines of `python -m pipelines run`: one per step, by the name the Kubeflow UI shows, and the last ones: the
registered model, version and alias, and how to load it."""

import io

from pipelines.local import StepLines, named_tasks, registered_lines
from pipelines.rankadaptor import build


def test_the_last_lines_name_the_model_and_how_to_load_and_serve_it():
    report = {"registration": {"model_name": "tiny-ppl", "version": 3, "champion_moved": True,
                               "previous_champion": 2}, "decision": {"register": "uniform"}}
    lines = registered_lines(report, "champion", "sqlite:///db").splitlines()
    assert lines[0].startswith("registered model tiny-ppl version 3 (the uniform adapter; alias 'champion' now")
    assert 'mlflow.pyfunc.load_model("models:/tiny-ppl@champion")' in lines[1]
    assert "MLFLOW_TRACKING_URI=sqlite:///db" in lines[1] and "PATH=" in lines[2]
    assert "mlflow models serve -m models:/tiny-ppl@champion" in lines[2]


def test_a_version_that_did_not_win_is_loaded_by_its_number():
    report = {"registration": {"model_name": "m", "version": 4, "champion_moved": False, "previous_champion": 2},
              "decision": {"register": "searched"}}
    text = registered_lines(report, "champion", "http://127.0.0.1:5000")
    assert "alias 'champion' stays on version 2" in text and 'load_model("models:/m/4")' in text


def test_each_step_line_names_the_step_as_the_kubeflow_ui_does():
    names = {name: task.task_info.name for name, task in named_tasks(build(loop_cap=2))}
    assert names["meta-pretrain-2"] == "meta-pretrain" and names["register-2"] == "register"
    terminal = io.StringIO()
    lines = StepLines(io.StringIO(), terminal, names)
    lines.write("Executing task 'register-2'\nTask 'register-2' finished with status SUCCESS\n")
    assert terminal.getvalue().startswith("register ") and "done in" in terminal.getvalue()
