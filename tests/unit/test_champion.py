"""The registration decision: searched vector only when it beats uniform LoRA beyond noise."""

import pytest

from rankadaptor.champion import SEARCHED, UNIFORM, choose_adapter
from rankadaptor.errors import UserError


@pytest.mark.parametrize("diff, low, high, noise, expected", [
    (0.02, 0.01, 0.03, 0.005, SEARCHED),   # clear win, CI excludes 0, beyond noise
    (0.02, 0.01, 0.03, 0.0, SEARCHED),     # noise unknown: the CI alone decides
    (-0.0003, -0.011, 0.011, 0.0, UNIFORM),  # the bundled job's measured case: CI includes 0
    (0.004, 0.001, 0.007, 0.005, UNIFORM),  # CI excludes 0 but the gain is inside the trial noise
    (-0.02, -0.03, -0.01, 0.0, UNIFORM),   # significantly worse
])
def test_choose_adapter(diff, low, high, noise, expected):
    decision = choose_adapter(diff, low, high, noise)
    assert decision.register == expected
    assert ("did not pay" in decision.reason) == (expected == UNIFORM)


def test_choose_adapter_refuses_nonsense():
    with pytest.raises(UserError, match="low <= high"):
        choose_adapter(0.1, 0.2, 0.0)
    with pytest.raises(UserError, match="noise"):
        choose_adapter(0.1, 0.0, 0.2, noise=-1)
