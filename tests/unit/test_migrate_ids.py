"""A migration's events get ids that are the same in every run (bus/app/migrate/flow.py): the
mapped ``emit.id`` where it gives one, else one made from the row's key; never a random one, which
would make a resumed or repeated run's events new ones downstream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bus.adapter_api import AdapterRegistry
from bus.app.migrate.flow import RowFlow
from bus.config.loader import load_config
from schemas.catalog import SchemaCatalog


def flow(tmp_path: Path, emit_id: str | None) -> RowFlow:
    emit: dict[str, Any] = {
        "schema": "Payment",
        "key": "ref",
        "map": {"payment_id": "ref", "amount": "amount_cents", "currency": "currency", "customer_id": "null"},
    }
    if emit_id is not None:
        emit["id"] = emit_id
    document = {
        "kafka": {"bootstrap": "127.0.0.1:1"},
        "routes": [{"name": "all", "from": "Payment", "to": ["crm"]}],
        "outbound": [{"name": "crm", "type": "http", "url": "http://127.0.0.1:1/crm"}],
        "migrations": [{"name": "legacy", "source": {"sql": {"dsn": "postgresql://u@127.0.0.1:1/x", "table": "t"}}, "emit": emit}],
    }
    path = tmp_path / "bus.yaml"
    path.write_text(yaml.safe_dump(document))
    registry = AdapterRegistry.from_entry_points()
    catalog = SchemaCatalog.load()
    loaded = load_config(path, registry, known_schemas=lambda _: catalog.parsed())
    return RowFlow(loaded, catalog, loaded.hub.migrations[0])


def ids(flow: RowFlow, row: dict[str, Any]) -> list[str]:
    return [event.id for _, _, event in flow.route(row, "row 1").deliveries]


def row(ref: str, legacy_id: str | None = None) -> dict[str, Any]:
    return {"ref": ref, "amount_cents": 100, "currency": "eur", "legacy_id": legacy_id}


def test_without_emit_id_the_id_comes_from_the_key_and_is_the_same_every_time(tmp_path: Path) -> None:
    one, again = flow(tmp_path, None), flow(tmp_path, None)
    [first] = ids(one, row("A-1"))
    assert first.startswith("migrate-legacy-") and ids(again, row("A-1")) == [first]
    assert ids(one, row("A-2")) != [first]


def test_emit_id_is_used_and_a_row_without_one_falls_back_to_the_key(tmp_path: Path) -> None:
    mapped = flow(tmp_path, "legacy_id")
    assert ids(mapped, row("A-1", "L-77")) == ["L-77"]
    [fallback] = ids(mapped, row("A-1", None))  # emit.id gives nothing for this row
    assert fallback == ids(flow(tmp_path, None), row("A-1"))[0]
