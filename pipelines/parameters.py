"""Pipeline parameters generated from `rankadaptor.job.JobConfig`: the main choices as typed parameters
(name, type, default and description from the JobConfig field), the rest as one validated `stage_options`,
and the cluster placement parameters (the table of pipelines/placement.py). A pipeline function written as
`def p(*args)` gets its signature and its docstring's Args (which KFP reads for the UI) from `with_parameters`."""

import dataclasses
import inspect
import typing

from pipelines.placement import PLACEMENT
from rankadaptor.config import default_of, help_text
from rankadaptor.job import MAIN_CHOICES, JobConfig

REQUIRED = ("base_model",)  # no default: a run must name it
STAGE_OPTIONS = ("stage_options", dict, {},
                 'Every other job option, validated before any GPU step, e.g. {"prune": {"ratio": 0.2}, "search": '
                 '{"threshold": 0.005, "max_iterations": 6}, "runtime": {"device": "cuda"}, "registry": '
                 '{"model_name": "llama-7b-pruned20"}}.')
CATALOG = ("catalog", str, inspect.Parameter.empty,
           "The task catalog: a YAML file (s3://) of the tasks to keep a champion for, read at run time "
           "(docs/deploy.md, Scheduling new tasks).")


def _kfp_type(tp) -> type:
    return {list: list, dict: dict}.get(typing.get_origin(tp), tp)


def job_parameters(names: tuple[str, ...] = MAIN_CHOICES) -> list[tuple[str, type, object, str]]:
    """(name, type, default, description) of JobConfig fields, in JobConfig's order."""
    hints = typing.get_type_hints(JobConfig)
    return [(f.name, _kfp_type(hints[f.name]), inspect.Parameter.empty if f.name in REQUIRED else default_of(f),
             help_text(f)) for f in dataclasses.fields(JobConfig) if f.name in names]


def _specs(names: tuple[str, ...] | None) -> list[tuple[str, type, object, str]]:
    """The job's parameters `names` and stage_options (None: the task catalog instead), then the placement."""
    return [*([CATALOG] if names is None else [*job_parameters(names), STAGE_OPTIONS]),
            *((p.name, p.type, p.default, p.help) for p in PLACEMENT)]


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
