import socket

import pytest

from pipelines.__main__ import main


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", [["submit"], ["schedule", "--cron", "0 0 2 * * *"]])
def test_unreachable_endpoint_is_a_clear_error(command, capsys):
    host = f"http://127.0.0.1:{closed_port()}"
    assert main([*command, "--host", host]) == 2
    error = capsys.readouterr().err
    assert f"cannot reach the Kubeflow Pipelines endpoint '{host}'" in error
    assert "Traceback" not in error


@pytest.mark.parametrize(("cron", "expected"), [("0 0 2 * *", "did you mean '0 0 0 2 * *'"),
                                                ("0 0 24 * * *", "the hour field '24' is not accepted"),
                                                ("0 0 2 * * * 2027", "has 7 fields; expected 6"),
                                                ("0 0 2 * FOO *", "the month field 'FOO' is not accepted")])
def test_a_bad_cron_is_refused_before_connecting(cron, expected, capsys):
    host = f"http://127.0.0.1:{closed_port()}"  # nothing listens: reaching it would be a different error
    assert main(["schedule", "--cron", cron, "--host", host]) == 2
    error = capsys.readouterr().err
    assert expected in error and "cannot reach" not in error and len(error.strip().splitlines()) == 1, error
