from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components import CPU_IMAGE, gpu_component


@gpu_component
def bootstrap(job: str, pruned_model: Input[Model], structure: Input[Artifact], data: Input[Dataset],
              trials: Output[Artifact], gpu_count: int, gpu_step_cpu: str, gpu_step_memory: str):
    """Seed an empty observation bank: random rank vectors measured on the source tasks."""
    from rankadaptor.infra.failures import failing_once
    from rankadaptor.job import job_from_json
    from rankadaptor.models.loading import require_gpus
    from rankadaptor.steps.model import bootstrap

    require_gpus(gpu_count)
    with failing_once(trials.uri):  # a retried attempt fails at once
        trials.metadata["trials_run"] = bootstrap(job_from_json(job), pruned_model.uri, structure.path, data.path,
                                                  trials.uri)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def bootstrap_vectors(job: str, structure: Input[Artifact], data: Input[Dataset]) -> list:
    """The bootstrap pipeline's random rank vectors (fixed by the seed, within the budget), from the pruned
    model's structure artifact: no weights downloaded."""
    from rankadaptor.flows.baselines import bootstrap_vectors
    from rankadaptor.job import job_from_json
    from rankadaptor.models.structure import trial_context

    return bootstrap_vectors(job_from_json(job), trial_context(structure.path, data.path).cost_per_rank)


@gpu_component
def bootstrap_trial(job: str, pruned_model: Input[Model], structure: Input[Artifact], data: Input[Dataset],
                    rank_vector: list, gpu_count: int, gpu_step_cpu: str, gpu_step_memory: str,
                    work_uri: str = "") -> bool:
    """One bootstrap trial: recover with rank_vector, measure on the source tasks, bank the result."""
    from rankadaptor.infra import storage
    from rankadaptor.job import job_from_json
    from rankadaptor.models.loading import require_gpus
    from rankadaptor.models.structure import trial_context
    from rankadaptor.steps.model import bootstrap_trial

    require_gpus(gpu_count)
    config = job_from_json(job)
    context = trial_context(structure.path, data.path)
    root = work_uri or storage.join(pruned_model.uri.rsplit("/", 2)[0], "bootstrap")
    return bootstrap_trial(config, context, pruned_model.path, data.path, [int(r) for r in rank_vector], root)
