"""The one base of every config model, the core's and every adapter's."""

from __future__ import annotations

__all__ = ["ConfigModel"]

from pydantic import BaseModel, ConfigDict


class ConfigModel(BaseModel):
    """Strict (an unknown field is an error, with the closest name), immutable once loaded, and
    filled by field name or by its YAML alias (``from``, ``schema``, ``as``). Defaults are
    validated too, so a default written as text (``"30s"``) is typed like a value from YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, validate_default=True)
