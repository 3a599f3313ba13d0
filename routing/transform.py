"""Transforms: reshape an event's fields for its subscribers, compiled once from ``transform:``."""

from __future__ import annotations

__all__ = ["Transform"]

from collections.abc import Mapping
from typing import Any

from bus.config.routes import TransformConfig
from bus.expr import compile_expression, compile_template


class Transform:
    """Order of application: copy (with rename and drop) or map; then templates; then defaults."""

    def __init__(self, config: TransformConfig, *, default_schema: str) -> None:
        self.schema = config.schema_ or default_schema
        self._map = [(name, compile_expression(text)) for name, text in (config.map or {}).items()] if config.map is not None else None
        self._rename = dict(config.rename)
        self._drop = frozenset(config.drop)
        self._templates = [(name, compile_template(text)) for name, text in config.templates.items()]
        self._defaults = dict(config.defaults)
        self._key = compile_expression(config.key) if config.key else None

    def apply(self, scope: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
        """The output fields. ``scope`` is the event's fields (plus a split element, if any)."""
        if self._map is not None:
            out = {name: expr(scope, meta) for name, expr in self._map}
        else:
            out = {self._rename.get(k, k): v for k, v in scope.items() if k not in self._drop}
        for name, template in self._templates:
            out[name] = template(scope, meta)
        for name, value in self._defaults.items():
            if out.get(name) is None:
                out[name] = value
        return out

    def key(self, scope: Mapping[str, Any], meta: Mapping[str, Any]) -> str | None:
        """The output's Kafka key, or None to keep the incoming one."""
        if self._key is None:
            return None
        value = self._key(scope, meta)
        return None if value is None else str(value)
