"""The canonical form a migration compares values in, the typed form its journal keeps them in, and its progress."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest

from bus.migrate.canonical import canonical, differing_fields, digest, from_typed_json, to_typed_json


@pytest.mark.parametrize(
    ("meant", "held"),
    [
        (12.5, Decimal("12.50")),  # a float mapped, a NUMERIC(12,2) read back
        (5, Decimal("5.00")),
        (0, Decimal("-0.0")),
        (True, 1),  # MariaDB has no boolean
        (datetime(2024, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=2))), datetime(2024, 3, 1, 8, 0)),  # DATETIME drops the zone
        (datetime(2024, 3, 1, 8, 0, tzinfo=UTC), datetime(2024, 3, 1, 8, 0, tzinfo=UTC)),
        (b"\x00\xff", memoryview(b"\x00\xff")),
        ({"a": [1, 2.0]}, {"a": [Decimal(1), 2]}),
    ],
)
def test_the_same_value_as_a_target_returns_it_is_equal(meant: object, held: object) -> None:
    assert canonical(meant) == canonical(held)
    assert digest({"v": meant}) == digest({"v": held})


@pytest.mark.parametrize(
    ("meant", "held"),
    [
        ("Müller & Søn", "M?ller & S?n"),  # an encoding change
        ("Café Zürich", "Café Zür"),  # truncated
        ("0012", "12"),  # text is compared as text, never as a number
        (Decimal("12.50"), Decimal("12.51")),
        (None, ""),
        (datetime(2024, 3, 1, 10, 0, tzinfo=UTC), datetime(2024, 3, 1, 10, 0, 1, tzinfo=UTC)),
    ],
)
def test_a_different_value_is_a_difference(meant: object, held: object) -> None:
    assert canonical(meant) != canonical(held)
    assert differing_fields({"f": meant}, {"f": held, "extra": 1}) == {"f": (canonical(meant), canonical(held))}


def test_fields_beyond_those_meant_and_missing_records() -> None:
    assert differing_fields({"a": 1}, {"a": Decimal(1), "created_at": "now"}) == {}  # what a service adds is not compared
    assert differing_fields({"a": 1}, None) == {"(row)": ("present", "absent")}
    assert differing_fields(None, {"a": 1}) == {"(row)": ("absent", "present")}
    assert differing_fields(None, None) == {}


def test_the_typed_form_keeps_types_for_a_restore() -> None:
    value = {
        "amount": Decimal("99.95"),
        "paid": datetime(2020, 1, 1, tzinfo=UTC),
        "day": date(2020, 1, 2),
        "at": time(10, 30),
        "blob": b"\x00\x01",
        "name": "Ærø",
        "n": 3,
        "list": [Decimal("1.5"), None],
        "looks_tagged": {"$decimal": "1", "other": 2},  # two keys: not a tag, kept as it is
    }
    back = from_typed_json(to_typed_json(value))
    assert back == value
    assert type(back["amount"]) is Decimal and type(back["paid"]) is datetime and type(back["blob"]) is bytes


def test_progress_is_a_bar_on_a_terminal_and_counted_in_metrics() -> None:
    import io

    from prometheus_client import REGISTRY

    from bus.migrate.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    progress = Progress("bar-test", 1000, stream=screen)
    before = REGISTRY.get_sample_value("bus_migration_rows_total", {"migration": "bar-test", "outcome": "written"}) or 0
    progress.add("read", 250)
    progress.add("written", 240)
    progress.add("refused", 10)
    progress.show(final=True)
    line = screen.getvalue()
    assert line.startswith("\r\033[K[######") and " 25% " in line
    assert "250/1,000 rows read, 240 written, 0 unchanged, 10 refused, 0 failed" in line and "ETA " in line
    assert REGISTRY.get_sample_value("bus_migration_rows_total", {"migration": "bar-test", "outcome": "written"}) == before + 240
    assert REGISTRY.get_sample_value("bus_migration_rows_expected", {"migration": "bar-test"}) == 1000


def test_a_time_kept_in_another_layout_is_the_same_time_and_another_time_is_a_difference() -> None:
    meant = {"paid": datetime(2024, 3, 1, 8, 0, 0, 500000, tzinfo=UTC), "ref": "F-1", "order": {"placed": datetime(2024, 3, 1, tzinfo=UTC)}}
    same = [
        "2024-03-01T08:00:00.500Z",
        "2024-03-01T08:00:00.500+0000",
        "2024-03-01T09:00:00.500+01:00",
        "2024-03-01 08:00:00.5+00:00",
        1709280000500,  # epoch milliseconds
        1709280000.5,  # epoch seconds
    ]
    for kept in same:
        assert differing_fields(meant, {"paid": kept, "ref": "F-1", "order": {"placed": "2024-03-01T00:00:00Z"}}) == {}, kept
    for kept in ["2024-03-01T08:00:00Z", 1709280000, "tomorrow", True, None]:  # the milliseconds lost, no time, a flag, nothing
        assert set(differing_fields(meant, {"paid": kept, "ref": "F-1", "order": {"placed": "2024-03-01T00:00:00Z"}})) == {"paid"}, kept
    assert set(differing_fields(meant, {"paid": "2024-03-01T08:00:00.500Z", "ref": "F-1", "order": {"placed": "2024-03-02"}})) == {"order"}
    assert set(differing_fields(meant, {"paid": "2024-03-01T08:00:00.500Z", "ref": "2024-03-01", "order": {"placed": 0}})) == {
        "ref",  # text where text was meant is compared as text
        "order",
    }


def test_a_number_a_service_keeps_as_text_is_the_same_number() -> None:
    meant = {"price": Decimal("19.9"), "quantity": 3, "sku": "A-1", "flag": 1}
    assert differing_fields(meant, {"price": "19.90", "quantity": "3", "sku": "A-1", "flag": 1}) == {}  # Shopify's prices
    assert set(differing_fields(meant, {"price": "19.91", "quantity": "3.0001", "sku": "A-1", "flag": "yes"})) == {
        "price",
        "quantity",
        "flag",
    }
    assert set(differing_fields(meant, {"price": "NaN", "quantity": 3, "sku": "A-1", "flag": 1})) == {"price"}
    assert set(differing_fields({"sku": "007"}, {"sku": 7})) == {"sku"}  # text meant is text


def test_times_and_numbers_in_a_records_list_are_aligned_too_and_fields_a_service_adds_to_a_line_are_no_differences() -> None:
    meant = {"lines": [{"sku": "A-1", "price": Decimal("19.9"), "shipped": datetime(2024, 3, 1, 8, tzinfo=UTC)}, {"sku": "B-2"}]}
    kept = {"lines": [{"sku": "A-1", "price": "19.90", "shipped": "2024-03-01T08:00:00.000+0000"}, {"sku": "B-2", "added": 1}]}
    assert differing_fields(meant, kept) == {}
    moved = {"lines": [{"sku": "A-1", "price": "19.90", "shipped": "2024-03-01T09:00:00Z"}, {"sku": "B-2"}]}
    assert set(differing_fields(meant, moved)) == {"lines"}
    assert set(differing_fields(meant, {"lines": [kept["lines"][0]]})) == {"lines"}  # a line missing
