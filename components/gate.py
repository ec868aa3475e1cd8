from kfp import dsl
from kfp.dsl import Artifact, Input

from components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def gate(job: str, search_state: Input[Artifact], iteration: int) -> bool:
    """Stop the search loop after this iteration? (converged, or the job's max_iterations reached). One boolean
    output: the local runner silently skips a condition on a named output of a multi-output task."""
    from rankadaptor.job import job_from_json
    from rankadaptor.steps.search import gate

    return gate(job_from_json(job), search_state.path, iteration)
