from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def meta_pretrain(job: str, structure: Input[Artifact], data: Input[Dataset], baselines: Input[Artifact],
                  go_decision: Input[Artifact], search_state: Output[Artifact], pretrain: bool = True,
                  cpu_step_cpu: str = "", cpu_step_memory: str = ""):
    """Meta-pretrain the surrogate on the bank's other tasks (unless not `pretrain`: the go/no-go said no);
    start the search state, the go/no-go's finalists queued first. Reads the pruned model's structure artifact,
    never its weights. cpu_step_cpu/cpu_step_memory: this task's resource requests, inputs only so its
    condition DAG carries them."""
    from rankadaptor.job import job_from_json
    from rankadaptor.steps.search import meta_pretrain

    search_state.metadata.update(meta_pretrain(job_from_json(job), structure.path, data.path, baselines.uri,
                                               search_state.path, pretrain, go_decision.path))
