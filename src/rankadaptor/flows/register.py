"""Which adapter a finished search registers, and with what held-out score: the honest choice."""

from __future__ import annotations

from rankadaptor.champion import SEARCHED
from rankadaptor.infra import storage
from rankadaptor.report import slim
from rankadaptor.trial import Observation


def registered_adapter(report: dict, best: Observation, ours: dict, baselines: dict, anchor: str,
                       baselines_uri: str, target: str) -> tuple[str, dict]:
    """(adapter URI, held-out evaluation) to register: the anchor (uniform) adapter unless the searched vector
    beat it beyond noise (report["decision"]). The registry's champion rule compares the held-out `mean`:
    the target's report-split score of the registered adapter."""
    searched = report["decision"]["register"] == SEARCHED
    registered = ours["report"] if searched else baselines[anchor]["report"]
    adapter = best.artifact if searched else storage.join(baselines_uri, anchor)
    return adapter, {**slim(registered), "mean": registered["scores"][target]}
