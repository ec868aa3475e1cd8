from kfp import dsl
from kfp.dsl import Dataset, Output

from components import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def prepare_data(job: str, data: Output[Dataset]):
    """The recovery data, or a self-distillation corpus sampled from the base model."""
    from rankadaptor.job import job_from_json
    from rankadaptor.steps.model import prepare_data

    data.metadata.update(prepare_data(job_from_json(job), data.path))
