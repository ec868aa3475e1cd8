from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components import gpu_component


@gpu_component
def baselines(job: str, pruned_model: Input[Model], data: Input[Dataset], baselines: Output[Artifact],
              gpu_count: int, gpu_step_cpu: str, gpu_step_memory: str):
    """Pruned without recovery, uniform LoRA at the baseline rank (and optionally AdaLoRA), on both splits."""
    from rankadaptor.infra.failures import failing_once
    from rankadaptor.job import job_from_json
    from rankadaptor.models.loading import require_gpus
    from rankadaptor.steps.model import baselines as run

    require_gpus(gpu_count)
    with failing_once(baselines.uri):  # a retried attempt fails at once
        run(job_from_json(job), pruned_model.path, data.path, baselines.path)
