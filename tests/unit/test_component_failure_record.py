"""A deterministic failure inside a GPU component is paid for once: the attempt that raises records its line
beside the step's output, and a retried attempt (Argo retries every failure) fails in seconds with it."""

import time

import pytest
from artifacts import write_corpus, write_proposal
from conftest import TINY_MODEL
from kfp import dsl

from components.recover import recover
from rankadaptor.errors import UserError
from rankadaptor.infra import storage
from rankadaptor.job import job_to_json, load_job


def test_a_bad_proposal_fails_once_and_every_retry_in_seconds(tmp_path):
    write_corpus(tmp_path / "data")
    write_proposal(tmp_path / "proposal", [8] * 11)  # 11 layers for the model's 4
    adapter = dsl.Model(uri=str(tmp_path / "run-1" / "recover" / "adapter"))

    def attempt() -> tuple[str, float]:
        start = time.monotonic()
        with pytest.raises(UserError) as error:
            recover.python_func(job=job_to_json(load_job()), pruned_model=dsl.Model(uri=str(TINY_MODEL)),
                                data=dsl.Dataset(uri=str(tmp_path / "data")),
                                proposal=dsl.Artifact(uri=str(tmp_path / "proposal")), adapter=adapter,
                                gpu_count=0, gpu_step_cpu="1", gpu_step_memory="1Gi")
        return str(error.value), time.monotonic() - start

    first, _ = attempt()
    assert "rank vector" in first and not storage.exists(adapter.uri)
    for _ in range(2):  # the retries
        again, seconds = attempt()
        assert again.startswith(first) and "earlier attempt" in again and seconds < 10
