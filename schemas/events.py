"""The exchange event: what a partner sends (``ExchangeEvent``) and what goes on Kafka
(``AcceptedEvent``), with partner-friendly validation errors."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from schemas.countries import CountryCode

SERVER_FIELDS = frozenset({"partner_id", "received_at"})
PARTNER_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
EVENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
MAX_DELEGATIONS = 64
MAX_PARTICIPANTS = 100_000
MAX_REVISION = 2**53 - 1  # JSON numbers stay exact in every language (and fit 64 bits)


class Kind(StrEnum):
    athletic = "athletic"
    cultural = "cultural"
    scientific = "scientific"
    educational = "educational"
    professional = "professional"
    humanitarian = "humanitarian"
    civic = "civic"


class Status(StrEnum):
    announced = "announced"
    confirmed = "confirmed"
    completed = "completed"
    cancelled = "cancelled"


class Format(StrEnum):
    in_person = "in_person"
    virtual = "virtual"
    hybrid = "hybrid"


# --- reusable field types -------------------------------------------------------------

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _validate_date(value: object) -> date:
    if isinstance(value, datetime):
        raise PydanticCustomError("date_type", "expected a date YYYY-MM-DD")
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _DATE_RE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError(
                "date_invalid", "'{value}' is not a valid calendar date", {"value": value}
            ) from None
    raise PydanticCustomError("date_type", "expected a date YYYY-MM-DD")


IsoDate = Annotated[
    date,
    BeforeValidator(_validate_date),
    WithJsonSchema({"type": "string", "format": "date", "description": "ISO 8601 date YYYY-MM-DD"}),
]


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def rfc3339(value: datetime) -> str:
    """``value`` in UTC as RFC 3339 with a ``Z`` (how every server-owned time is written)."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


UtcDatetime = Annotated[
    AwareDatetime,
    PlainSerializer(rfc3339, return_type=str, when_used="json"),
]


# what a URL may not contain: controls, DEL and every character str.isspace() calls a space
_NOT_IN_URL = "\\x00-\\x20\\x7f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
#: An absolute http(s) URL: the rule ingest enforces, also the JSON Schema ``pattern`` (the same
#: text works in Python's ``re`` and in ECMA-262 regular expressions).
_SCHEME = "^[Hh][Tt][Tt][Pp][Ss]?://"
URL_PATTERN = f"{_SCHEME}[^/?#{_NOT_IN_URL}]+[^{_NOT_IN_URL}]*$"
_URL = re.compile(URL_PATTERN)
_HTTP = re.compile(f"{_SCHEME}[^/?#]")  # which of the two errors to name


def _validate_url(value: object) -> object:
    if not isinstance(value, str):
        return value  # the str validator reports the type error
    if _URL.fullmatch(value):
        return value
    if not _HTTP.match(value):
        raise PydanticCustomError("url_scheme", "only absolute http:// or https:// URLs are accepted")
    raise PydanticCustomError("url_invalid", "URLs cannot contain whitespace or control characters")


StrictCount = Annotated[int, Field(strict=True, ge=0, le=MAX_PARTICIPANTS)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]


# --- models ---------------------------------------------------------------------------


class Delegation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    country: CountryCode
    participants: StrictCount | None = Field(
        default=None, description="number of people in the delegation, 0..100000, if known"
    )


_EXAMPLE: dict[str, Any] = {
    "event_id": "2025-spring-games:42",
    "revision": 1,
    "kind": "athletic",
    "title": "Youth table tennis friendship tournament",
    "host_country": "US",
    "delegations": [{"country": "CN", "participants": 24}, {"country": "FR"}],
    "starts_on": "2025-04-10",
    "ends_on": "2025-04-13",
    "status": "confirmed",
    "format": "in_person",
    "city": "Seattle",
    "organizer": "Seattle Sister Cities Association",
    "url": "https://example.org/events/42",
    "description": "Three days of matches and a shared dinner.",
    "tags": ["youth", "table-tennis"],
}


