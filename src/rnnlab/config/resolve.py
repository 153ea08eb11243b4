"""The one path from settings to a :class:`~rnnlab.config.run.RunConfig`, shared by ``rnnlab
train``, ``rnnlab config``, ``rnnlab compare`` and ``--resume``.

Layers, lowest first, each overriding the ones below:

1. the base: :class:`RunConfig`'s defaults, or a given config (a saved run for ``--resume``,
   compare's own defaults);
2. the preset: the one named, else the config file's ``preset``, else the automatic choice
   (:func:`choose_preset`: ``music-chung2014`` for a piano-roll corpus; ``quick`` when no corpus
   or text is given, and for a ``--text`` file at char level, ``words`` for one at word level,
   unless the caller asks for no default);
3. the config file (a TOML file or a run's ``run.json``, see :mod:`rnnlab.config.config_file`);
4. the overrides (the command-line flags given).

``--resume`` goes through :func:`resume_config`: the saved run's config is the base, no preset
or config file is applied again, and only the flags of :data:`RESUME_FLAGS` may be laid over it.

Every layer is checked by the config classes as it is applied (an unknown key is a one-line
error naming the layer it came from), and the merged result is validated as a whole. A layer
that names a source (``corpus`` or ``text``) replaces the source of the layers below it
(their ``corpus``, ``text`` and ``max_chars``); a table value (``corpus_options``) is merged
into the one below it key by key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rnnlab.config.config_file import read_config_file
from rnnlab.config.presets import get_preset
from rnnlab.config.run import SECTIONS, RunConfig, check_sections
from rnnlab.data.registry import is_pianoroll
from rnnlab.errors import ConfigError

DEFAULT_PRESET = "quick"  # what `rnnlab train` runs when given no corpus or text
PIANOROLL_PRESET = "music-chung2014"  # the protocol a piano-roll corpus starts from
TEXT_PRESETS = {"char": "quick", "word": "words"}  # what a --text file starts from, by level
SOURCE_KEYS = ("corpus", "text")  # the keys that name what text (or rolls) to model
REPLACED_BY_A_SOURCE = ("corpus", "text", "max_chars")

# the flags a resumed run may change (extending it, moving it to another device); all else is saved
RESUME_FLAGS = frozenset(
    {
        "epochs",
        "max_steps",
        "max_minutes",
        "save_every",
        "log_every",
        "device",
        "patience",
        "threads",
        "encoding",  # a text file that no longer decodes as recorded (tried first, then detected)
    }
)

Layer = Mapping[str, Mapping[str, Any]]


def resolve_config(
    preset: str | None = None,
    overrides: Layer | None = None,
    *,
    base: RunConfig | Layer | None = None,
    file: str | Path | Mapping[str, Any] | None = None,
    default_preset: str | None = DEFAULT_PRESET,
) -> RunConfig:
    """The validated config of base, preset, config file and overrides (see the module doc).

    Args:
        preset: a preset name; None: the config file's ``preset`` if it has that key (a
            run.json's ``null`` or a TOML file's ``""`` means none), else the automatic choice.
        overrides: ``{section: {field: value}}``, e.g. the flags given.
        base: the config the layers apply to (default: the RunConfig defaults); may be a
            partial dict of sections. The result keeps its ``preset`` unless one is applied.
        file: a config file (path: TOML, or JSON for ``*.json``, or a run directory's run.json)
            or its already-read contents.
        default_preset: the preset when none is named and neither the file nor the overrides
            name a source; None for none (compare, resume).
    """
    where = "config file"
    if isinstance(file, (str, Path)):
        where = str(file)
        file = read_config_file(file)
    file_values = check_sections(file, where=where) if file is not None else None
    layer = check_sections(overrides or {})
    if "preset" in layer:
        raise ConfigError("give the preset by name, not among the overrides")
    chosen = choose_preset(preset, file_values, layer, default_preset)
    if isinstance(base, RunConfig):
        base = base.to_dict()
    merged: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    base_preset = None
    if base is not None:
        checked = check_sections(base, where="base config")
        base_preset = checked.get("preset")
        _apply(merged, checked)
    if chosen is not None:
        _apply(merged, check_sections(get_preset(chosen).overrides, where=f"preset {chosen!r}"))
    if file_values is not None:
        _apply(merged, file_values)
    _apply(merged, layer)
    return RunConfig.from_dict({**merged, "preset": chosen or base_preset})


def resume_config(
    saved: RunConfig,
    overrides: Layer | None = None,
    given: Iterable[str] = (),
    *,
    preset: str | None = None,
    file: str | Path | Mapping[str, Any] | None = None,
) -> RunConfig:
    """The config a resumed run continues with: ``saved`` with ``overrides`` laid over it (no
    preset is applied again).

    Args:
        saved: the run's saved config (its ``run.json``).
        overrides: ``{section: {field: value}}`` of the flags given.
        given: the names of the flags given (``max_steps``, ``start_frame``, ...); any outside
            :data:`RESUME_FLAGS` is refused.
        preset, file: a preset or config file given with the resume: refused (the run keeps its
            own).

    Raises:
        ConfigError: naming the refused flags (sorted, then ``--preset`` and ``--config``) and
            the allowed ones, before anything is resolved.
    """
    bad = sorted(set(given) - RESUME_FLAGS)
    bad += [name for name, value in (("preset", preset), ("config", file)) if value]
    if bad:
        raise ConfigError(
            f"--resume continues a run with its saved settings; it cannot change "
            f"{', '.join(_flag(name) for name in bad)} (allowed: "
            f"{', '.join(_flag(name) for name in sorted(RESUME_FLAGS))})"
        )
    return resolve_config(None, overrides, base=saved, default_preset=None)


def _flag(name: str) -> str:
    """``max_steps`` -> ``--max-steps``."""
    return "--" + name.replace("_", "-")


def choose_preset(
    preset: str | None,
    file: Mapping[str, Any] | None,
    overrides: Layer | None,
    default_preset: str | None = DEFAULT_PRESET,
) -> str | None:
    """The preset to apply: ``preset``; else the file's ``preset`` key (null: none); else, by
    the source named last (overrides, else file): :data:`PIANOROLL_PRESET` for a piano-roll
    corpus, :data:`TEXT_PRESETS` by level for a text file (char unless ``level`` says word;
    only when ``default_preset`` is not None), no preset for another named corpus;
    ``default_preset`` when no source is named."""
    if preset is not None:
        return preset
    if file is not None and "preset" in file:
        named = file["preset"]
        if named is not None and not isinstance(named, str):
            raise ConfigError(f"preset must be a name, got {named!r}")
        return named or None  # TOML has no null: preset = "" says "no preset" too
    for layer in (overrides, file):
        data = (layer or {}).get("data") or {}
        if any(data.get(key) is not None for key in SOURCE_KEYS):
            corpus = data.get("corpus")
            if corpus is not None:
                return PIANOROLL_PRESET if is_pianoroll(corpus) else None
            if default_preset is None:
                return None
            level = data.get("level") or ((file or {}).get("data") or {}).get("level")
            return TEXT_PRESETS["word" if level == "word" else "char"]
    return default_preset


def _apply(into: dict[str, dict[str, Any]], layer: Mapping[str, Any]) -> None:
    """Lay ``layer``'s sections over ``into`` (a source replaces the one below; tables merge)."""
    data = layer.get("data") or {}
    if any(data.get(key) is not None for key in SOURCE_KEYS):
        for key in REPLACED_BY_A_SOURCE:
            into["data"].pop(key, None)
    for section in SECTIONS:
        for key, value in (layer.get(section) or {}).items():
            below = into[section].get(key)
            if isinstance(value, dict) and isinstance(below, dict):
                value = {**below, **value}
            into[section][key] = value
