"""Typed configs, one mechanism for every stage and for the job.

A config is a dataclass whose fields are declared with `option()` (default, help text, and whether the
setting is a runtime one or one the job sets). pydantic validates a mapping against the field types,
`validate()` adds the checks types cannot express, and the same fields make the argparse options.
docs/architecture.md ("Configuration") says how to add a field.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import TypeAdapter, ValidationError

from rankadaptor.errors import UserError

T = TypeVar("T")


def option(default: Any, help: str, *, runtime: bool = False, set_by_job: bool = False, **kwargs: Any) -> Any:
    """A config field with its help text. runtime: says how a run goes, not what it computes (the job keeps
    these in its `runtime` section, outside trial identity). set_by_job: inside a job the job fills it in
    (from its artifacts or its own fields), so a job's stage options may not set it."""
    metadata = {"help": help, "runtime": runtime, "set_by_job": set_by_job}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: dataclasses.replace(default), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def help_text(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "")


def is_runtime(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("runtime"))


def is_set_by_job(f: dataclasses.Field) -> bool:
    """Fields a job fills in: marked set_by_job, and every stage's seed (a job has one seed)."""
    return bool(f.metadata.get("set_by_job")) or f.name == "seed"


def default_of(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _nested(cls: type) -> dict[str, type]:
    """Fields of cls whose type is itself a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


def _check_keys(cls: type, values: Any, where: str = "", settable: set[str] | None = None) -> None:
    """Refuse unknown keys (pydantic ignores them on dataclasses) and, in a nested stage config, the keys the
    enclosing config sets itself."""
    if not isinstance(values, dict):
        return  # pydantic names the wrong type
    settable = settable if settable is not None else {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise UserError(f"{where}unknown option(s) {unknown} for {cls.__name__}; accepted: {sorted(settable)}")
    for name, nested in _nested(cls).items():
        if not isinstance(values.get(name), dict):
            continue
        own = {f.name for f in dataclasses.fields(nested) if is_set_by_job(f) or is_runtime(f)}
        refused = sorted(set(values[name]) & own)
        if refused and hasattr(cls, "owns_stage_inputs"):
            raise UserError(f"{where}{name}: {refused} cannot be set per stage: {cls.owns_stage_inputs(refused)}")
        _check_keys(nested, values[name], f"{where}{name}: ",
                    {f.name for f in dataclasses.fields(nested)} - own if hasattr(cls, "owns_stage_inputs") else None)


def error_line(error: ValidationError) -> str:
    """A pydantic error as one line: the field, the bad value, what is accepted."""
    parts = []
    for e in error.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "value_error":
            parts.append(str(e["ctx"]["error"]))
        else:
            parts.append(f"{loc}={e['input']!r} is not accepted: {e['msg'][0].lower()}{e['msg'][1:]}")
    return "; ".join(parts)


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Build a config from a mapping: unknown keys and wrong types refused (one line), then its validate()."""
    if not isinstance(values, dict):
        raise UserError(f"{cls.__name__} options must be a mapping of option: value, not {values!r}")
    _check_keys(cls, values)
    try:
        config = TypeAdapter(cls).validate_python(values)
    except ValidationError as e:
        raise UserError(error_line(e)) from None
    if hasattr(config, "validate"):
        config.validate()
    return config


def parse_yaml(text: str, where: str) -> Any:
    """YAML (JSON is YAML) parsed, or one line naming where, the line and the column of the syntax error."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{where}: YAML/JSON syntax error{at}: {problem}") from None


def load(cls: type[T], yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """YAML file (optional) then explicit overrides, later wins."""
    values: dict[str, Any] = {}
    if yaml_path:
        path = Path(yaml_path)
        if not path.is_file():
            raise UserError(f"config file {str(path)!r} does not exist")
        loaded = parse_yaml(path.read_text(), f"config file {str(path)!r}") or {}
        if not isinstance(loaded, dict):
            raise UserError(f"config file {str(path)!r} must hold a mapping of option: value")
        values.update(loaded)
    values.update(overrides or {})
    return from_dict(cls, values)


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain values. A nested stage config leaves out what the enclosing config sets."""
    values = dataclasses.asdict(config)
    for name, nested in _nested(type(config)).items():
        for f in dataclasses.fields(nested):
            if is_set_by_job(f) or is_runtime(f):
                values[name].pop(f.name)
    return values


def describe(cls: type, prefix: str = "", defaults: Any = None) -> list[str]:
    """One line per option a YAML file of cls may set, `name: default  help`; a nested section's options are
    dotted, without those the enclosing config sets."""
    lines, nested = [], _nested(cls)
    for f in dataclasses.fields(cls):
        if prefix and (is_set_by_job(f) or is_runtime(f)):
            continue  # a job sets these itself, or in its `runtime` section
        default = getattr(defaults, f.name) if defaults is not None else default_of(f)
        if f.name in nested:
            lines += describe(nested[f.name], f"{prefix}{f.name}.", default)
        else:
            lines.append(f"  {prefix}{f.name}: {default!r}  {help_text(f)}")
    return lines


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One --option per config field, documented with its help text, type and default."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        text = f"{help_text(f)} [{_type_name(hints[f.name])}, default: {default_of(f)!r}]"
        parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, metavar=f.name.upper(),
                            help=text.replace("%", "%%"))
    parser.add_argument("--config", dest="_config", default=None, metavar="YAML",
                        help="YAML file of options; command-line options override it")


def from_args(cls: type[T], args: argparse.Namespace) -> T:
    """The config from --config then the command-line options; a non-string option's value is YAML."""
    hints = typing.get_type_hints(cls)
    values = {k: v if hints[k] is str else parse_yaml(v, "--" + k.replace("_", "-"))
              for k, v in vars(args).items() if k in hints and k in {f.name for f in dataclasses.fields(cls)}}
    return load(cls, getattr(args, "_config", None), values)
