from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def update(job: str, search_state: Input[Artifact], proposal: Input[Artifact], metrics: Input[Metrics],
           adapter: Input[Model], pruned_model: Input[Model], data: Input[Dataset],
           next_state: Output[Artifact]):
    """Record the trial in the bank and adapt the surrogate online."""
    from rankadaptor.workflow import job_from_json, update_step

    next_state.metadata.update(update_step(job_from_json(job), search_state.path, proposal.path, metrics.path,
                                           adapter.uri, pruned_model.path, data.path, next_state.path))
