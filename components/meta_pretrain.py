from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def meta_pretrain(job: str, pruned_model: Input[Model], data: Input[Dataset], baselines: Input[Artifact],
                  search_state: Output[Artifact]):
    """Meta-pretrain the surrogate on the bank's other tasks; start the search state."""
    from rankadaptor.job import job_from_json
    from rankadaptor.steps.search import meta_pretrain

    search_state.metadata.update(meta_pretrain(job_from_json(job), pruned_model.path, data.path, baselines.uri,
                                               search_state.path))
