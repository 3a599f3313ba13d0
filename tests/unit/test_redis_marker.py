"""Where the redis outbound keeps an appended event's id: in a Redis Cluster, in its stream's slot."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from adapters.redis.outbound import marker_key
from bus.adapter_api import PermanentError

# Names made mostly of the characters that decide a key's slot, so that every kind of hash tag
# (none, empty, one, several, unclosed, a brace alone) comes up often.
names = st.text(alphabet=st.sampled_from("{}ab.:-é"), min_size=1, max_size=12)


@given(stream=names, event_id=st.text(alphabet=st.sampled_from("{}x1-"), min_size=1, max_size=8))
def test_in_a_cluster_the_marker_shares_its_streams_slot_or_the_event_is_refused_saying_why(stream: str, event_id: str) -> None:
    try:
        marker = marker_key(stream, event_id, cluster=True)
    except PermanentError as exc:
        assert "}" in stream and "dedupe_window: 0s" in str(exc)
        return
    assert key_slot(marker.encode()) == key_slot(stream.encode())
    assert marker.endswith(f":bus-ids:{event_id}")


@pytest.mark.parametrize(
    ("stream", "marker"),
    [
        ("orders", "{orders}:bus-ids:e1"),  # no tag of its own: its whole name becomes the marker's
        ("{eu}.orders", "{eu}.orders:bus-ids:e1"),  # its own tag, which the marker starts with
        ("or{ders", "{or{ders}:bus-ids:e1"),  # a brace never closed: the whole name is hashed
    ],
)
def test_the_marker_in_a_cluster(stream: str, marker: str) -> None:
    assert marker_key(stream, "e1", cluster=True) == marker


def test_outside_a_cluster_the_marker_is_named_as_before() -> None:
    """Markers written by a hub before stay found: the same name for the same stream and id."""
    assert marker_key("a}b", "e1", cluster=False) == "a}b:bus-ids:e1"
    assert marker_key("orders", "{e1}", cluster=False) == "orders:bus-ids:{e1}"
