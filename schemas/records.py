"""The Kafka records of every topic: encoding and total (never-crashing) decoding."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Annotated

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from schemas.events import (
    PARTNER_ID_PATTERN,
    AcceptedEvent,
    Delegation,
    ExchangeEvent,
    UtcDatetime,
    field_errors,
    fields_hash,
    partner_fields,
    rfc3339,
)

CE_TYPE_EVENT = "org.handshake.exchange.v1"
CE_SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"

Headers = list[tuple[str, bytes]]


def _json(value: object) -> bytes:
    """``value`` as compact JSON, in bytes allocated to their length.

    ``orjson.dumps`` (3.12 and later) returns bytes whose buffer is never shrunk: a 400-byte event
    holds 8 KiB (ijl/orjson#483; home-assistant/core#181245 measured the same). Record values
    outlive the call (ingest keeps each accepted event's value in its view of the topic), so they
    are copied once to their size, which costs well under a microsecond.
    """
    return b"".join((orjson.dumps(value), b""))


class RecordError(Exception):
    """A record that cannot be read; ``reason`` is a short machine code for dead-lettering."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


# --- exchange events ------------------------------------------------------------------


def event_key(partner_id: str, event_id: str) -> str:
    return f"{partner_id}/{event_id}"


_last_time: list[tuple[datetime, str]] = [(datetime.min.replace(tzinfo=UTC), "")]


def _rfc3339(value: datetime) -> str:
    # a batch's records share one received_at object: formatted once (an identity check is
    # cheaper than an lru_cache, whose hashing cost more than it saved for single events)
    last, text = _last_time[0]
    if value is not last:
        text = rfc3339(value)
        _last_time[0] = (value, text)
    return text


def encode_event(event: AcceptedEvent) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) of an accepted event, CloudEvents 1.0 binary mode."""
    key = event_key(event.partner_id, event.event_id)
    value = _json(event.model_dump(mode="json"))
    return (
        key.encode(),
        value,
        _event_headers(key, event.revision, event.partner_id, _rfc3339(event.received_at)),
    )


def encode_accepted(
    event: ExchangeEvent, partner_id: str, received_at: datetime
) -> tuple[tuple[bytes, bytes, Headers], str]:
    """The record of ``event`` accepted from ``partner_id``, and the event's content hash.

    Exactly ``encode_event(AcceptedEvent(**event, partner_id=..., received_at=...))`` and
    ``content_hash(event)``, from one serialisation of the event (ingest's hot path).
    """
    fields = partner_fields(event)
    digest = fields_hash(fields)
    key = event_key(partner_id, event.event_id)
    time = _rfc3339(received_at)
    value = _json({**fields, "partner_id": partner_id, "received_at": time})
    return (key.encode(), value, _event_headers(key, event.revision, partner_id, time)), digest


_SPECVERSION = ("ce_specversion", CE_SPECVERSION.encode())
_TYPE = ("ce_type", CE_TYPE_EVENT.encode())
_CONTENT_TYPE = ("content-type", CONTENT_TYPE.encode())


def _event_headers(key: str, revision: int, partner_id: str, time: str) -> Headers:
    return [
        _SPECVERSION,
        ("ce_id", f"{key}/{revision}".encode()),
        ("ce_source", f"/partners/{partner_id}".encode()),
        _TYPE,
        ("ce_time", time.encode()),
        _CONTENT_TYPE,
    ]


def _header_map(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for item in headers or ():
        name, raw = item
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if isinstance(name, str) and name not in out:
            out[name] = raw if isinstance(raw, bytes) else b""
    return out


def _summary(exc: ValidationError) -> str:
    errors = field_errors(exc)
    text = "; ".join(e.message for e in errors[:5])
    return text + (f" (+{len(errors) - 5} more)" if len(errors) > 5 else "")


_EVENT_FIELDS = frozenset(AcceptedEvent.model_fields)
_DELEGATION_FIELDS = frozenset(Delegation.model_fields)


def _known_fields_only(data: object) -> object:
    """Forward compatibility: a v1 reader ignores fields added later (new optional fields)."""
    if not isinstance(data, dict):
        return data
    delegations = data.get("delegations")
    if data.keys() <= _EVENT_FIELDS and (
        not isinstance(delegations, list)
        or all(not isinstance(d, dict) or d.keys() <= _DELEGATION_FIELDS for d in delegations)
    ):
        return data  # nothing to leave out (every record this release writes)
    out = {k: v for k, v in data.items() if k in _EVENT_FIELDS}
    delegations = out.get("delegations")
    if isinstance(delegations, list):
        out["delegations"] = [
            {k: v for k, v in d.items() if k in _DELEGATION_FIELDS} if isinstance(d, dict) else d
            for d in delegations
        ]
    return out


def _decode_event(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None
) -> AcceptedEvent:
    h = _header_map(headers)
    for required in ("ce_type", "ce_specversion"):
        if required not in h:
            raise RecordError("missing_header", f"the record has no {required} header")
    ce_type = h["ce_type"].decode("utf-8", "replace")
    if ce_type != CE_TYPE_EVENT:
        raise RecordError("unknown_type", f"ce_type {ce_type!r} is not {CE_TYPE_EVENT!r}")
    spec = h["ce_specversion"].decode("utf-8", "replace")
    if spec != CE_SPECVERSION:
        raise RecordError("unknown_type", f"ce_specversion {spec!r} is not {CE_SPECVERSION!r}")
    if value is None:
        raise RecordError("invalid_json", "the record has no value (tombstone)")
    try:
        data = orjson.loads(value)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise RecordError("invalid_json", f"the value is not JSON: {exc}") from None
    try:
        event = AcceptedEvent.model_validate(_known_fields_only(data))
    except ValidationError as exc:
        raise RecordError("schema_invalid", _summary(exc)) from None
    expected = event_key(event.partner_id, event.event_id)
    if key is None:
        raise RecordError("key_mismatch", f"the record has no key (expected {expected!r})")
    try:
        key_text = bytes(key).decode("utf-8")
    except (UnicodeDecodeError, TypeError, ValueError):
        raise RecordError("key_mismatch", "the key is not UTF-8") from None
    if key_text != expected:
        raise RecordError("key_mismatch", f"key {key_text!r} does not match {expected!r}")
    return event


def decode_event(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None
) -> AcceptedEvent:
    """Read a record of handshake.exchange-events.v1; raises RecordError only, for any input."""
    try:
        return _decode_event(key, value, headers)
    except RecordError:
        raise
    except Exception as exc:  # defensive: a decoder must never crash its consumer
        raise RecordError("invalid_record", f"{type(exc).__name__}: {exc}") from None


# --- pair stats -----------------------------------------------------------------------

PairKey = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2,4}-[A-Z]{2,4}$")]


class PairStats(BaseModel):
    """Snapshot of one country pair on handshake.pair-stats.v1 (key = ``pair``)."""

    model_config = ConfigDict(extra="ignore", frozen=True, title="PairStats")

    pair: PairKey = Field(description="the two codes sorted, joined by '-', e.g. CN-US")
    countries: Annotated[
        tuple[str, str],
        WithJsonSchema({"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2}),
    ]
    version: int = Field(ge=0, description="increases by one at each change of the pair")
    active_events: int = Field(ge=0)
    participants: int = Field(ge=0)
    by_kind: dict[str, int] = Field(default_factory=dict)
    by_status: dict[str, int] = Field(default_factory=dict)
    by_direction: dict[str, int] = Field(
        default_factory=dict, description="'CN>US' (visitor>host) or 'third_country'"
    )
    by_month: dict[str, int] = Field(default_factory=dict, description="month of starts_on, YYYY-MM")
    cancelled: int = Field(default=0, ge=0)
    first_date: date | None = None
    last_date: date | None = None
    checksum: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")] = Field(
        description="sum mod 2^64 of blake2b-64(partner_id/event_id) over active events, 16 hex chars"
    )
    updated_at: UtcDatetime

    @model_validator(mode="after")
    def _normalise(self) -> PairStats:
        for name in ("by_kind", "by_status", "by_direction", "by_month"):
            counts: dict[str, int] = getattr(self, name)
            if any(v == 0 for v in counts.values()):
                object.__setattr__(self, name, {k: v for k, v in counts.items() if v != 0})
        if tuple(sorted(self.countries)) != self.countries or "-".join(self.countries) != self.pair:
            raise ValueError(f"countries {self.countries} do not match pair {self.pair!r}")
        return self


def checksum_hex(value: int) -> str:
    return f"{value % 2**64:016x}"


def encode_pair_stats(stats: PairStats) -> tuple[bytes, bytes]:
    return stats.pair.encode(), _json(stats.model_dump(mode="json"))


def decode_pair_stats(value: bytes | None) -> PairStats:
    if value is None:
        raise RecordError("invalid_json", "the record has no value (tombstone)")
    try:
        return PairStats.model_validate(orjson.loads(value))
    except orjson.JSONDecodeError as exc:
        raise RecordError("invalid_json", f"the value is not JSON: {exc}") from None
    except ValidationError as exc:
        raise RecordError("schema_invalid", _summary(exc)) from None
    except Exception as exc:
        raise RecordError("invalid_record", f"{type(exc).__name__}: {exc}") from None


# --- dead letters ---------------------------------------------------------------------


class DeadLetter(BaseModel):
    """A record that could not be processed, on handshake.dead-letter.v1 (key = original key)."""

    model_config = ConfigDict(extra="ignore", frozen=True, title="DeadLetter")

    source_topic: str
    source_partition: int = Field(ge=0)
    source_offset: int = Field(ge=0)
    original_key_b64: str | None = Field(default=None, description="the original key, base64")
    original_value_b64: str | None = Field(default=None, description="the original value, base64")
    original_headers: dict[str, str] = Field(
        default_factory=dict, description="header values as UTF-8 text, or 'base64:' + base64 when not UTF-8"
    )
    reason: str = Field(description="short machine code, e.g. invalid_json, schema_invalid, key_mismatch")
    error: str = Field(description="human-readable explanation")
    failed_at: UtcDatetime


def _b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode("ascii")


def _header_text(raw: bytes | None) -> str:
    if raw is None:
        return ""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode("ascii")


def encode_dead_letter(
    *,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None,
    reason: str,
    error: str,
    failed_at: datetime | None = None,
) -> tuple[bytes | None, bytes]:
    """(key, value) of the dead letter for a failed record; the key is the original key."""
    items = headers.items() if isinstance(headers, Mapping) else (headers or ())
    letter = DeadLetter(
        source_topic=source_topic,
        source_partition=source_partition,
        source_offset=source_offset,
        original_key_b64=_b64(key),
        original_value_b64=_b64(value),
        original_headers={name: _header_text(raw) for name, raw in items},
        reason=reason,
        error=error[:10_000],
        failed_at=failed_at or datetime.now(UTC),
    )
    return key, _json(letter.model_dump(mode="json"))


def decode_dead_letter(value: bytes) -> DeadLetter:
    try:
        return DeadLetter.model_validate_json(value)
    except ValidationError as exc:
        raise RecordError("schema_invalid", str(exc)) from None


# --- partners -------------------------------------------------------------------------


class PartnerRecord(BaseModel):
    """A partner on handshake.partners.v1 (key = partner_id). Holds the key's hash, never the key."""

    model_config = ConfigDict(extra="ignore", frozen=True, title="PartnerRecord")

    partner_id: Annotated[str, StringConstraints(pattern=PARTNER_ID_PATTERN)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    key_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="hex sha256 of the partner's API key"
    )
    created_at: UtcDatetime
    revoked_at: UtcDatetime | None = None
    rate_per_second: float = Field(default=50, gt=0, description="allowed events per second")


def encode_partner(partner: PartnerRecord) -> tuple[bytes, bytes]:
    return partner.partner_id.encode(), _json(partner.model_dump(mode="json"))


def decode_partner(value: bytes) -> PartnerRecord:
    try:
        return PartnerRecord.model_validate_json(value)
    except ValidationError as exc:
        raise RecordError("schema_invalid", str(exc)) from None
