"""The synthetic search benchmark, run as a script in quick mode; assertions on its --json output."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

MODULE = "benchmarks.search.search_synthetic"


@pytest.mark.slow
def test_synthetic_has_uniform_r8_as_a_row_and_claims_no_gain_where_nothing_beats_uniform():
    done = subprocess.run([sys.executable, "-m", MODULE, "--quick", "--json", "--noise-ratio", "0.2",
                           "--methods", "uniform r8,random,loop"], capture_output=True, text=True, timeout=900,
                          check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["noise_ratio"] == 0.2
    additive, flat = out["families"]["additive"], out["families"]["flat"]
    for family in (additive, flat):
        assert set(family["methods"]) == {"uniform r8", "random", "loop"}
        assert family["pool"]["noise_sd_select"] > 0  # trials are noisy in both families
    # additive: uniform r8 is not optimal, so there is something to find
    assert additive["pool"]["uniform_r8_regret"] > 0
    # flat: nothing beats uniform; no method may register a searched vector more than by chance
    assert flat["pool"]["uniform_r8_regret"] == 0
    for method in flat["methods"].values():
        assert all(r[0] == 0 for r in method["regret"])
        assert method["p_claim"][-1][0] <= 1 / 3
