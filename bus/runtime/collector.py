"""Python's garbage collector, set for a long-running hub once it has started.

With the defaults, the collector cost the router 16 to 18 CPU-us per event (about 16% of its
CPU), mostly full collections of 37 to 63 ms that walked every object made at start-up (modules,
the config, schemas, compiled routes), none of which ever becomes garbage. After start-up:

- ``gc.freeze()`` moves everything alive into the permanent generation, which no collection
  walks again;
- the first generation's threshold goes from 700 to 20,000 allocations: an event's objects die
  by reference counting long before that, so young collections find little, and running them
  30 times less often costs nothing in memory that bench/memory.py can see.

``BUS_GC=default`` keeps Python's own settings (for comparing, in bench/latency.py).
"""

from __future__ import annotations

__all__ = ["GEN0_THRESHOLD", "tune_after_start"]

import gc
import logging
import os

log = logging.getLogger("bus.runtime.collector")

GEN0_THRESHOLD = 20_000


def tune_after_start() -> bool:
    """Freeze what start-up made and raise the young threshold; False when BUS_GC=default."""
    mode = os.environ.get("BUS_GC", "tuned")
    if mode == "default":
        log.info("garbage collector left at Python's defaults (BUS_GC=default)")
        return False
    if mode != "tuned":
        log.warning("BUS_GC=%r is neither 'tuned' nor 'default': the collector is tuned", mode)
    gc.collect()  # start-up's own garbage goes first, so it is not frozen for ever
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    log.info("garbage collector: %d start-up objects frozen, young threshold %d", gc.get_freeze_count(), GEN0_THRESHOLD)
    return True
