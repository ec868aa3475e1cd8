"""The pipeline's steps in their real container: the CPU image, built offline by images/setup-podman.sh
(podman, a debootstrap Debian base, a local wheel directory), runs the bundled job through
`kfp.local.DockerRunner` on podman's Docker API. The steps reach the test's MLflow and S3 servers on
127.0.0.1 (host network), run as the image's user with its offline settings, and get credentials only
as environment variables named like the keys of the pipeline's Kubernetes Secrets.

Where no container runtime can be installed, the tests skip with the reason.
"""

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import mlflow_server, process, seaweedfs

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "src" / "rankadaptor" / "bundled"
IMAGE_UID = 10001
# The image under the names the components of the test's run use (both flavours: the CPU build
# stands in for the GPU image, which differs only in its torch wheel).
TEST_REGISTRY = "localhost/rankadaptor-e2e"
# The keys of the Secrets the pipeline mounts (pipelines.rankadaptor.with_credentials), nothing else.
SECRET_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "MLFLOW_TRACKING_URI"}

pytestmark = pytest.mark.slow

# The run itself, in a fresh interpreter: components read RANKADAPTOR_IMAGE_* when imported.
RUN = """
import json, sys
from kfp import local
from pipelines.rankadaptor import arguments, build
from rankadaptor.job import load_job

spec = json.loads(sys.argv[1])
job = load_job(None, spec["overrides"])
local.init(runner=local.DockerRunner(network_mode="host", environment=spec["environment"]),
           pipeline_root=spec["pipeline_root"], raise_on_error=True, enable_caching=False)
build(loop_cap=spec["max_iterations"])(**arguments(job))
"""


