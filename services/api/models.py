"""Response models of the api (documented in /openapi.json)."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from schemas.countries import country_name
from schemas.records import PairStats
from services.api.view import CountryDetail, Ranked, Totals

COUNTING_NOTE = (
    "Sums over country pairs: an event with k countries (host and delegations) counts in "
    "k(k-1)/2 pairs, so it counts k(k-1)/2 times in active_events here."
)


class CountryRef(BaseModel):
    code: str = Field(description="canonical code: ISO 3166-1 alpha-2, or ISO 3166-3 for former countries")
    name: str

    @classmethod
    def of(cls, code: str) -> CountryRef:
        try:
            name = country_name(code)
        except (ValueError, KeyError):  # a code this api's pycountry does not know: show the code
            name = code
        return cls(code=code, name=name)


class Trend(BaseModel):
    """Events (summed over pairs) in a month window, and against the window just before it."""

    model_config = ConfigDict(populate_by_name=True)

    month_from: str = Field(alias="from")
    month_to: str = Field(alias="to")
    events: int
    previous_from: str | None = Field(default=None, description="with compare=previous")
    previous_to: str | None = None
    previous_events: int | None = None
    change: int | None = Field(default=None, description="events - previous_events")


class Summary(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "pairs": 2,
                    "countries": 3,
                    "active_events": 5,
                    "participants": 420,
                    "cancelled": 1,
                    "by_kind": {"athletic": 3, "cultural": 2},
                    "by_status": {"confirmed": 4, "cancelled": 1},
                    "by_month": {"2025-05": 2, "2025-06": 3},
                    "updated_at": "2025-06-01T12:00:00Z",
                    "sequence": 1764100000000042,
                    "ready": True,
                    "note": COUNTING_NOTE,
                }
            ]
        }
    )

    pairs: int = Field(description="country pairs with data")
    countries: int = Field(description="countries appearing in at least one pair")
    active_events: int = Field(description="sum over pairs of active (not cancelled) events")
    participants: int = Field(description="sum over pairs of participants")
    cancelled: int
    by_kind: dict[str, int]
    by_status: dict[str, int]
    by_month: dict[str, int] = Field(description="YYYY-MM -> events, sorted by month")
    updated_at: datetime | None = Field(description="updated_at of the newest snapshot in the view")
    sequence: int = Field(description="id of the latest update on /v1/stream")
    ready: bool = Field(description="the view has caught up with the pair-stats topic")
    trend: Trend | None = Field(default=None, description="with from and to (and compare=previous)")
    note: str = COUNTING_NOTE


class PairItem(BaseModel):
    pair: str
    countries: list[CountryRef]
    value: int = Field(description="what the ranking is by (see /v1/pairs)")
    active_events: int
    participants: int
    cancelled: int
    by_kind: dict[str, int]
    first_date: date | None
    last_date: date | None
    checksum: str = Field(
        description="sum mod 2^64 of the active events' (partner, event) hashes, 16 hex digits"
    )
    version: int
    updated_at: datetime
    previous_events: int | None = Field(
        default=None, description="with compare=previous: events in the window just before from..to"
    )
    change: int | None = Field(default=None, description="with compare=previous: value - previous_events")

    @classmethod
    def of(cls, ranked: Ranked) -> PairItem:
        s = ranked.stats
        return cls(
            pair=s.pair,
            countries=[CountryRef.of(c) for c in s.countries],
            value=ranked.value,
            active_events=s.active_events,
            participants=s.participants,
            cancelled=s.cancelled,
            by_kind=s.by_kind,
            first_date=s.first_date,
            last_date=s.last_date,
            checksum=s.checksum,
            version=s.version,
            updated_at=s.updated_at,
            previous_events=ranked.previous,
            change=ranked.change,
        )


class PairPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "total": 1,
                    "limit": 20,
                    "offset": 0,
                    "sort": "events",
                    "items": [
                        {
                            "pair": "CN-US",
                            "countries": [
                                {"code": "CN", "name": "China"},
                                {"code": "US", "name": "United States"},
                            ],
                            "value": 3,
                            "active_events": 3,
                            "participants": 120,
                            "cancelled": 0,
                            "by_kind": {"athletic": 2, "cultural": 1},
                            "first_date": "2025-04-02",
                            "last_date": "2025-06-20",
                            "checksum": "3f2a9c0d11e4b7a5",
                            "version": 7,
                            "updated_at": "2025-06-01T12:00:00Z",
                        }
                    ],
                }
            ]
        }
    )

    total: int = Field(description="pairs matching the filters")
    limit: int
    offset: int
    sort: str
    items: list[PairItem]


class PairDetail(PairStats):
    """A pair's full aggregate (the PairStats snapshot) with the countries' names."""

    model_config = ConfigDict(
        title="PairDetail",
        json_schema_extra={
            "examples": [
                {
                    "pair": "CN-US",
                    "countries": ["CN", "US"],
                    "names": {"CN": "China", "US": "United States"},
                    "version": 7,
                    "active_events": 3,
                    "participants": 120,
                    "by_kind": {"athletic": 2, "cultural": 1},
                    "by_status": {"confirmed": 3},
                    "by_direction": {"CN>US": 2, "US>CN": 1},
                    "by_month": {"2025-04": 1, "2025-06": 2},
                    "cancelled": 0,
                    "first_date": "2025-04-02",
                    "last_date": "2025-06-20",
                    "checksum": "0f3a5b7c9d1e2f40",
                    "updated_at": "2025-06-01T12:00:00Z",
                }
            ]
        },
    )

    names: dict[str, str] = Field(description="code -> country name")

    @classmethod
    def of(cls, stats: PairStats) -> PairDetail:
        data = stats.model_dump()
        data["names"] = {c: CountryRef.of(c).name for c in stats.countries}
        return cls.model_validate(data)


class TotalsOut(BaseModel):
    pairs: int
    active_events: int
    participants: int
    cancelled: int
    by_kind: dict[str, int]
    by_status: dict[str, int]
    by_month: dict[str, int]

    @classmethod
    def of(cls, totals: Totals) -> TotalsOut:
        return cls(
            pairs=totals.pairs,
            active_events=totals.active_events,
            participants=totals.participants,
            cancelled=totals.cancelled,
            by_kind=totals.by_kind,
            by_status=totals.by_status,
            by_month=totals.by_month,
        )


class Partner(BaseModel):
    country: CountryRef
    pair: str
    active_events: int
    participants: int
    by_kind: dict[str, int]
    last_date: date | None


class CountryOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "country": {"code": "FR", "name": "France"},
                    "totals": {
                        "pairs": 1,
                        "active_events": 2,
                        "participants": 80,
                        "cancelled": 0,
                        "by_kind": {"cultural": 2},
                        "by_status": {"confirmed": 2},
                        "by_month": {"2025-05": 2},
                    },
                    "partners": [
                        {
                            "country": {"code": "DE", "name": "Germany"},
                            "pair": "DE-FR",
                            "active_events": 2,
                            "participants": 80,
                            "by_kind": {"cultural": 2},
                            "last_date": "2025-05-30",
                        }
                    ],
                }
            ]
        }
    )

    country: CountryRef
    totals: TotalsOut = Field(description="sums over the country's pairs (an event counts once per partner)")
    partners: list[Partner] = Field(description="ranked by active events, then code")

    @classmethod
    def of(cls, detail: CountryDetail) -> CountryOut:
        partners = []
        for r in detail.partners:
            s = r.stats
            other = s.countries[1] if s.countries[0] == detail.code else s.countries[0]
            partners.append(
                Partner(
                    country=CountryRef.of(other),
                    pair=s.pair,
                    active_events=s.active_events,
                    participants=s.participants,
                    by_kind=s.by_kind,
                    last_date=s.last_date,
                )
            )
        return cls(country=CountryRef.of(detail.code), totals=TotalsOut.of(detail.totals), partners=partners)


class CountryActivity(BaseModel):
    country: CountryRef
    value: int = Field(description="sum over the country's matching pairs of their value (as in /v1/pairs)")
    pairs: int = Field(description="the country's pairs matching the filters")


class ActivityPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "total": 2,
                    "items": [
                        {"country": {"code": "FR", "name": "France"}, "value": 2, "pairs": 1},
                        {"country": {"code": "DE", "name": "Germany"}, "value": 2, "pairs": 1},
                    ],
                }
            ]
        }
    )

    total: int = Field(description="countries with at least one matching pair (all are listed)")
    items: list[CountryActivity] = Field(description="by value, highest first, then code")


class Health(BaseModel):
    status: str
    pairs: int | None = None


class Ready(Health):
    index_lag: int | None = Field(
        default=None, description="records the event index is behind the events topic"
    )
