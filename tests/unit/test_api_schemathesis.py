"""Property-based contract test: every documented operation, generated inputs, no 5xx, conforming answers."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from services.api.app import create_app
from services.api.settings import ApiSettings
from services.api.testing import RecordMaker, make_stats
from tests.samples import EVENT

app = create_app(ApiSettings())
for a, b, n in [("CN", "US", 5), ("DE", "FR", 2), ("FR", "US", 3), ("DDDE", "SUHH", 1), ("BR", "JP", 4)]:
    app.state.live.apply(make_stats(a, b, events=n, by_kind={"athletic": n}, by_month={"2025-02": n}))
app.state.live.mark_ready()
make = RecordMaker()
app.state.index.apply(
    [
        make(EVENT, "p1"),
        make({**EVENT, "event_id": "e-2", "host_country": "US", "title": "Table tennis visit"}, "p2"),
        make({**EVENT, "revision": 2, "status": "cancelled"}, "p1"),
    ]
)

schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi(case: schemathesis.Case) -> None:
    """Every check schemathesis has, on every operation, the streams included (it reads their first
    events and checks each against the documented itemSchema); schemathesis.toml says which
    statuses answer the rules a JSON Schema cannot state."""
    case.call_and_validate()
