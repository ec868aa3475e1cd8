from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def recover(job: str, pruned_model: Input[Model], data: Input[Dataset], proposal: Input[Artifact],
            adapter: Output[Model]):
    """LoRA fine-tuning with the proposed rank per layer."""
    from rankadaptor.job import job_from_json
    from rankadaptor.steps.model import recover
    from rankadaptor.steps.search import proposal_vector

    result = recover(job_from_json(job), pruned_model.path, data.path, proposal_vector(proposal.path), adapter.path)
    adapter.metadata.update({k: result[k] for k in ("rank_vector", "trainable_params", "tokens_per_second")})
