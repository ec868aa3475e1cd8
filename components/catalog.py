from kfp import dsl

from components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def plan_catalog(catalog: str, loop_cap: int, scratch_size: str, run_id: str) -> list:
    """Read the task catalog at run time: every task's preflight, then the job JSONs of the tasks that search
    (no champion yet, or their data or options changed), each claimed for this run (run_id) so an overlapping
    run skips it. Reads the registry: never cache this step."""
    from rankadaptor.steps.catalog import plan

    return plan(catalog, loop_cap, scratch_size=scratch_size, owner=run_id)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def shared_job(planned: list) -> str:
    """The job of the run's shared corpus, pruning and bootstrap ('' when no task searches). One output: the
    local runner silently skips a condition on a named output of a multi-output task."""
    from rankadaptor.steps.catalog import shared_job

    return shared_job(planned)
