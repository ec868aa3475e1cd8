"""What a compiled pipeline holds fixed (KFP needs them at compile time): light, so the CLI reads them
without importing the components."""

from rankadaptor.search.config import SearchConfig

LOOP_CAP = SearchConfig().max_iterations  # search iterations the compiled main pipeline holds (a job asking for more is refused)
PARALLEL_TASKS = 2  # tasks searching at once by default (the catalog ParallelFor parallelism)
PARALLEL_TRIALS = 4  # bootstrap trials running at once
