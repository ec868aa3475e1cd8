"""ruff, configured in pyproject.toml, passes on the library, components, pipelines, tests and benchmarks; its
security rules (bandit's `S`) catch what tests/unit/test_security.py no longer scans for itself."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")


def ruff(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    assert RUFF, "ruff is a dev dependency (pip install -e '.[dev]')"
    return subprocess.run([RUFF, "check", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True)


def test_ruff_passes():
    result = ruff("--output-format", "concise", "src", "components", "pipelines", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout[-5000:]


@pytest.mark.parametrize("snippet, rule", [
    ("import pickle", "S403"),
    ("import dill", "S403"),
    ("import yaml\nyaml.load(text, Loader=yaml.Loader)", "S506"),
    ("eval('1 + 1')", "S307"),
    ("exec(code)", "S102"),
    ("import subprocess\nsubprocess.run(cmd, shell=True)", "S602"),
    ("import boto3\nboto3.client('s3', aws_secret_access_key='abc')", "S106"),
])
def test_ruff_security_rules_catch_each_violation_in_shipped_code(snippet, rule):
    result = ruff("--output-format", "json", "--stdin-filename", "src/rankadaptor/snippet.py", "-", stdin=snippet + "\n")
    assert result.returncode == 1 and rule in {d["code"] for d in json.loads(result.stdout)}, result.stdout
