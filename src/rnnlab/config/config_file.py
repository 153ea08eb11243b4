"""Config files: reading one (TOML, or a run's ``run.json``) into a dict of sections, and
writing a :class:`~rnnlab.config.run.RunConfig` as TOML.

A TOML config file has the sections ``[data]``, ``[model]``, ``[optim]`` and ``[train]`` with
the fields of :class:`RunConfig` and an optional top-level ``preset = "NAME"`` that it
overrides (``preset = ""``: none, not even the one chosen by the source)::

    preset = "ptb-small"

    [model]
    hidden_size = 256

    [train]
    max_minutes = 30.0

Relative paths in ``[data]`` (``text``, ``valid_text``, ``test_text``) are taken relative to
the file's directory. TOML has no null: a field left out keeps the value of the layers below it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from rnnlab.config.run import SECTIONS, RunConfig
from rnnlab.errors import ConfigError

RUN_JSON = "run.json"  # a run directory's config (rnnlab.runs.checkpoint.RUN_CONFIG)
PATH_KEYS = ("text", "valid_text", "test_text")  # [data] keys holding file paths


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The contents of a config file: TOML, or JSON when it ends in ``.json``; a run directory
    stands for its ``run.json``. Relative data paths become absolute (relative to the file).

    Raises a one-line :class:`ConfigError` for a missing file or bad TOML/JSON; the keys are
    checked when the config is resolved (:func:`rnnlab.config.resolve.resolve_config`).
    """
    path = Path(path)
    if path.is_dir():
        if not (path / RUN_JSON).is_file():
            raise ConfigError(f"{path} is a directory without a {RUN_JSON}; give a config file")
        path = path / RUN_JSON
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; give a TOML file or a run's {RUN_JSON}")
    is_json = path.suffix.lower() == ".json"
    kind = "JSON" if is_json else "TOML"
    try:
        text = path.read_text(encoding="utf-8")
        values = json.loads(text) if is_json else tomllib.loads(text)
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text; a config file is {kind}") from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path} is not valid {kind} ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} holds no table of sections; a config file is {kind}")
    data = values.get("data")
    if isinstance(data, dict):
        for key in PATH_KEYS:
            if isinstance(data.get(key), str):
                data[key] = str((path.parent / data[key]).absolute())
    return values


def parse_toml(text: str) -> dict[str, Any]:
    """The tables of a TOML text (as :func:`to_toml` writes); bad TOML is a ConfigError."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML ({e})") from None


def to_toml(config: RunConfig) -> str:
    """``config`` as a TOML config file: ``preset`` (if any) and the four sections, every field
    in order; a field that is None is written as a comment (TOML has no null), a preset that
    is None as ``preset = ""``."""
    d = config.to_dict()
    lines = ["# rnnlab run config (rnnlab train --config FILE)"]
    lines.append(f"preset = {_toml_value(d['preset'] or '')}")
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        for key, value in d[section].items():
            lines.append(f"# {key} (not set)" if value is None else f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_value(value: Any) -> str:
    """One TOML value: string, boolean, integer, float, array or inline table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # always has '.' or an exponent, and reads back exactly
    if isinstance(value, str):
        return '"' + "".join(_escape(c) for c in value) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise ConfigError(f"cannot write {value!r} in a TOML config file")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_value(key)


def _escape(c: str) -> str:
    if c in _ESCAPES:
        return _ESCAPES[c]
    if ord(c) < 0x20 or ord(c) == 0x7F:
        return f"\\u{ord(c):04X}"
    return c
