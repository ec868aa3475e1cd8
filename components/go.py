from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components import CPU_IMAGE, gpu_component


@gpu_component
def go_check(job: str, pruned_model: Input[Model], structure: Input[Artifact], data: Input[Dataset],
             baselines: Input[Artifact], decision: Output[Artifact], gpu_count: int, gpu_step_cpu: str,
             gpu_step_memory: str):
    """Go/no-go: cheap trials (uniform at 2+ seeds, a few random vectors) decide whether a search can pay."""
    from rankadaptor.infra.failures import failing_once
    from rankadaptor.job import job_from_json
    from rankadaptor.models.loading import require_gpus
    from rankadaptor.steps.model import go_check

    require_gpus(gpu_count)
    with failing_once(decision.uri):  # a retried attempt fails at once
        decision.metadata.update({k: v for k, v in go_check(
            job_from_json(job), pruned_model.uri, structure.path, data.path, baselines.path, decision.path,
            decision.uri).items() if isinstance(v, (bool, int, float, str))})


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def go_gate(decision: Input[Artifact]) -> bool:
    """Does the search run? The go/no-go's decision as one boolean output (the loop gates' pattern: the local
    runner silently skips a condition on a named output of a multi-output task)."""
    from rankadaptor.steps.search import go_gate

    return go_gate(decision.path)
