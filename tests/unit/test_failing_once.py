"""A UserError in a step is recorded beside its output, and a retried attempt fails at once with it."""

import time

import pytest

from rankadaptor.errors import ServiceError, UserError
from rankadaptor.infra import storage
from rankadaptor.infra.failures import failing_once, record_uri


def slow_step(calls: list, error: Exception):
    calls.append(time.monotonic())
    time.sleep(0.5)  # stands for the hours a GPU step would spend before failing again
    raise error


def test_a_retried_attempt_fails_at_once_with_the_first_attempts_line(tmp_path):
    output = str(tmp_path / "run-1" / "recover" / "adapter")
    calls = []
    with pytest.raises(UserError, match="rank vector has 3 entries"), failing_once(output):
        slow_step(calls, UserError("rank vector has 3 entries but the model has 4 decoder layers"))
    assert storage.exists(record_uri(output))
    start = time.monotonic()
    with pytest.raises(UserError, match="rank vector has 3 entries.*earlier attempt"), failing_once(output):
        slow_step(calls, UserError("never reached"))
    assert len(calls) == 1 and time.monotonic() - start < 0.5  # the body never ran again


def test_an_outage_records_nothing_so_the_retry_runs(tmp_path):
    output = str(tmp_path / "adapter")
    with pytest.raises(ServiceError), failing_once(output):
        raise ServiceError("S3 request for 's3://b/x' failed after retries (S3 is unreachable)")
    assert not storage.exists(record_uri(output))
    with failing_once(output):
        pass  # the retry runs the step
