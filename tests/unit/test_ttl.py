"""The TTL map behind route dedup and the webhook's repeated deliveries."""

from __future__ import annotations

from bus.ttl import TtlMap


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_remembered_for_its_ttl_and_forgotten_after() -> None:
    clock = Clock()
    seen: TtlMap[str] = TtlMap(10, clock=clock)
    seen.put("delivery-1", "evt_1")
    assert seen.add("order-1") and not seen.add("order-1")
    clock.now = 9.9
    assert seen.get("delivery-1") == "evt_1" and not seen.add("order-1")
    clock.now = 10.0
    assert seen.get("delivery-1") is None and seen.add("order-1")  # the window is measured from the first sighting
    assert len(seen) == 1


def test_memory_is_bounded_the_oldest_going_first() -> None:
    clock = Clock()
    seen: TtlMap[int] = TtlMap(3600, max_size=3, clock=clock)
    for i in range(5):
        clock.now = i
        seen.put(f"k{i}", i)
    assert len(seen) <= 3
    assert seen.get("k0") is None and seen.get("k1") is None and seen.get("k4") == 4
