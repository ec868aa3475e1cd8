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


def test_compile_for_another_registry_writes_elsewhere_and_leaves_the_committed_yaml(tmp_path, capsys):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    committed = {p.name: p.read_bytes() for p in (root / "pipelines" / "compiled").glob("*.yaml")}
    env = {"PYTHONPATH": f"{root / 'src'}:{root}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "pipelines", "compile", "--image-registry", "registry.example.com/ml",
                          "--image-tag", "1.2.3", "--output", str(tmp_path)], capture_output=True, text=True, env=env,
                         cwd=root, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "rankadaptor.yaml").read_text()
    assert "image: registry.example.com/ml/rankadaptor-gpu:1.2.3" in text
    assert "image: registry.example.com/ml/rankadaptor-cpu:1.2.3" in text and "ghcr.io" not in text
    assert {p.name: p.read_bytes() for p in (root / "pipelines" / "compiled").glob("*.yaml")} == committed
    assert main(["compile", "--image-registry", "r.example.com"]) == 2
    assert "need --output DIR" in capsys.readouterr().err
