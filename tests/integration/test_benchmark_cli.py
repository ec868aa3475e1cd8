"""Every benchmark script under benchmarks/ runs as `python -m benchmarks.<area>.<name> --help` and prints its
usage: a script whose imports broke with the library (as pool_measure's did) fails here, and a new script is
covered by being there."""

import subprocess
import sys

import pytest
from conftest import ROOT

BENCHMARKS = ROOT / "benchmarks"
MODULES = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in BENCHMARKS.rglob("*.py")
                 if p.name != "__init__.py")


def test_every_script_is_found_in_an_area_package():
    assert len(MODULES) >= 11 and all(m.count(".") == 2 for m in MODULES), MODULES
    for module in MODULES:
        area = BENCHMARKS / module.split(".")[1]
        assert (area / "__init__.py").is_file(), f"{area} is not a package"
    assert [p.name for p in BENCHMARKS.glob("*.py")] == ["__init__.py"], "a script outside an area folder"


@pytest.mark.parametrize("module", MODULES)
def test_help(module):
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("usage: "), done.stdout[:500]
