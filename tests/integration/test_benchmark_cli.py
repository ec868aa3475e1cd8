"""Every benchmark script under benchmarks/ runs as `python -m benchmarks.<area>.<name> --help` and prints its
usage: a script whose imports broke with the library (as pool_measure's did) fails here, and a new script is
covered by being there."""

import json
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


# `python -m <module> --help` for every module in one fresh interpreter (runpy is what `-m` calls), so that the
# shared imports (torch, transformers) are paid once: {module: [exit code, stdout, error]}
HELP_ALL = """
import contextlib, io, json, runpy, sys, traceback
results = {}
for module in json.loads(sys.argv[1]):
    out, code, error = io.StringIO(), None, ""
    sys.argv = [module, "--help"]
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code or 0
    except BaseException:
        code, error = 1, traceback.format_exc()[-3000:]
    results[module] = [code, out.getvalue(), error]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def helps() -> dict:
    done = subprocess.run([sys.executable, "-c", HELP_ALL, json.dumps(MODULES)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", MODULES)
def test_help(module, helps):
    code, stdout, error = helps[module]
    assert code == 0, error or stdout[-3000:]
    assert stdout.startswith("usage: "), stdout[:500]
