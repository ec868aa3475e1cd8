from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components import gpu_component


@gpu_component
def recover(job: str, pruned_model: Input[Model], data: Input[Dataset], proposal: Input[Artifact],
            adapter: Output[Model], gpu_count: int, gpu_step_cpu: str, gpu_step_memory: str):
    """LoRA fine-tuning with the proposed rank per layer."""
    from rankadaptor.infra.failures import failing_once
    from rankadaptor.job import job_from_json
    from rankadaptor.models.loading import require_gpus
    from rankadaptor.steps.model import recover
    from rankadaptor.steps.search import proposal_vector

    require_gpus(gpu_count)
    with failing_once(adapter.uri):  # a retried attempt fails at once
        result = recover(job_from_json(job), pruned_model.path, data.path, proposal_vector(proposal.path), adapter.path)
        adapter.metadata.update({k: result[k] for k in ("rank_vector", "trainable_params", "tokens_per_second", "resumed_from")})
