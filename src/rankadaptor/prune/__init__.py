"""The prune stage (width, depth, unstructured): its config and its run function; the modules hold the rest."""

from rankadaptor.prune.config import PruneConfig
from rankadaptor.prune.stage import run_prune

__all__ = ["PruneConfig", "run_prune"]
