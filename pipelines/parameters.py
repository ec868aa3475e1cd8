"""Pipeline parameters generated from `rankadaptor.job.JobConfig`: the main choices and the promoted stage
options (rankadaptor.job.PROMOTED: prune_ratio, search_max_iterations, ...) as typed parameters (name, type,
default and description from the config field), the rest as one validated `stage_options`,
and the cluster placement parameters (the table of pipelines/placement.py). A pipeline function written as
`def p(*args)` gets its signature and its docstring's Args (which KFP reads for the UI) from `with_parameters`."""

import dataclasses
import inspect
import typing

from pipelines.placement import PLACEMENT
from rankadaptor.config import default_of, help_text
from rankadaptor.job import MAIN_CHOICES, JobConfig, promoted_fields

REQUIRED = ("base_model",)  # no default: a run must name it
STAGE_OPTIONS = ("stage_options", dict, {},
                 'Every other job option, validated before any GPU step, e.g. {"prune": {"mode": "depth"}, '
                 '"recover": {"rank": 8, "lr": 0.0003}, "search": {"patience": 3}, "runtime": {"device": "cuda"}}.')
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


def promoted_parameters(paths: tuple[str, ...]) -> list[tuple[str, type, object, str]]:
    """(name, type, default, description) of the promoted stage options `paths` (rankadaptor.job.PROMOTED)."""
    return [(name, _kfp_type(tp), default_of(f), f"{stage}.{f.name}: {help_text(f)}")
            for name, stage, tp, f in promoted_fields(paths)]


def _specs(names: tuple[str, ...] | None, promoted: tuple[str, ...] = ()) -> list[tuple[str, type, object, str]]:
    """The job's parameters `names`, the promoted stage options and stage_options (None: the task catalog
    instead), then the placement."""
    job = [*job_parameters(names), *promoted_parameters(promoted), STAGE_OPTIONS] if names is not None else [CATALOG]
    return [*job, *((p.name, p.type, p.default, p.help) for p in PLACEMENT)]


def with_parameters(names: tuple[str, ...] | None = MAIN_CHOICES, promoted: tuple[str, ...] = ()):
    """Give a `def p(*args)` pipeline the job's parameters `names`, the promoted stage options `promoted` and
    stage_options (None: the catalog parameter instead), and the placement ones."""
    specs = _specs(names, promoted)

    def decorate(func):
        func.__signature__ = inspect.Signature([
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=tp, default=default)
            for name, tp, default, _ in specs])
        args = "".join(f"    {name}: {text}\n" for name, _, _, text in specs)
        func.__doc__ = f"{func.__doc__}\n\nArgs:\n{args}"
        return func

    return decorate


def named(args: tuple, names: tuple[str, ...] | None = MAIN_CHOICES, promoted: tuple[str, ...] = ()) -> dict:
    """The arguments KFP passed positionally to a `with_parameters(names, promoted)` pipeline, by name."""
    return dict(zip([spec[0] for spec in _specs(names, promoted)], args, strict=True))
