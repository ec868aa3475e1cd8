from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def update(job: str, search_state: Input[Artifact], proposal: Input[Artifact], metrics: Input[Metrics],
           adapter: Input[Model], next_state: Output[Artifact]):
    """Record the trial in the bank and adapt the surrogate online."""
    from rankadaptor.job import job_from_json
    from rankadaptor.steps.search import update

    next_state.metadata.update(update(job_from_json(job), search_state.path, proposal.path, metrics.path,
                                      adapter.uri, next_state.path))
