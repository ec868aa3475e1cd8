"""What a compiled pipeline holds fixed (KFP needs them at compile time): light, so the CLI reads them
without importing the components."""

import os

from rankadaptor.search.config import SearchConfig

LOOP_CAP = SearchConfig().max_iterations  # search iterations the compiled main pipeline holds (a job asking for more is refused)
PARALLEL_TASKS = 2  # tasks searching at once by default (the catalog ParallelFor parallelism)
PARALLEL_TRIALS = 4  # bootstrap trials running at once
SCRATCH_MOUNT = "/scratch"  # in the pod: the library's cache (RANKADAPTOR_CACHE) and TMPDIR live under it


# Each GPU step's scratch volume (a generic ephemeral volume, provisioned per pod and deleted with it), a
# Kubernetes quantity; "" = none (the steps' caches and temporary files on the node's ephemeral storage).
# `python -m pipelines compile --scratch-size 100Gi` sets it: kfp-kubernetes takes the size at compile time only.
def scratch_size() -> str:
    return os.environ.get("RANKADAPTOR_SCRATCH_SIZE", "")
