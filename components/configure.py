from kfp import dsl

from components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def configure(base_model: str, data: str, heldout_text: str, target_task: str, source_tasks: list,
              report_tasks: list, eval_data_dir: str, bootstrap_trials: int, adalora_baseline: bool, seed: int,
              stage_options: dict) -> str:
    """Validate the job once, before any GPU step starts; every later step receives this JSON."""
    import json

    from rankadaptor.config import from_dict, to_dict
    from rankadaptor.workflow import JobConfig

    job = from_dict(JobConfig, {"base_model": base_model, "data": data, "heldout_text": heldout_text,
                                "target_task": target_task, "source_tasks": source_tasks,
                                "report_tasks": report_tasks, "eval_data_dir": eval_data_dir or None,
                                "bootstrap_trials": bootstrap_trials, "adalora_baseline": adalora_baseline,
                                "seed": seed, **stage_options})
    job.validate()
    return json.dumps(to_dict(job))
