"""Typed stage configs: dataclasses, loadable from YAML, overridable from the command line.

Each stage module defines its own `@dataclass` config; this module turns any of them into argparse
options (help text from `field(metadata={"help": ...})`), loads them from YAML and dicts with type
checks, and serialises them for KFP components and MLflow params. One mechanism for every stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rankadaptor.errors import UserError

T = TypeVar("T")


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A config field with its help text; list defaults are copied per instance."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Check value against the annotation tp; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except UserError:
                pass
        raise UserError(f"{name}={value!r} is not a valid {_type_name(tp)}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{name}={value!r} must be a list of {_type_name(item)}")
        return [_coerce(f"{name}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{name}={value!r} must be a mapping")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise UserError(f"{name}={value!r} must be of type {tp.__name__}")
    return value


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Build a config from a mapping, refusing unknown keys and wrong types, then run its validate()."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown option(s) {unknown} for {cls.__name__}; accepted: {sorted(known)}")
    config = cls(**{k: _coerce(k, v, hints[k]) for k, v in values.items()})
    if hasattr(config, "validate"):
        config.validate()
    return config


def load(cls: type[T], yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """YAML file (optional) then explicit overrides, later wins."""
    values: dict[str, Any] = {}
    if yaml_path:
        path = Path(yaml_path)
        if not path.is_file():
            raise UserError(f"config file {str(path)!r} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise UserError(f"config file {str(path)!r} must hold a mapping of option: value")
        values.update(loaded)
    values.update(overrides or {})
    return from_dict(cls, values)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One --option per config field, documented with its help text, type and default."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} [{_type_name(hints[f.name])}, default: {default!r}]"
        parse = str if hints[f.name] is str else yaml.safe_load
        parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, type=parse,
                            metavar=f.name.upper(), help=help_text.replace("%", "%%"))
    parser.add_argument("--config", dest="_config", default=None, metavar="YAML",
                        help="YAML file of options; command-line options override it")


def from_args(cls: type[T], args: argparse.Namespace) -> T:
    values = {k: v for k, v in vars(args).items() if k in {f.name for f in dataclasses.fields(cls)}}
    return load(cls, getattr(args, "_config", None), values)
