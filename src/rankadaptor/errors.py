"""The two failures a user is told about in one line: bad input (UserError, exit 2) and an outage of a
service the job depends on (ServiceError, exit 3).

A UserError is raised before any output is written, with a message that names the bad value and what is
accepted. A ServiceError is raised after the client's own retries with backoff (boto's standard mode, MLflow's
HTTP retries) and names the service; its cause stays chained for library callers, and nothing half-written
remains (storage writes stage and publish last), so a rerun continues. The CLI prints either without a
traceback; library callers can catch them.
"""

EXIT_USER_ERROR, EXIT_SERVICE_ERROR = 2, 3


class UserError(ValueError):
    pass


class ServiceError(RuntimeError):
    """S3 or the MLflow server failed (unreachable, timing out, 5xx) after retries: not the user's input."""


def check(condition: bool, message: str) -> None:
    """Raise UserError(message) unless condition holds."""
    if not condition:
        raise UserError(message)
