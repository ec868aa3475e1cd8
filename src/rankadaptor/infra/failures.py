"""A deterministic failure is paid for once.

KFP 2.17 retries a failed task whatever the reason (`set_retry` has no policy by exit code), so a bad input
in a GPU step would be retried, each attempt a new pod. The first attempt's UserError is recorded beside the
step's output artifact (`<output>-failed`, written like any artifact: manifest last); the output URI is fixed
per pipeline run and task, so every retried attempt finds the record first and fails at once with the same
line. An outage (ServiceError) or a preemption records nothing: those attempts are what retries are for.
docs/reliability.md gives the design and what a retry still costs (the launcher's input download).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rankadaptor.errors import UserError
from rankadaptor.infra import storage

RECORD = "failure.json"


def record_uri(output_uri: str) -> str:
    return output_uri.rstrip("/") + "-failed"


@contextlib.contextmanager
def failing_once(output_uri: str) -> Iterator[None]:
    """Run a step body: refuse at once if an earlier attempt recorded a UserError for this output, and record
    this attempt's UserError before it propagates."""
    uri = record_uri(output_uri)
    if storage.exists(uri):
        earlier = storage.read_json(storage.local_dir(uri) / RECORD)
        raise UserError(f"{earlier['error']} (recorded by an earlier attempt of this step; fix the input and "
                        "start a new run)")
    try:
        yield
    except UserError as e:
        with contextlib.suppress(Exception), storage.writing_dir(uri) as out:  # best effort: never hide e
            storage.write_json_atomic(out / RECORD, {"error": str(e)})
        raise
