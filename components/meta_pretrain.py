from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def meta_pretrain(job: str, structure: Input[Artifact], data: Input[Dataset], baselines: Input[Artifact],
                  search_state: Output[Artifact]):
    """Meta-pretrain the surrogate on the bank's other tasks; start the search state. Reads the pruned model's
    structure artifact, never its weights."""
    from rankadaptor.job import job_from_json
    from rankadaptor.steps.search import meta_pretrain

    search_state.metadata.update(meta_pretrain(job_from_json(job), structure.path, data.path, baselines.uri,
                                               search_state.path))
