import http.server
import json
import socket
import threading
from pathlib import Path

import pytest
import yaml

from pipelines.__main__ import main


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remote_job(tmp_path) -> str:
    """A job whose inputs a cluster can read (URIs, not paths of this machine)."""
    path = tmp_path / "job.yaml"
    path.write_text("base_model: s3://models/llama-7b\neval_data_dir: s3://data/tasks\n")
    return str(path)


@pytest.mark.parametrize("command", [["submit"], ["schedule", "--cron", "0 0 2 * * *"]])
def test_unreachable_endpoint_is_a_clear_error(command, capsys, tmp_path):
    host = f"http://127.0.0.1:{closed_port()}"
    assert main([*command, "--host", host, "--config", remote_job(tmp_path)]) == 3  # an outage, not bad input
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


@pytest.mark.slow  # compiles the pipelines
def test_compile_for_another_registry_writes_elsewhere_and_leaves_the_committed_yaml(tmp_path, capsys):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
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


def test_a_job_with_paths_of_this_machine_is_refused_before_connecting(capsys):
    host = f"http://127.0.0.1:{closed_port()}"
    assert main(["submit", "--host", host]) == 2  # the bundled job: local paths
    error = capsys.readouterr().err
    assert "base_model=" in error and "a path on this machine" in error and "cannot reach" not in error


class FakeBackend(http.server.BaseHTTPRequestHandler):
    """The two health endpoints of a KFP API server (the backend cannot run here), recording each request."""
    tag = "2.0.5"
    seen: list = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        FakeBackend.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        body = {"/apis/v2beta1/healthz": {"multi_user": True},
                "/apis/v1beta1/healthz": {"multi_user": True, "tag_name": FakeBackend.tag}}.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body or {}).encode())

    def log_message(self, *args):
        pass


def test_an_old_backend_is_refused_with_its_version_and_the_token_is_sent(tmp_path, capsys):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeBackend)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / "token").write_text("secret-token\n")
        host = f"http://127.0.0.1:{server.server_address[1]}"
        code = main(["submit", "--host", host, "--config", remote_job(tmp_path), "--namespace", "team-a",
                     "--token-file", str(tmp_path / "token")])
    finally:
        server.shutdown()
    error = capsys.readouterr().err
    assert code == 2 and "backend is 2.0.5, older than 2.5.0" in error, error
    assert [path for path, _ in FakeBackend.seen] == ["/apis/v2beta1/healthz", "/apis/v1beta1/healthz"]
    assert all(headers.get("authorization") == "Bearer secret-token" for _, headers in FakeBackend.seen)


@pytest.mark.parametrize("argv, message", [
    (["submit", "--catalog", "catalog.yaml"], "catalog='catalog.yaml': a path on this machine"),
    (["schedule", "--catalog", "s3://b/c.yaml", "--cron", "0 0 2 * * *", "--parallel", "0"],
     "--parallel 0: the number of catalog tasks searching at once must be 1 or more"),
    (["submit", "--catalog", "s3://b/c.yaml", "--config", "job.yaml"], "give --config (one job) or --catalog"),
])
def test_a_catalog_submission_is_checked_before_connecting(argv, message, capsys):
    host = f"http://127.0.0.1:{closed_port()}"  # a check that connected first would fail differently
    assert main([*argv, "--host", host]) == 2
    error = capsys.readouterr().err
    assert message in error and "cannot reach" not in error


@pytest.mark.slow  # compiles the pipelines
def test_another_parallelism_uploads_a_catalog_pipeline_compiled_for_it():
    from pipelines.cluster import COMPILED, package

    assert package("catalog", 2) == str(COMPILED / "catalog.yaml")
    spec = yaml.safe_load(Path(package("catalog", 5)).read_text().split("\n---\n")[0])
    loops = [c["dag"] for c in spec["components"].values() if "dag" in c]
    assert [t["iteratorPolicy"]["parallelismLimit"] for d in loops for t in d["tasks"].values()
            if "iteratorPolicy" in t] == [5]