class ExchangeEvent(BaseModel):
    """One citizen-diplomacy exchange, as a partner sends it."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="ExchangeEvent",
        json_schema_extra={"examples": [_EXAMPLE]},
    )

    event_id: Annotated[str, StringConstraints(pattern=EVENT_ID_PATTERN)] = Field(
        description="the partner's own id; identity is (partner, event_id)"
    )
    revision: Annotated[int, Field(strict=True, ge=1, le=MAX_REVISION)] = Field(
        default=1, description="a correction carries a higher revision"
    )
    kind: Kind
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    host_country: CountryCode = Field(
        description="where it takes place (organiser's country for virtual events)"
    )
    delegations: list[Delegation] = Field(
        min_length=1, max_length=MAX_DELEGATIONS, description="1-64 visiting countries"
    )
    starts_on: IsoDate
    ends_on: IsoDate = Field(
        default_factory=lambda data: data.get("starts_on"),
        description="defaults to starts_on; must not be before it",
    )
    status: Status = Status.announced
    format: Format = Format.in_person
    city: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)] | None = None
    organizer: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] | None
    ) = None
    url: (
        Annotated[
            str,
            StringConstraints(max_length=2000),
            BeforeValidator(_validate_url),
            WithJsonSchema({"type": "string", "maxLength": 2000, "pattern": URL_PATTERN}),
        ]
        | None
    ) = Field(
        default=None, description="an absolute http:// or https:// URL, without spaces or control characters"
    )
    description: Annotated[str, StringConstraints(max_length=5000)] | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=20)

    @field_validator("delegations")
    @classmethod
    def _check_delegations(cls, value: list[Delegation], info: ValidationInfo) -> list[Delegation]:
        host = info.data.get("host_country")
        seen: dict[str, int] = {}
        for index, delegation in enumerate(value):
            if delegation.country == host:
                raise PydanticCustomError(
                    "delegation_is_host",
                    "delegation '{country}' is the host country; list only visiting countries",
                    {"country": delegation.country, "index": index},
                )
            if delegation.country in seen:
                raise PydanticCustomError(
                    "delegation_duplicate",
                    "delegation '{country}' is listed twice (also at index {first})",
                    {"country": delegation.country, "index": index, "first": seen[delegation.country]},
                )
            seen[delegation.country] = index
        return value

    @field_validator("ends_on")
    @classmethod
    def _check_ends_on(cls, value: date, info: ValidationInfo) -> date:
        starts_on = info.data.get("starts_on")
        if isinstance(starts_on, date) and value < starts_on:
            raise PydanticCustomError(
                "date_order",
                "ends_on {ends_on} is before starts_on {starts_on}",
                {"ends_on": value.isoformat(), "starts_on": starts_on.isoformat()},
            )
        return value

    @property
    def countries(self) -> list[str]:
        """The host followed by the delegations' countries."""
        return [self.host_country, *(d.country for d in self.delegations)]


class AcceptedEvent(ExchangeEvent):
    """An event accepted by ingest, with the server-owned fields. This is what goes on Kafka."""

    model_config = ConfigDict(
        title="AcceptedEvent",
        json_schema_extra={
            "examples": [
                {**_EXAMPLE, "partner_id": "seattle-sister-cities", "received_at": "2025-03-01T09:30:00Z"}
            ]
        },
    )

    partner_id: Annotated[str, StringConstraints(pattern=PARTNER_ID_PATTERN)] = Field(
        description="the partner that sent the event (server-owned)"
    )
    received_at: UtcDatetime = Field(description="when ingest accepted it, UTC (server-owned)")

    @field_validator("received_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _to_utc(value)


# --- errors ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldError:
    pointer: str
    message: str
    code: str

    def as_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "message": self.message, "code": self.code}


class EventValidationError(Exception):
    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(e.message for e in errors) or "invalid event")


def _escape(part: str | int) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")


