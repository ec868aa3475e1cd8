"""The container images under images/, without building them (tests/integration/test_containers.py builds and runs
the CPU image): the requirements files are checked against pyproject.toml's pins and resolved by pip
(dry run), the Dockerfiles are linted (our own rules, then hadolint), and build.sh's tags and build
arguments are checked in dry-run.
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

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
DOCKERFILES = {"runtime": IMAGES / "Dockerfile", "mlflow": IMAGES / "Dockerfile.mlflow"}
FLAVOURS = ("gpu", "cpu", "mlflow")
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
    defaults = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.MULTILINE))
    for line in instructions:
        if line.upper().startswith("FROM "):
            image = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), line.split()[1])
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
        if not (re.search(r"^ARG TORCH_INDEX=https://download\.pytorch\.org/whl/\S+$", text, re.MULTILINE)
                and re.search(r'PIP_INDEX_URL="\$TORCH_INDEX".* pip install torch==2\.13\.0\b', text)):
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


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_rules(name):
    assert dockerfile_problems(DOCKERFILES[name].read_text(), runtime=name == "runtime") == []


def dry_run(*args: str, **env: str) -> str:
    env = {**os.environ, "ALLOW_DIRTY": "1", "CONTAINER_ENGINE": "docker", **env}
    for name in ("RANKADAPTOR_IMAGE_REGISTRY", "RANKADAPTOR_IMAGE_TAG"):
        env.pop(name, None)  # the defaults, as the pipeline's components see them
    return subprocess.run(["bash", str(IMAGES / "build.sh"), "--dry-run", *args], capture_output=True, text=True,
                          env=env, check=True).stdout


def test_flavours_differ_only_in_the_torch_index(tmp_path):
    (tmp_path / "torch-2.13.0-cp311-cp311-linux_x86_64.whl").write_bytes(b"")
    lines = {f: line for line in dry_run("--base", "localhost/debian:bookworm", "--wheels", str(tmp_path)).splitlines()
             for f in FLAVOURS if line.startswith("+ docker build") and f"/rankadaptor-{f}:" in line}
    assert "-f images/Dockerfile --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu130" in lines["gpu"]
    assert "-f images/Dockerfile --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu" in lines["cpu"]
    assert "-f images/Dockerfile.mlflow" in lines["mlflow"]
    for line in lines.values():  # the offline build: one base for all, every wheel from the directory
        assert "--build-arg BASE_IMAGE=localhost/debian:bookworm --build-arg OFFLINE=1" in line
        assert f"wheels/ = {tmp_path}" in line
    online = dry_run("--only", "gpu")
    assert "BASE_IMAGE" not in online and "OFFLINE" not in online  # users get the official base and index


def test_dockerfile_rules_catch_violations():
    bad = 'FROM python:latest\nENV HF_TOKEN=abc\nRUN pip install torch\nUSER root\n'
    problems = "\n".join(dockerfile_problems(bad, runtime=True))
    for expected in ("not pinned", "secret-looking", "numeric non-root", "HF_HUB_OFFLINE", "PyTorch index",
                     "requirements.txt"):
        assert expected in problems
    assert dockerfile_problems("FROM python:3.11.14-slim\nUSER app\n", runtime=False) == [
        "last USER is not a numeric non-root uid: app"
    ]


def test_package_builds_from_what_the_dockerfile_copies(tmp_path):
    """Stages exactly the COPY sources of the package install step and builds the wheel from them,
    so that a package directory added to pyproject.toml but not copied into the image fails here."""
    staged = tmp_path / "rankadaptor"
    staged.mkdir()
    for line in DOCKERFILES["runtime"].read_text().splitlines():
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


def test_build_script_tags_are_the_pipelines_images():
    import components

    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout.strip()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    out = dry_run("--push")
    for flavour, image in (("cpu", components.CPU_IMAGE), ("gpu", components.GPU_IMAGE)):
        assert f"-t {image} -t {image.rsplit(':', 1)[0]}:{version}-{sha} " in out  # the compiled YAML's name
    out = dry_run("--push", "--registry", "registry.example.com/ml", "--tag", "1.2")
    for flavour in FLAVOURS:
        for tag in ("1.2", f"{version}-{sha}"):
            assert f"+ docker push registry.example.com/ml/rankadaptor-{flavour}:{tag}" in out
    env = {**os.environ, "ALLOW_DIRTY": "1"}
    bad = subprocess.run(["bash", str(IMAGES / "build.sh"), "--only", "tpu"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "accepted: gpu, cpu, mlflow" in bad.stderr
    bad = subprocess.run(["bash", str(IMAGES / "build.sh"), "--wheels", str(IMAGES)], capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 2 and "holds no .whl file" in bad.stderr


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
