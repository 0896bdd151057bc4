"""Command-line flags generated from a workload's options model (pydantic field docs -> ``--help``).

Each field becomes ``--field-name`` (plus any ``json_schema_extra={"flags": [...]}`` aliases)
with ``default=None``, so the command knows which options the user gave: those override a
preset's, and with ``--resume`` they must equal the run's.
"""

from __future__ import annotations

import argparse
import json
import typing
from typing import Any, Literal

from microforge.platform.config import ConfigModel
from microforge.platform.errors import ConfigError

__all__ = ["add_option_flags", "given_options"]


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc})") from None


def _flag_kwargs(annotation: Any) -> dict[str, Any]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union and type(None) in args:  # Optional[X]
        rest = [a for a in args if a is not type(None)]
        return _flag_kwargs(rest[0]) if len(rest) == 1 else {"type": _json, "metavar": "JSON"}
    if origin is Literal:
        return {"choices": list(args), "type": type(args[0])}
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if annotation in (int, float, str):
        return {"type": annotation}
    return {"type": _json, "metavar": "JSON"}


def add_option_flags(parser: argparse.ArgumentParser, options: type[ConfigModel], reserved: set[str]) -> list[str]:
    """Add one flag per field of ``options``; returns the field names.

    Raises:
        ConfigError: a field whose flag is one of the command's own (``reserved`` dests).
    """
    group = parser.add_argument_group("workload options")
    names = []
    for name, info in options.model_fields.items():
        if name in reserved:
            raise ConfigError(f"option '{name}' of {options.__name__} clashes with the command's own --"
                              f"{name.replace('_', '-')}")
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        flags = [f"--{name.replace('_', '-')}", *extra.get("flags", [])]
        default = info.get_default(call_default_factory=True)
        shown = json.dumps(default) if isinstance(default, (dict, list)) else default
        help_text = f"{info.description or name} (default {shown})" if default is not None else info.description
        group.add_argument(*flags, dest=name, default=None, help=help_text, **_flag_kwargs(info.annotation))
        names.append(name)
    return names


def given_options(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The options the user gave on the command line."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
