from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def baselines(job: str, pruned_model: Input[Model], data: Input[Dataset], baselines: Output[Artifact]):
    """Pruned without recovery, uniform LoRA r=8 (and optionally AdaLoRA), on both splits."""
    from rankadaptor.workflow import baselines_step, job_from_json

    baselines_step(job_from_json(job), pruned_model.path, data.path, baselines.path)
