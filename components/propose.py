from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def propose(job: str, search_state: Input[Artifact], proposal: Output[Artifact]):
    """Sample rank vectors under the budget, predict, pick the next trial."""
    from rankadaptor.job import job_from_json
    from rankadaptor.steps.search import propose

    proposal.metadata.update(propose(job_from_json(job), search_state.path, proposal.path))
