from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components import gpu_component


@gpu_component
def prune(job: str, data: Input[Dataset], pruned_model: Output[Model], structure: Output[Artifact],
          metrics: Output[Metrics], gpu_count: int, gpu_step_cpu: str, gpu_step_memory: str):
    """LLM-Pruner width or Shortened-LLaMA depth pruning of the base model; structure: the pruned model's
    structure and checksum (kilobytes), for the steps that need no weights."""
    from pathlib import Path

    from rankadaptor.infra.failures import failing_once
    from rankadaptor.infra.storage import write_json_atomic
    from rankadaptor.job import job_from_json
    from rankadaptor.models.loading import require_gpus
    from rankadaptor.steps.model import prune

    require_gpus(gpu_count)
    with failing_once(pruned_model.uri):  # a retried attempt fails at once
        report = prune(job_from_json(job), data.path, pruned_model.path, structure.path)
        write_json_atomic(Path(metrics.path), report)  # an artifact without a file is a cache miss under kfp.local
        for name in ("params_before", "params_after", "removed_fraction", "ppl_before", "ppl_after"):
            if report[name] is not None:
                metrics.log_metric(name, report[name])
