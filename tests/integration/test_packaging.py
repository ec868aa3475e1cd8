"""The wheel holds the library only: the Kubeflow layer (components/, pipelines/) stays in the repository,
so nothing named `components` or `pipelines` lands in a user's site-packages."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_installs_only_the_rankadaptor_package(tmp_path):
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("components", "pipelines"):  # present beside src, as in the repository
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(tmp_path)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("rankadaptor-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"rankadaptor", wheel.name.split("-py3")[0] + ".dist-info"}
    assert "rankadaptor/bundled/default.yaml" in names and "rankadaptor/bundled/aidreams-260k/config.json" in names


def test_the_library_never_imports_the_pipeline_layer():
    offending = [str(p.relative_to(ROOT)) for p in (ROOT / "src").rglob("*.py")
                 if any(line.lstrip().startswith(("from pipelines", "import pipelines", "from components",
                                                  "import components")) for line in p.read_text().splitlines())]
    assert offending == []