@pytest.fixture(scope="module")
def image() -> str:
    """The CPU image, built (or found up to date) by images/setup-podman.sh."""
    if sys.platform != "linux":
        pytest.skip(f"container tests need Linux and podman, not {sys.platform}")
    env = {**os.environ, "PYTHON": sys.executable, "ALLOW_DIRTY": "1"}  # a dirty tree: the image holds HEAD
    start = time.monotonic()
    result = subprocess.run(["bash", str(ROOT / "images" / "setup-podman.sh")], capture_output=True, text=True,
                            env=env, timeout=1800)
    if result.returncode == 3:
        pytest.skip(f"no container runtime: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr[-4000:]
    print(f"setup-podman.sh: {time.monotonic() - start:.0f} s")
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def docker_host(tmp_path_factory) -> str:
    """podman's Docker API on a private socket, for the docker SDK that kfp.local uses."""
    root = tmp_path_factory.mktemp("podman")
    socket = root / "podman.sock"
    with process(["podman", "system", "service", "--time=0", f"unix://{socket}"], root / "service.log") as proc:
        for _ in range(100):
            if socket.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert socket.exists(), (root / "service.log").read_text()
        yield f"unix://{socket}"


def podman_run(image: str, *command: str) -> str:
    return subprocess.run(["podman", "run", "--rm", "--network", "host", image, *command], capture_output=True,
                          text=True, check=True, timeout=300).stdout


def test_image_runs_offline_as_its_user_with_the_compiling_kfp(image):
    import kfp

    out = json.loads(podman_run(image, "python", "-c", (
        "import json, os, kfp, torch, rankadaptor; print(json.dumps({'uid': os.getuid(), 'kfp': kfp.__version__, "
        "'torch': torch.__version__, 'offline': [os.environ.get(k) for k in ('HF_HUB_OFFLINE', 'HF_DATASETS_OFFLINE')]}))"
    )))
    assert out["uid"] == IMAGE_UID
    assert out["kfp"] == kfp.__version__  # the executor in the image speaks the compiling SDK's protocol
    assert out["torch"].split("+")[0] == "2.13.0"
    assert out["offline"] == ["1", "1"]
    assert "rankadaptor" in podman_run(image, "rankadaptor", "--help")
    # Every library module a component body imports (also those of the bootstrap pipeline, which the run
    # below does not start) loads in the image: the components themselves are not installed, KFP sends
    # each body in its command.
    imported = sorted({m for p in (ROOT / "components").glob("*.py")
                       for m in re.findall(r"from (rankadaptor[a-z_.]*) import", p.read_text())})
    assert "rankadaptor.steps.model" in imported
    loaded = podman_run(image, "python", "-c", f"import importlib; [importlib.import_module(m) for m in {imported!r}]; "
                                               "print('ok')")
    assert loaded.strip().endswith("ok")


def test_pipeline_runs_in_containers_and_registers_a_champion(image, docker_host, tmp_path):
    import boto3
    from mlflow import MlflowClient

    from rankadaptor.infra import bank

    if os.geteuid() != 0:
        pytest.skip("rootless podman maps the image's uid 10001 to a subordinate uid: run the container test as root")
    for flavour in ("cpu", "gpu"):
        subprocess.run(["podman", "tag", image, f"{TEST_REGISTRY}/rankadaptor-{flavour}:{image.rsplit(':', 1)[1]}"],
                       check=True)
    with contextlib.ExitStack() as stack:
        (tmp_path / "s3").mkdir()
        s3 = stack.enter_context(seaweedfs(tmp_path / "s3"))
        tracking_uri = stack.enter_context(mlflow_server(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", s3))
        # The model and task rows come from S3, read with the credentials the steps get from the environment.
        client = boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=s3.access_key,
                              aws_secret_access_key=s3.secret_key, region_name="us-east-1")
        for path in [*(BUNDLED / "aidreams-260k").iterdir(), *(BUNDLED / "tasks").iterdir()]:
            client.upload_file(str(path), s3.bucket, f"inputs/{path.relative_to(BUNDLED)}")
        environment = {k: v for k, v in s3.env().items() if k in SECRET_KEYS} | {"MLFLOW_TRACKING_URI": tracking_uri}
        assert set(environment) == SECRET_KEYS

        pipeline_root = tmp_path / "pipeline"
        pipeline_root.mkdir()
        os.chown(pipeline_root, IMAGE_UID, IMAGE_UID)  # the volume's owner, as a pod's fsGroup makes it
        spec = {"pipeline_root": str(pipeline_root), "environment": environment, "max_iterations": 2,
                "overrides": {"base_model": f"s3://{s3.bucket}/inputs/aidreams-260k",
                              "eval_data_dir": f"s3://{s3.bucket}/inputs/tasks",
                              "corpus_docs": 20, "source_tasks": ["ppl:piqa"], "report_tasks": [],
                              "bootstrap_trials": 0,
                              "recover": {"cutoff": 64, "batch_size": 8, "epochs": 1}, "runtime": {"micro_batch_tokens": 512},
                              "evaluate": {"limit": 8, "batch_size": 16},
                              "surrogate": {"meta_iterations": 5, "ensemble": 2},
                              "search": {"go": "always", "threshold": 1e9, "patience": 1, "max_iterations": 2, "num_samples": 100},
                              "registry": {"model_name": "tiny-in-containers"}}}
        env = {**os.environ, "DOCKER_HOST": docker_host, "RANKADAPTOR_IMAGE_REGISTRY": TEST_REGISTRY,
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        for key in SECRET_KEYS | {"MLFLOW_S3_ENDPOINT_URL"}:
            env.pop(key, None)  # the host side of the run needs no credentials
        start = time.monotonic()
        result = subprocess.run([sys.executable, "-c", RUN, json.dumps(spec)], capture_output=True, text=True,
                                env=env, cwd=tmp_path, timeout=1500)
        print(f"pipeline in containers: {time.monotonic() - start:.0f} s")
        assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
        log = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)  # kfp.local colours names

        # Every step ran in the image (kfp.local names it before each container it starts).
        steps = {"configure", "prepare-data", "prune", "baselines", "bootstrap", "meta-pretrain", "propose",
                 "recover", "evaluate", "update", "gate", "evaluate-best", "register"}
        for step in steps:
            assert f"Executing task '{step}'" in log, step
        assert f"Found image '{TEST_REGISTRY}/rankadaptor-cpu:" in log and f"Found image '{TEST_REGISTRY}/rankadaptor-gpu:" in log

        # The artifacts were written by the image's user (their owner) and read by the next steps.
        (report,) = pipeline_root.glob("rankadaptor-*/register*/report/report.json")
        assert report.stat().st_uid == IMAGE_UID
        written = [p for p in pipeline_root.rglob("*") if p.is_file()]
        assert written and {p.stat().st_uid for p in written} == {IMAGE_UID}
        assert json.loads(report.read_text())["iterations"] == 1

        client = MlflowClient(tracking_uri)
        assert int(client.get_model_version_by_alias("tiny-in-containers", "champion").version) == 1
        experiment = client.get_experiment_by_name(bank.DEFAULT_EXPERIMENT)
        rows = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'")
        assert [r.data.tags.get("stage") for r in rows].count("search") == 1
