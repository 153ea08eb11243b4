"""Typed config classes from plain dicts (a run.json, a preset, a config file, a checkpoint's
description): an unknown key or a value of the wrong type is a one-line :class:`ConfigError`
that names it and the keys the class knows. Every config class reads dicts through here.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from rnnlab.errors import ConfigError

T = TypeVar("T")

_TYPE_WORDS = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    tuple: "a list",
    dict: "a table",
}


def field_names(kind: type) -> tuple[str, ...]:
    """The keys config class ``kind`` accepts, in field order."""
    return tuple(f.name for f in dataclasses.fields(kind))


def checked_fields(kind: type, values: Any, *, section: str, where: str = "") -> dict[str, Any]:
    """``values`` checked against the fields of dataclass ``kind``: a table of known keys with
    values of the declared types (an integer where a float is declared becomes that float, a
    list where a tuple is declared that tuple). ``section`` names the table in messages
    (``[model]``), ``where`` (a file name) prefixes them."""
    prefix = f"{where}: " if where else ""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix}[{section}] must be a table of keys, got {values!r}")
    hints = _field_types(kind)
    out = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(
                f"{prefix}unknown key {key!r} in [{section}]; known: {', '.join(field_names(kind))}"
            )
        out[key] = _checked(value, hints[key], f"{prefix}[{section}] {key}")
    return out


def from_fields(kind: type[T], values: Any, *, section: str, where: str = "") -> T:
    """An instance of config class ``kind`` from ``values`` (see :func:`checked_fields`);
    missing keys take their defaults, and the class's own checks run as usual."""
    return kind(**checked_fields(kind, values, section=section, where=where))


@functools.cache
def _field_types(kind: type) -> dict[str, Any]:
    hints = typing.get_type_hints(kind)
    return {f.name: hints[f.name] for f in dataclasses.fields(kind)}


def _checked(value: Any, hint: Any, what: str) -> Any:
    """``value`` if it has the type ``hint`` declares (``X | None`` admits None)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        (hint,) = options
    kind = typing.get_origin(hint) or hint
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is tuple:
        ok = isinstance(value, (list, tuple))
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError(f"{what} must be {_TYPE_WORDS[kind]}, got {value!r}")
    if kind is float:
        return float(value)
    if kind is tuple:
        return tuple(value)
    if kind is dict:
        return dict(value)
    return value
