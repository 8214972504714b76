"""The project file `shelfgraph.toml`: how a retailer's catalog columns map to product fields, and settings
every command shares. Read once by the CLI (the entry point) and handed down as typed objects.

Precedence, lowest first: defaults < shelfgraph.toml < SHELFGRAPH_* environment < command-line options.
Nothing here reads the environment itself; pydantic-settings does that in DistillSettings.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distill.ingest.catalog import ColumnMapping
from distill.errors import ConfigError
from distill.settings import DistillSettings

CONFIG_NAME: Final = "shelfgraph.toml"
_MAPPING_FIELDS: Final = tuple(name for name in ColumnMapping.model_fields if name != "attribute_columns")
_PATH_SETTINGS: Final = frozenset({"data_dir"})
"""Settings that are paths: relative ones are taken relative to the project file, not to the cwd."""

EXAMPLE: Final = """\
# shelfgraph.toml (read from the current directory, or pass --config PATH)
[columns]            # which of your catalog's columns feeds which product field
id = "sku"
title = "name"
description = "desc"
category = "dept"
category_separator = " > "
price = "cost"

[settings]           # any SHELFGRAPH_* setting, lower-case, without the prefix
data_dir = ".shelfgraph"
"""


class ProjectConfig(BaseModel):
    """What shelfgraph.toml says. `path` is None when no file was found (all defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path | None = None
    columns: ColumnMapping = Field(default_factory=ColumnMapping)
    settings: dict[str, Any] = Field(default_factory=dict, description="DistillSettings fields, validated")

    def mapping(self, columns_option: str | None = None) -> ColumnMapping:
        """The file's [columns], with `--columns id=...,title=...` applied on top field by field."""
        if columns_option is None:
            return self.columns
        return self.columns.model_copy(update=parse_columns_option(columns_option))

    def distill_settings(self, **overrides: object) -> DistillSettings:
        """DistillSettings from (file < environment < `overrides`); None overrides are ignored."""
        given: dict[str, Any] = {key: value for key, value in overrides.items() if value is not None}
        try:
            from_env = DistillSettings(**given)
            explicit = from_env.model_fields_set  # set by the environment or by `given`
            fields = {key: value for key, value in self.settings.items() if key not in explicit}
            fields.update({key: getattr(from_env, key) for key in explicit})
            return DistillSettings(**fields)
        except ValidationError as exc:
            raise ConfigError(_short(exc, "settings")) from None

    @property
    def data_dir(self) -> Path | None:
        value = self.settings.get("data_dir")
        return None if value is None else Path(value)


def parse_columns_option(text: str) -> dict[str, str]:
    """`id=sku,title=name` -> {"id": "sku", "title": "name"}; unknown fields are a ConfigError."""
    pairs: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        field, sep, column = part.partition("=")
        field = field.strip()
        if not sep or not column.strip():
            raise ConfigError(f"--columns: {part.strip()!r} is not FIELD=COLUMN (e.g. --columns id=sku,title=name)")
        if field not in _MAPPING_FIELDS:
            raise ConfigError(f"--columns: unknown field {field!r}; fields: {', '.join(_MAPPING_FIELDS)}")
        # a separator may legitimately be " > ": keep its spaces; column names are taken as written
        pairs[field] = column if field == "category_separator" else column.strip()
    return pairs


def find_config(explicit: Path | None, cwd: Path | None = None) -> Path | None:
    """The --config file (must exist), else ./shelfgraph.toml when present, else None."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} not found")
        return explicit
    candidate = (cwd or Path.cwd()) / CONFIG_NAME
    return candidate if candidate.is_file() else None


def load_config(path: Path | None) -> ProjectConfig:
    """Parse and validate a project file; None gives the defaults. Errors name the file and the key."""
    if path is None:
        return ProjectConfig()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - {"columns", "settings"})
    if unknown:
        raise ConfigError(f"{path}: unknown sections {unknown}; known: [columns], [settings]")
    settings = dict(raw.get("settings") or {})
    unknown_settings = sorted(set(settings) - set(DistillSettings.model_fields))
    if unknown_settings:
        raise ConfigError(
            f"{path}: unknown [settings] keys {unknown_settings}; see distill/settings.py for the field names"
        )
    for key in _PATH_SETTINGS & set(settings):
        if isinstance(settings[key], str) and not Path(settings[key]).is_absolute():
            settings[key] = str(path.parent / settings[key])
    try:
        columns = ColumnMapping.model_validate(raw.get("columns") or {})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_short(exc, 'columns')}") from None
    try:
        DistillSettings.model_validate(settings)  # fail here, naming the file, not later mid-command
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_short(exc, 'settings')}") from None
    return ProjectConfig(path=path, columns=columns, settings=settings)


def _short(exc: ValidationError, section: str) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{section}.{where}: {error['msg']}" if where else f"{section}: {error['msg']}")
    return "; ".join(parts)
