"""The container images under images/: no Docker engine runs here, so nothing is built. Instead the
requirements files are checked against pyproject.toml's pins and resolved by pip (dry run), the
Dockerfiles are linted (our own rules, then hadolint), and build.sh's tags are checked in dry-run.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
DOCKERFILES = {flavour: IMAGES / f"Dockerfile.{flavour}" for flavour in ("cpu", "gpu", "mlflow")}
RUNTIME_IMAGES = ("cpu", "gpu")
TORCH = "torch==2.13.0"


def read_requirements(path: Path) -> dict[str, Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    reqs = [Requirement(line) for line in lines if line]
    return {canonicalize_name(r.name): r for r in reqs}


def pinned_version(req: Requirement) -> str:
    (spec,) = req.specifier
    assert spec.operator == "==", f"{req} is not pinned with =="
    return spec.version


def pyproject_dependencies() -> dict[str, Requirement]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {canonicalize_name(r.name): r for r in map(Requirement, deps)}


def dockerfile_problems(text: str, runtime: bool) -> list[str]:
    """Our rules for every image: pinned bases, a numeric non-root USER last, no baked secrets;
    for the runtime images also the offline hub default and torch from the PyTorch index."""
    problems = []
    text = re.sub(r"\\\n", " ", text)  # join continuation lines
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for line in instructions:
        if line.upper().startswith("FROM "):
            image = line.split()[1]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if "@sha256:" not in image and not re.match(r"\d+\.\d+(\.\d+)?", tag):
                problems.append(f"base image not pinned to a version: {image}")
        if re.match(r"(ENV|ARG)\s", line, re.IGNORECASE) and re.search(
            r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY)\w*[= ]", line, re.IGNORECASE
        ):
            problems.append(f"secret-looking setting baked in: {line}")
    users = [line.split()[1] for line in instructions if line.upper().startswith("USER ")]
    user = users[-1].split(":")[0] if users else "root"
    if not user.isdigit() or user == "0":
        problems.append(f"last USER is not a numeric non-root uid: {user}")
    if runtime:
        if not re.search(r"^ENV\s.*\bHF_HUB_OFFLINE=1\b", text, re.MULTILINE):
            problems.append("HF_HUB_OFFLINE=1 is not the default")
        if not re.search(r"--index-url https://download\.pytorch\.org/whl/\S+ torch==2\.13\.0\b", text):
            problems.append("torch==2.13.0 is not installed from the PyTorch index")
        if "images/requirements.txt" not in text:
            problems.append("images/requirements.txt is not installed")
    return problems


def test_runtime_requirements_follow_pyproject():
    project = pyproject_dependencies()
    images = read_requirements(IMAGES / "requirements.txt")
    assert "torch" not in images, "torch comes from the flavour's PyTorch index, not from requirements.txt"
    assert set(images) == set(project) - {"torch"}
    for name, req in images.items():
        version = pinned_version(req)
        assert project[name].specifier.contains(version), f"{req} violates pyproject's {project[name]}"
        if any(spec.operator == "==" for spec in project[name].specifier):
            assert project[name].specifier == req.specifier, f"{req} differs from pyproject's {project[name]}"
    assert str(project["torch"]) == TORCH


def test_mlflow_server_requirements_follow_pyproject():
    server = read_requirements(IMAGES / "requirements-mlflow.txt")
    runtime = read_requirements(IMAGES / "requirements.txt")
    assert "auth" in server["mlflow"].extras
    assert pinned_version(server["mlflow"]) == pinned_version(runtime["mlflow"])
    assert pinned_version(server["boto3"]) == pinned_version(runtime["boto3"])
    assert "torch" not in server


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_dockerfile_rules(flavour):
    assert dockerfile_problems(DOCKERFILES[flavour].read_text(), flavour in RUNTIME_IMAGES) == []


def test_gpu_image_is_cuda_and_cpu_image_is_not():
    gpu, cpu = DOCKERFILES["gpu"].read_text(), DOCKERFILES["cpu"].read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+", gpu, re.MULTILINE)
    assert re.search(r"download\.pytorch\.org/whl/cu\d+ ", gpu)
    assert re.search(r"^FROM python:3\.11\.\d+-slim", cpu, re.MULTILINE)
    assert "download.pytorch.org/whl/cpu " in cpu
    assert "python3.11" in gpu


def test_dockerfile_rules_catch_violations():
    bad = 'FROM python:latest\nENV HF_TOKEN=abc\nRUN pip install torch\nUSER root\n'
    problems = "\n".join(dockerfile_problems(bad, runtime=True))
    for expected in ("not pinned", "secret-looking", "numeric non-root", "HF_HUB_OFFLINE", "PyTorch index",
                     "requirements.txt"):
        assert expected in problems
    assert dockerfile_problems("FROM python:3.11.14-slim\nUSER app\n", runtime=False) == [
        "last USER is not a numeric non-root uid: app"
    ]


@pytest.mark.parametrize("flavour", RUNTIME_IMAGES)
def test_package_builds_from_what_the_dockerfile_copies(tmp_path, flavour):
    """Stages exactly the COPY sources of the package install step and builds the wheel from them,
    so that a package directory added to pyproject.toml but not copied into the image fails here."""
    staged = tmp_path / "rankadaptor"
    staged.mkdir()
    for line in DOCKERFILES[flavour].read_text().splitlines():
        parts = line.split()
        if parts[:1] != ["COPY"] or not parts[-1].startswith("/tmp/rankadaptor/"):
            continue
        dest = staged / parts[-1].removeprefix("/tmp/rankadaptor/")
        for source in map(Path, parts[1:-1]):
            # Docker semantics: a destination ending in "/" receives each source by its name.
            target = dest / source.name if parts[-1].endswith("/") else dest
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target)
            else:
                shutil.copy(ROOT / source, target)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(staged)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    (wheel,) = tmp_path.glob("rankadaptor-*.whl")
    top_level = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    expected = {pattern.rstrip("*") for pattern in packages.get("include", ["rankadaptor"])}
    assert expected <= top_level


def test_build_script_tags(tmp_path):
    env = {**os.environ, "ALLOW_DIRTY": "1", "REGISTRY": "registry.example.com/ml"}
    result = subprocess.run(["bash", str(IMAGES / "build.sh"), "--dry-run", "--push"], capture_output=True,
                            text=True, env=env, cwd=tmp_path, check=True)
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout.strip()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for flavour in DOCKERFILES:
        tag = f"registry.example.com/ml/rankadaptor-{flavour}:{version}-{sha}"
        assert f"docker build -f images/Dockerfile.{flavour} -t {tag} -" in result.stdout
        assert f"+ docker push {tag}" in result.stdout
    bad = subprocess.run(["bash", str(IMAGES / "build.sh"), "--only", "tpu"], capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 2 and "accepted: gpu, cpu, mlflow" in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("requirements", "extra", "expected"),
    [
        ("requirements.txt", [TORCH], {"torch": "2.13.0", "transformers": "5.23.0", "mlflow": "3.17.2"}),
        ("requirements-mlflow.txt", [], {"mlflow": "3.17.2", "psycopg2-binary": "2.9.13", "flask-wtf": None}),
    ],
)
def test_requirements_resolve(tmp_path, requirements, extra, expected):
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-qq", "--report", str(report),
         "-r", str(IMAGES / requirements), *extra],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    resolved = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
                for i in json.loads(report.read_text())["install"]}
    for name, version in expected.items():
        assert name in resolved, f"{name} missing from the resolution"
        if version:
            # A local build label (2.13.0+cpu) is the same release.
            assert resolved[name].split("+")[0] == version


@pytest.mark.slow
def test_hadolint():
    tools = subprocess.run(["bash", str(ROOT / "k8s" / "validate.sh"), "--tools-only"], capture_output=True,
                           text=True, check=True, timeout=1200).stdout.strip().splitlines()[-1]
    result = subprocess.run([str(Path(tools) / "bin" / "hadolint"), "--config", str(IMAGES / ".hadolint.yaml"),
                             *map(str, DOCKERFILES.values())], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
