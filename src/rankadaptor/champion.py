"""Which adapter a finished job registers: the searched rank vector only when it has earned it.

Searching costs a fine-tune per trial; on a task where the searched vector does not beat uniform LoRA
of the baseline rank on held-out rows beyond the trial noise, the honest result is the uniform adapter, said plainly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rankadaptor.errors import check

SEARCHED, UNIFORM = "searched", "uniform"


@dataclass(frozen=True)
class Decision:
    register: str  # SEARCHED or UNIFORM
    reason: str  # one plain sentence for the report, with the interval
    conclusion: str  # the same decision without the numbers (the verdict line gives the interval once)


def choose_adapter(diff: float, low: float, high: float, noise: float = 0.0, baseline_rank: int = 8) -> Decision:
    """Register the searched vector only when it beats uniform LoRA on the report split by more than
    `noise` (the seed-to-seed sd of the score; 0 when unknown) and the CI [low, high] of the difference
    (searched - uniform) excludes 0; otherwise the uniform adapter."""
    check(all(math.isfinite(v) for v in (diff, low, high)) and low <= high,
          f"the difference {diff} and its CI [{low}, {high}] must be finite with low <= high")
    check(math.isfinite(noise) and noise >= 0, f"noise={noise} must be a finite sd >= 0")
    interval = f"{diff:+.4f} (95% CI {low:+.4f} .. {high:+.4f}; noise sd {noise:.4f})"
    if low > 0 and diff > noise:
        said = f"the searched rank vector beats uniform LoRA r={baseline_rank} beyond noise"
        return Decision(SEARCHED, f"{said}: {interval}", f"{said} (noise sd {noise:.4f}); it is registered")
    why = "its CI includes 0" if low <= 0 else f"the gain is within the trial noise sd {noise:.4f}"
    registered = f"the uniform LoRA r={baseline_rank} adapter is registered"
    return Decision(UNIFORM, f"searching did not pay on this task ({why}): {interval}; {registered}",
                    f"searching did not pay on this task ({why}); {registered}")
