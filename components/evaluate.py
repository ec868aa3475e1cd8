from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def evaluate(job: str, pruned_model: Input[Model], data: Input[Dataset], adapter: Input[Model],
             metrics: Output[Metrics]):
    """Score the recovered model on the target task's selection rows."""
    from rankadaptor.job import job_from_json
    from rankadaptor.steps.model import evaluate

    result = evaluate(job_from_json(job), pruned_model.path, data.path, adapter.path, metrics.path)
    metrics.metadata["scores"] = result["scores"]
