"""A valid partner event that the ingest tests share (copy it before changing fields: ``{**EVENT, ...}``)."""

from __future__ import annotations

from typing import Any

EVENT: dict[str, Any] = {
    "event_id": "e-1",
    "kind": "cultural",
    "title": "Orchestra visit",
    "host_country": "FR",
    "delegations": [{"country": "DE", "participants": 4}],
    "starts_on": "2025-03-14",
}
