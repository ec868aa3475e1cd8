from kfp.dsl import Dataset, Output

from components import gpu_component


@gpu_component
def prepare_data(job: str, data: Output[Dataset], gpu_count: int, gpu_step_cpu: str, gpu_step_memory: str):
    """The recovery data, or a self-distillation corpus sampled from the base model."""
    from rankadaptor.infra.failures import failing_once
    from rankadaptor.job import job_from_json
    from rankadaptor.models.loading import require_gpus
    from rankadaptor.steps.model import prepare_data

    require_gpus(gpu_count)
    with failing_once(data.uri):  # a retried attempt fails at once
        data.metadata.update(prepare_data(job_from_json(job), data.path))
