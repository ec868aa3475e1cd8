"""The one exception type for bad input.

Raised before any output is written, with a message that names the bad value and what is accepted.
The CLI prints it without a traceback; library callers can catch it.
"""


class UserError(ValueError):
    pass


def check(condition: bool, message: str) -> None:
    """Raise UserError(message) unless condition holds."""
    if not condition:
        raise UserError(message)
