from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components import CPU_IMAGE, gpu_component


@gpu_component
def evaluate_best(job: str, run_id: str, search_state: Input[Artifact], pruned_model: Input[Model],
                  data: Input[Dataset], baselines: Input[Artifact], go_decision: Input[Artifact],
                  evaluated: Output[Artifact], gpu_count: int, gpu_step_cpu: str, gpu_step_memory: str):
    """The finalists re-measured at more seeds, held-out evaluation of the one chosen, the comparison report, the
    chosen adapter logged to MLflow with its base (the part of registration that needs the weights)."""
    from rankadaptor.infra.claims import OWNER
    from rankadaptor.infra.failures import failing_once
    from rankadaptor.job import DIGEST_TAG, job_digest, job_from_json
    from rankadaptor.models.loading import require_gpus
    from rankadaptor.steps.register import evaluate_best

    require_gpus(gpu_count)
    with failing_once(evaluated.uri):  # a retried attempt fails at once
        evaluate_best(job_from_json(job), search_state.path, pruned_model.uri, data.path, baselines.path, evaluated.path,
                      lineage={OWNER: run_id, DIGEST_TAG: job_digest(job)}, go_uri=go_decision.path,
                      work_uri=evaluated.uri)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def register(job: str, evaluated: Input[Artifact], report: Output[Artifact], summary: Output[Markdown],
             metrics: Output[Metrics], cpu_step_cpu: str = "", cpu_step_memory: str = ""):
    """Register the logged version in MLflow (the champion rule), the report with its plots; no weights.
    cpu_step_cpu/cpu_step_memory: this task's resource requests, inputs only so its DAG carries them."""
    from rankadaptor.job import job_from_json
    from rankadaptor.report import markdown_with_plots
    from rankadaptor.steps.register import register, report_metrics

    result = register(job_from_json(job), evaluated.path, report.path)
    with open(summary.path, "w") as f:
        f.write(markdown_with_plots(report.path))
    for name, value in report_metrics(result).items():
        metrics.log_metric(name, value)
    metrics.log_metric("registered_version", result["registration"]["version"])
