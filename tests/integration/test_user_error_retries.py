"""A UserError in a GPU step, through kfp.local with the step's real retry policy (kfp.local retries as Argo
does): the run ends with that one line, and every retried attempt fails in seconds from the failure record
(rankadaptor.infra.failures). The compiled IR's retry wiring is tests/unit/test_pipeline_ir.py's."""

import re

import pytest
from artifacts import CPU_PLACEMENT, write_corpus, write_proposal
from conftest import TINY_MODEL
from kfp import dsl

import pipelines.local as local_run
from components.recover import recover
from pipelines.placement import gpu_step
from rankadaptor.errors import UserError
from rankadaptor.job import job_to_json, load_job


def backoff_dropped(pipeline) -> None:
    """pipelines.local.without_retries's stand-in: the retry counts stay, the minutes of backoff go."""
    for task in local_run.tasks(pipeline):
        task.retry_policy.ClearField("backoff_duration")


@pytest.mark.slow
def test_a_user_error_ends_the_run_in_one_line_and_each_retry_takes_seconds(tmp_path, monkeypatch, capsys):
    # a proposal whose rank vector does not fit the model (11 layers for 4)
    data, proposal = write_corpus(tmp_path / "data"), write_proposal(tmp_path / "proposal", [8] * 11)

    @dsl.pipeline(name="one-bad-recover")
    def one_bad_recover():
        model = dsl.importer(artifact_uri=str(TINY_MODEL), artifact_class=dsl.Model).output
        corpus = dsl.importer(artifact_uri=data, artifact_class=dsl.Dataset).output
        proposed = dsl.importer(artifact_uri=proposal, artifact_class=dsl.Artifact).output
        gpu_step(recover, CPU_PLACEMENT, job=job_to_json(load_job()), pruned_model=model, data=corpus, proposal=proposed)

    assert one_bad_recover.pipeline_spec.root.dag.tasks["recover"].retry_policy.max_retry_count == 2
    monkeypatch.setattr(local_run, "without_retries", backoff_dropped)
    with pytest.raises(UserError) as error:
        local_run._run(one_bad_recover, {}, tmp_path / "run", "", verbose=False)

    line = str(error.value)
    assert "\n" not in line and line.startswith("step recover failed: ") and "rank vector" in line
    assert "recorded by an earlier attempt" in line  # the last attempt's line: the record's
    terminal = capsys.readouterr().out
    attempts = [int(s) for s in re.findall(r"^recover\s+FAILED after (\d+) s$", terminal, re.M)]
    assert len(attempts) == 3, terminal  # the first attempt and two retries
    assert all(seconds < 10 for seconds in attempts[1:]), attempts
