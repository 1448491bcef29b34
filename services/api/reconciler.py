"""The service that reconciles the live view (aggregates) with the event index, on request and
periodically for the ``handshake_api_reconcile_differing_pairs`` gauge."""

from __future__ import annotations

import asyncio
import logging
import time

from services.api.index.reconcile import Difference, Figures, Report, compare, settled
from services.api.index.service import EventIndex, IndexUnavailable
from services.api.index.store import pair_figures
from services.api.live import Live

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, live: Live, index: EventIndex) -> None:
        self.live = live
        self.index = index
        self.last: Report | None = None
        self.last_caught_up = False
        self.settled: list[Difference] = []
        self.runs = 0
        self.last_run_unixtime = 0.0

    async def run(self) -> tuple[Report, bool]:
        """Compare now; returns the report and whether both readers had caught up."""
        caught_up = self.live.ready and self.index.ready and self.index.lag == 0
        # the view changes on the loop: copy its figures here, then read the index off the loop
        aggregate: dict[str, Figures] = {
            s.pair: (s.active_events, int(s.checksum, 16)) for s in self.live.view
        }
        index = await self.index.read(lambda conn: dict((p, (n, c)) for p, n, c in pair_figures(conn)))
        report = compare(aggregate, index)
        self.settled = settled(self.last, report) if caught_up and self.last_caught_up else []
        self.last, self.last_caught_up = report, caught_up
        self.runs += 1
        self.last_run_unixtime = time.time()
        if self.settled:
            log.warning(
                "aggregates and event index disagree",
                extra={"pairs": [d.pair for d in self.settled[:20]], "count": len(self.settled)},
            )
        return report, caught_up

    async def every(self, seconds: float) -> None:
        """Run forever (the app's lifespan cancels it)."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.run()
            except IndexUnavailable:
                continue
            except Exception:
                log.exception("reconciliation failed")
