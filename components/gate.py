from kfp import dsl
from kfp.dsl import Artifact, Input

from components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def converged(job: str, search_state: Input[Artifact]) -> bool:
    """The loop gate: one boolean output (a condition on a named output of a multi-output task is
    silently skipped by the local runner)."""
    from rankadaptor.workflow import converged as check, job_from_json

    return check(job_from_json(job), search_state.path)
