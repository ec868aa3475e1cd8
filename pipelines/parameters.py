"""Pipeline parameters generated from `rankadaptor.job.JobConfig`: the main choices as typed parameters
(name, type, default and description from the JobConfig field), the rest as one validated `stage_options`,
and the cluster placement parameters. A pipeline function written as `def p(*args)` gets its signature and
its docstring's Args (which KFP reads for the UI) from `with_parameters`."""

import dataclasses
import inspect
import typing

from rankadaptor.config import default_of, help_text
from rankadaptor.job import MAIN_CHOICES, JobConfig

GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
REQUIRED = ("base_model",)  # no default: a run must name it
STAGE_OPTIONS = ("stage_options", dict, {},
                 'Every other job option, validated before any GPU step, e.g. {"prune": {"ratio": 0.2}, "search": '
                 '{"threshold": 0.005, "max_iterations": 6}, "runtime": {"device": "cuda"}, "registry": '
                 '{"model_name": "llama-7b-pruned20"}}.')
CATALOG = ("catalog", str, inspect.Parameter.empty,
           "The task catalog: a YAML file (s3://) of the tasks to keep a champion for, read at run time "
           "(docs/deploy.md, Scheduling new tasks).")
PLACEMENT = (
    ("gpu_count", int, 1, "GPUs per GPU step."),
    ("node_selector", dict, GPU_NODE_SELECTOR, "Node selector of the GPU node pool."),
    ("tolerations", list, GPU_TOLERATIONS, "Tolerations of the GPU node pool's taints."),
    ("s3_secret", str, "rankadaptor-s3",
     "Name of the Kubernetes Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_ENDPOINT_URL."),
    ("mlflow_secret", str, "rankadaptor-mlflow",
     "Name of the Kubernetes Secret with MLFLOW_TRACKING_URI (and basic-auth user/password)."),
    ("gpu_step_cpu", str, "8", "CPU request of each GPU step (prepare-data, prune, baselines, bootstrap, recover, "
                               "evaluate, evaluate-best)."),
    ("gpu_step_memory", str, "96Gi", "Memory request and limit of each GPU step (a 7B model in bf16 is ~13.5 GB; "
                                     "pruning also holds gradients of the pruned layers)."),
    ("cpu_step_cpu", str, "1", "CPU request of each CPU step (configure, propose, update, gate, meta-pretrain, "
                               "register; the catalog's plan-catalog and shared-job)."),
    ("cpu_step_memory", str, "8Gi", "Memory request and limit of each CPU step."),
)


def _kfp_type(tp) -> type:
    return {list: list, dict: dict}.get(typing.get_origin(tp), tp)


def job_parameters(names: tuple[str, ...] = MAIN_CHOICES) -> list[tuple[str, type, object, str]]:
    """(name, type, default, description) of JobConfig fields, in JobConfig's order."""
    hints = typing.get_type_hints(JobConfig)
    return [(f.name, _kfp_type(hints[f.name]), inspect.Parameter.empty if f.name in REQUIRED else default_of(f),
             help_text(f)) for f in dataclasses.fields(JobConfig) if f.name in names]


def _specs(names: tuple[str, ...] | None) -> list[tuple[str, type, object, str]]:
    """The job's parameters `names` and stage_options (None: the task catalog instead), then the placement."""
    return [*([CATALOG] if names is None else [*job_parameters(names), STAGE_OPTIONS]), *PLACEMENT]


def with_parameters(names: tuple[str, ...] | None = MAIN_CHOICES):
    """Give a `def p(*args)` pipeline the job's parameters `names` and stage_options (None: the catalog
    parameter instead), and the placement ones."""
    specs = _specs(names)

    def decorate(func):
        func.__signature__ = inspect.Signature([
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=tp, default=default)
            for name, tp, default, _ in specs])
        args = "".join(f"    {name}: {text}\n" for name, _, _, text in specs)
        func.__doc__ = f"{func.__doc__}\n\nArgs:\n{args}"
        return func

    return decorate


def named(args: tuple, names: tuple[str, ...] | None = MAIN_CHOICES) -> dict:
    """The arguments KFP passed positionally to a `with_parameters(names)` pipeline, by parameter name."""
    return dict(zip([spec[0] for spec in _specs(names)], args, strict=True))
