"""Response models of the event index routes (documented in /openapi.json)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import AcceptedEvent

CSV_COLUMNS = (
    "key",
    "partner_id",
    "event_id",
    "revision",
    "kind",
    "status",
    "format",
    "title",
    "host_country",
    "delegations",
    "pairs",
    "starts_on",
    "ends_on",
    "city",
    "organizer",
    "url",
    "description",
    "tags",
    "received_at",
)


class EventItem(AcceptedEvent):
    """An event's accepted state: the event as accepted, its record key and its pair keys."""

    model_config = ConfigDict(title="EventItem")

    key: str = Field(description="partner_id/event_id, the Kafka record key")
    pairs: list[str] = Field(description="the pair keys it counts in (AA-BB, sorted)")


class EventPage(BaseModel):
    items: list[EventItem]
    total: int = Field(description="events matching the filters (all pages)")
    next_cursor: str | None = Field(description="pass as cursor= for the next page; null on the last")


class EventChange(BaseModel):
    """The data of an ``event: event`` frame of /v1/stream/events."""

    change: Literal["new", "corrected", "cancelled"]
    item: EventItem


class Figures(BaseModel):
    active_events: int
    checksum: str = Field(pattern=r"^[0-9a-f]{16}$")


class PairDifference(BaseModel):
    pair: str
    aggregate: Figures = Field(description="from the aggregator's snapshot (pair-stats topic)")
    index: Figures = Field(description="recomputed from the event index's rows")


class Reconciliation(BaseModel):
    pairs: int = Field(description="pairs with an active event on either side")
    consistent: int
    differing: list[PairDifference]
    caught_up: bool = Field(description="the view and the index had both caught up with their topics")
