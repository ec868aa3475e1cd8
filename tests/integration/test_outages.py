"""An outage is not bad input: S3 or the MLflow server going away mid-step fails in one line naming the
service (ServiceError, exit 3, the cause chained), leaves nothing half-written, and the rerun completes."""

import os
import signal
import subprocess
import sys

import pytest
from servers import empty_mlflow_db, free_port, mlflow_server, seaweedfs

from rankadaptor import cli
from rankadaptor.errors import ServiceError
from rankadaptor.infra import bank, storage
from rankadaptor.trial import TrialKey

pytestmark = pytest.mark.slow
FAST_RETRIES = {"RANKADAPTOR_S3_RETRIES": "1", "RANKADAPTOR_S3_TIMEOUT": "3", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}


def freeze(pattern: str, frozen: bool) -> None:
    """Stop (or resume) every server process whose command line holds pattern: an outage the server comes
    back from with its state and ports, as after a network partition or a restarted node."""
    pids = [int(p) for p in subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()]
    groups = {os.getpgid(p) for p in pids if p != os.getpid()} - {os.getpgid(0)}
    assert groups, f"no server process matches {pattern!r}"
    for group in groups:  # the server with its workers
        os.killpg(group, signal.SIGSTOP if frozen else signal.SIGCONT)


def test_s3_going_away_mid_write_exits_3_leaves_nothing_and_the_rerun_completes(tmp_path, monkeypatch):
    for name, value in FAST_RETRIES.items():
        monkeypatch.setenv(name, value)
    root = tmp_path / "s3"
    root.mkdir()
    with seaweedfs(root) as s3:
        for name, value in s3.env().items():
            monkeypatch.setenv(name, value)
        uri = f"s3://{s3.bucket}/artifacts/a"
        with pytest.raises(ServiceError, match=r"S3 request for 's3://.*' failed after retries") as failed:
            with storage.writing_dir(uri) as out:
                (out / "weights.bin").write_bytes(b"x" * 1024)
                freeze(str(root), True)  # the store goes away while the step is writing
        assert failed.value.__cause__ is not None  # the cause is kept for whoever debugs it
        freeze(str(root), False)  # back
        assert not storage.exists(uri)  # nothing half-written: the manifest goes last
        with storage.writing_dir(uri) as out:
            (out / "weights.bin").write_bytes(b"x" * 1024)
        assert storage.exists(uri)


def key() -> TrialKey:
    return TrialKey(base_model="org/tiny", base_checksum="a" * 64, pruning={"ratio": 0.25}, task="boolq",
                    split="select", rank_vector=[8, 2, 4, 8], recovery={"lr": 1e-4}, data_checksum="d" * 64, seed=0)


def test_the_mlflow_server_going_away_exits_3_naming_it_and_the_rerun_banks_once(tmp_path, monkeypatch):
    for name, value in FAST_RETRIES.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "s3").mkdir()
    backend = f"sqlite:///{empty_mlflow_db(tmp_path / 'db')}"
    with seaweedfs(tmp_path / "s3") as s3:
        for name, value in s3.env().items():
            monkeypatch.setenv(name, value)
        with mlflow_server(tmp_path, backend, s3) as uri:
            bank.record_trial(key(), score=0.5, experiment="bank", tracking_uri=uri)
            freeze(str(tmp_path / "db"), True)
            other = TrialKey(**{**vars(key()), "rank_vector": [4, 4, 4, 4]})
            with pytest.raises(ServiceError, match="MLflow tracking server .* failed: .*unavailable after retries"):
                bank.record_trial(other, score=0.4, experiment="bank", tracking_uri=uri)
            status = cli.main(["deploy", "--model", "m", "--tracking-uri", uri, "--output", str(tmp_path / "x.yaml")])
            assert status == 3 and not (tmp_path / "x.yaml").exists()
            freeze(str(tmp_path / "db"), False)  # back: the rerun banks what was lost, once
            bank.record_trial(key(), score=0.5, experiment="bank", tracking_uri=uri)
            bank.record_trial(other, score=0.4, experiment="bank", tracking_uri=uri)
            found = bank.load_observations("bank", tracking_uri=uri)
            assert sorted(o.rank_vector for o in found) == [[4, 4, 4, 4], [8, 2, 4, 8]]


def test_an_unreachable_server_is_exit_3_and_a_bad_value_exit_2(tmp_path):
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "PATH": "/usr/bin:/bin"}
    closed = f"http://127.0.0.1:{free_port()}"
    down = subprocess.run([sys.executable, "-m", "rankadaptor.cli", "deploy", "--model", "m", "--tracking-uri", closed,
                           "--output", str(tmp_path / "x.yaml")], capture_output=True, text=True, env=env, timeout=120)
    assert down.returncode == 3, down.stderr
    assert "service unavailable: MLflow tracking server" in down.stderr and "Traceback" not in down.stderr
    bad = subprocess.run([sys.executable, "-m", "rankadaptor.cli", "deploy", "--model", "m", "--tracking-uri", closed,
                          "--output", str(tmp_path / "x.yaml"), "--tmp-size", "lots"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert bad.returncode == 2 and "tmp_size='lots' is not accepted" in bad.stderr, bad.stderr
