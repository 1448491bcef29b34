"""Process-wide tuning for long-running services: ingest and the aggregator use it (the api showed
no gain when measured, so it keeps the defaults). The aggregator's stage 1 ran 4,060 events/s
with CPython's defaults and 5,626 with ``GC_THRESHOLD``, same hour, 200,000 events; it now uses
``AGGREGATOR_GC_THRESHOLD``. The benchmark's peer and faust floor get the aggregator's tuning, so
the ratios compare like with like."""

from __future__ import annotations

import gc

# Allocations (net of frees) between two young-generation collections. CPython's default, 700,
# made ingest spend about a fifth of its time in the collector under load: each batch of
# 1,000 records allocates hundreds of thousands of objects, and every full collection walks
# the ever-growing in-memory views. The aggregator's batches (5,000 decoded events and their
# partials) did the same to faust's large heap. Garbage cycles are rare in these services;
# reference counting frees nearly everything.
GC_THRESHOLD = (50_000, 20, 100)


#: The aggregator's. With ``GC_THRESHOLD`` its stage 1 spent 10.5 % of its samples in the
#: collector between 400,000 and 430,000 events (py-spy --native), and its own time per event
#: grew with history, from ~95 us to ~165 us by 500,000 events; with these it stayed ~100 us
#: (same hour). Each batch keeps thousands of decoded events, states and partials alive while
#: it runs, so they survive young collections and middle-generation collections walk them.
AGGREGATOR_GC_THRESHOLD = (200_000, 50, 1_000)


def tune_gc(threshold: tuple[int, int, int] = GC_THRESHOLD) -> None:
    """Fewer collections, and none of them walks the objects that exist at start-up.

    Call once the service is built (modules, models, app): ``gc.freeze`` moves every object
    alive now to a generation the collector never scans.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*threshold)
