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
