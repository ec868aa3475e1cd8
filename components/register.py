from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def register(job: str, run_id: str, search_state: Input[Artifact], pruned_model: Input[Model],
             data: Input[Dataset], baselines: Input[Artifact], report: Output[Artifact], summary: Output[Markdown],
             metrics: Output[Metrics], gpu_count: int = 0, gpu_step_cpu: str = "", gpu_step_memory: str = ""):
    """Held-out evaluation of the best trial, the comparison report and plots, MLflow registration.
    gpu_step_cpu/gpu_step_memory: this task's resource requests, inputs only so its DAG carries them."""
    from rankadaptor.job import DIGEST_TAG, job_digest, job_from_json
    from rankadaptor.modeling import require_gpus
    from rankadaptor.report import markdown_with_plots
    from rankadaptor.steps.register import register

    require_gpus(gpu_count)
    result = register(job_from_json(job), search_state.path, pruned_model.uri, data.path, baselines.path,
                      report.path, lineage={"pipeline_run": run_id, DIGEST_TAG: job_digest(job)})
    with open(summary.path, "w") as f:
        f.write(markdown_with_plots(report.path))
    for row in result["table"]:
        for column, value in row.items():
            if isinstance(value, float):
                metrics.log_metric(f"{row['method']}/{column}", value)
    metrics.log_metric("registered_version", result["registration"]["version"])
