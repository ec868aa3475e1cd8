from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components import gpu_component


@gpu_component
def evaluate(job: str, pruned_model: Input[Model], data: Input[Dataset], adapter: Input[Model],
             metrics: Output[Metrics], gpu_count: int, gpu_step_cpu: str, gpu_step_memory: str):
    """Score the recovered model on the target task's selection rows."""
    from rankadaptor.infra.failures import failing_once
    from rankadaptor.job import job_from_json
    from rankadaptor.models.loading import require_gpus
    from rankadaptor.steps.metrics import flat_metrics
    from rankadaptor.steps.model import evaluate

    require_gpus(gpu_count)
    with failing_once(metrics.uri):  # a retried attempt fails at once
        result = evaluate(job_from_json(job), pruned_model.path, data.path, adapter.path, metrics.path)
        for name, value in flat_metrics(result["scores"]).items():  # flat: the UI's scalar-metrics view
            metrics.log_metric(name, value)
