from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def evaluate(job: str, pruned_model: Input[Model], data: Input[Dataset], adapter: Input[Model],
             metrics: Output[Metrics]):
    """Score the recovered model on the target task's selection rows."""
    from rankadaptor.workflow import evaluate_step, job_from_json

    config = job_from_json(job)
    result = evaluate_step(config, pruned_model.path, data.path, adapter.path, [config.target_task], "select",
                           metrics.path)
    metrics.metadata["scores"] = result["scores"]
