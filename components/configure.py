from typing import Optional

from kfp import dsl

from components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def configure(base_model: str, data: str, heldout_text: str, target_task: str, source_tasks: list,
              report_tasks: list, eval_data_dir: str, bootstrap_trials: int, adalora_baseline: bool, seed: int,
              stage_options: dict, loop_cap: int, scratch_size: str, prune_ratio: Optional[float] = None,
              recover_epochs: Optional[int] = None, search_max_iterations: Optional[int] = None,
              search_threshold: Optional[float] = None, registry_model_name: Optional[str] = None) -> str:
    """Validate the job once, before any GPU step starts; every later step receives this JSON. loop_cap: the
    search iterations the compiled loop holds (a job asking for more is refused here); scratch_size: the GPU
    steps' scratch volume ("" = none), which must hold the model. The preflight checks the
    inputs in seconds (rankadaptor.ops.preflight.check_job), before the first GPU step. The JSON holds the inputs'
    fingerprints, so a step's cache key changes with the content behind a URI: never cache this step. The
    promoted stage options (rankadaptor.job.PROMOTED, None where a pipeline does not promote them) merge into
    their stage."""
    from rankadaptor.infra.fingerprint import fingerprints
    from rankadaptor.job import check_loop_cap, from_parameters, job_inputs, job_to_json
    from rankadaptor.ops.preflight import check_job

    job = from_parameters(stage_options, base_model=base_model, data=data, heldout_text=heldout_text,
                          target_task=target_task, source_tasks=source_tasks, report_tasks=report_tasks,
                          eval_data_dir=eval_data_dir, bootstrap_trials=bootstrap_trials,
                          adalora_baseline=adalora_baseline, seed=seed, prune_ratio=prune_ratio,
                          recover_epochs=recover_epochs, search_max_iterations=search_max_iterations,
                          search_threshold=search_threshold, registry_model_name=registry_model_name)
    check_loop_cap(job, loop_cap)
    check_job(job, scratch_size=scratch_size)
    return job_to_json(job, fingerprints(job_inputs(job)))