def _label(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_FRIENDLY: dict[str, str] = {
    "missing": "required field is missing",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "bool_type": "expected a boolean",
    "string_type": "expected a string",
    "list_type": "expected an array",
    "model_type": "expected a JSON object",
    "model_attributes_type": "expected a JSON object",
    "dataclass_type": "expected a JSON object",
    "date_type": "expected a date YYYY-MM-DD",
    "datetime_type": "expected an RFC 3339 date-time",
    "datetime_parsing": "expected an RFC 3339 date-time",
    "timezone_aware": "expected a date-time with a timezone (e.g. 2025-01-31T12:00:00Z)",
}


def _message(err: Any, loc: tuple[str | int, ...]) -> str:
    etype = err["type"]
    ctx = err.get("ctx") or {}
    if etype == "extra_forbidden":
        name = str(loc[-1]) if loc else "?"
        if len(loc) == 1 and name in SERVER_FIELDS:
            return f"unknown field '{name}' (server-owned fields cannot be sent)"
        where = _label(loc[:-1])
        return f"unknown field '{name}'" + (f" in {where}" if where else "")
    if etype == "string_pattern_mismatch" and loc and loc[-1] == "event_id":
        text = "expected 1-128 characters of letters, digits and . _ : -"
    elif etype == "string_pattern_mismatch" and loc and loc[-1] == "partner_id":
        text = "expected a partner id: lowercase letters, digits and '-', at most 63 characters"
    elif etype == "string_too_long":
        text = f"at most {ctx.get('max_length')} characters allowed"
    elif etype == "string_too_short":
        text = "must not be empty"
    elif etype == "too_long":
        text = f"at most {ctx.get('max_length')} items allowed (got {ctx.get('actual_length')})"
    elif etype == "too_short":
        text = f"at least {ctx.get('min_length')} item(s) required"
    elif etype in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        text = err["msg"].replace("Input should be", "must be")
    elif etype == "enum":
        text = f"expected one of: {ctx.get('expected', '')}".replace("'", "")
    else:
        text = _FRIENDLY.get(etype) or err["msg"].removeprefix("Value error, ")
    label = _label(loc)
    return f"{label}: {text}" if label else text


def field_errors(exc: ValidationError) -> list[FieldError]:
    """Turn a pydantic ValidationError into JSON-pointer field errors with clear messages."""
    out: list[FieldError] = []
    for err in exc.errors(include_url=False):
        if err["type"] == "default_factory_not_called":
            continue  # a consequence of another error (ends_on defaults to starts_on)
        loc: tuple[str | int, ...] = tuple(err["loc"])
        ctx = err.get("ctx") or {}
        if err["type"] in ("delegation_is_host", "delegation_duplicate") and "index" in ctx:
            loc = (*loc, int(ctx["index"]), "country")
        if err["type"] == "date_order":
            loc = ("ends_on",)
        pointer = "".join("/" + _escape(p) for p in loc)
        out.append(FieldError(pointer=pointer, message=_message(err, loc), code=str(err["type"])))
    return out


def parse_event(data: object) -> ExchangeEvent:
    """Validate a partner's decoded JSON; raise EventValidationError with every problem."""
    if not isinstance(data, dict):
        raise EventValidationError([FieldError("", "the event must be a JSON object", "model_type")])
    try:
        return ExchangeEvent.model_validate(data)
    except ValidationError as exc:
        raise EventValidationError(field_errors(exc)) from None


def partner_fields(event: ExchangeEvent) -> dict[str, Any]:
    """The partner-supplied fields of an event as plain JSON values (no server fields)."""
    if type(event) is ExchangeEvent:  # nothing to leave out (and it dumps faster without include)
        return event.model_dump(mode="json")
    return event.model_dump(mode="json", include=_PARTNER_FIELDS)


#: Built once, not at every call (``model_fields`` is a property in pydantic 2.11). Never modified.
_PARTNER_FIELDS: set[str] = set(ExchangeEvent.model_fields)


def content_hash(event: ExchangeEvent) -> str:
    """sha256 hex of the canonical JSON of the partner-supplied fields (duplicate detection).

    Canonical: normalised values (codes, defaults filled in, whitespace stripped), delegations
    sorted by country, keys sorted, compact.
    """
    return fields_hash(partner_fields(event))


def fields_hash(fields: dict[str, Any]) -> str:
    """:func:`content_hash` of an event's :func:`partner_fields` (``fields`` is not modified)."""
    data = {**fields, "delegations": sorted(fields["delegations"], key=lambda d: d["country"])}
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()
