from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def baselines(job: str, pruned_model: Input[Model], data: Input[Dataset], baselines: Output[Artifact]):
    """Pruned without recovery, uniform LoRA at the baseline rank (and optionally AdaLoRA), on both splits."""
    from rankadaptor.job import job_from_json
    from rankadaptor.steps.model import baselines as run

    run(job_from_json(job), pruned_model.path, data.path, baselines.path)
