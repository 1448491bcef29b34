"""Pure ingest rules: revision decisions, body parsing, rate limiting, API keys. No I/O here."""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.events import PARTNER_ID_PATTERN, EventValidationError, ExchangeEvent, FieldError, parse_event

# --- revisions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ViewEntry:
    """What ingest knows of the latest stored record of one key."""

    revision: int
    content_hash: str
    status: str
    value: bytes = b""


@dataclass(frozen=True, slots=True)
class Accept:
    pass


@dataclass(frozen=True, slots=True)
class Duplicate:
    pass


@dataclass(frozen=True, slots=True)
class Conflict:
    reason: str
    stored_revision: int


Decision = Accept | Duplicate | Conflict


def decide(existing: ViewEntry | None, revision: int, event_hash: str) -> Decision:
    """The revision rule (DESIGN.md section 4).

    - nothing stored, or the stored revision is older: accept;
    - same revision and same content: duplicate (nothing is produced);
    - same revision with other content: conflict;
    - an older revision than the stored one: conflict.
    """
    if existing is None or existing.revision < revision:
        return Accept()
    if existing.revision == revision:
        if hmac.compare_digest(existing.content_hash, event_hash):
            return Duplicate()
        return Conflict(
            f"revision {revision} is already stored with different content; "
            f"send a correction with revision {existing.revision + 1}",
            existing.revision,
        )
    return Conflict(
        f"revision {revision} is older than the stored revision {existing.revision}",
        existing.revision,
    )


# --- body parsing ---------------------------------------------------------------------


class BodyError(Exception):
    """The body as a whole cannot be read (maps to a 4xx problem)."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def json_depth_exceeds(data: object, limit: int) -> bool:
    """True when ``data`` nests arrays/objects deeper than ``limit`` (iterative, early exit)."""
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))
    return False


def load_json(raw: bytes, max_depth: int) -> Any:
    """Decode one JSON document; raise BodyError(400) for malformed, non-UTF-8 or too deep input."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        text = str(exc)
        if "recursion" in text.lower() or "depth" in text.lower():
            raise BodyError(400, f"JSON nested deeper than {max_depth} levels", "json_too_deep") from None
        if "utf-8" in text.lower() or "surrogate" in text.lower():
            raise BodyError(400, "the body is not valid UTF-8", "invalid_utf8") from None
        raise BodyError(400, f"malformed JSON: {text}", "invalid_json") from None
    # nesting needs an opening bracket per level: few brackets in the bytes, no walk needed
    if raw.count(b"{") + raw.count(b"[") > max_depth and json_depth_exceeds(data, max_depth):
        raise BodyError(400, f"JSON nested deeper than {max_depth} levels", "json_too_deep")
    return data


@dataclass(slots=True)
class BatchItem:
    """One record of a batch: either decoded JSON ``data`` or an ``error`` (line-level)."""

    index: int
    line: int | None = None
    data: Any = None
    errors: list[FieldError] = field(default_factory=list)


def parse_batch(raw: bytes, ndjson: bool, max_records: int, max_depth: int) -> list[BatchItem]:
    """Split a batch body into records.

    JSON: the body must be one array (a malformed body is a BodyError). NDJSON: one JSON value
    per line, blank lines skipped; a broken line becomes an error for that record only.
    More than ``max_records`` records is a BodyError(413).
    """
    if not ndjson:
        data = load_json(raw, max_depth + 1)
        if not isinstance(data, list):
            raise BodyError(422, "a JSON batch must be an array of events", "batch_not_array")
        if not data:
            raise BodyError(422, "the batch holds no records", "empty_batch")
        if len(data) > max_records:
            raise BodyError(413, f"at most {max_records} records per batch (got {len(data)})", "too_many")
        return [BatchItem(index=i, data=item) for i, item in enumerate(data)]
    items: list[BatchItem] = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        if len(items) >= max_records:
            raise BodyError(413, f"at most {max_records} records per batch", "too_many")
        item = BatchItem(index=len(items), line=number)
        try:
            item.data = load_json(line, max_depth)
        except BodyError as exc:
            item.errors = [FieldError("", f"line {number}: {exc.message}", exc.code)]
        items.append(item)
    if not items:
        raise BodyError(422, "the batch holds no records", "empty_batch")
    return items


def errors_out(errors: list[FieldError]) -> list[dict[str, str]]:
    """Field errors as the JSON objects of a problem's ``errors`` (or a batch record's)."""
    return [e.as_dict() for e in errors]


def validate_item(item: BatchItem) -> ExchangeEvent | None:
    """Validate one batch record; on failure its ``errors`` are filled and None is returned."""
    if item.errors:
        return None
    try:
        return parse_event(item.data)
    except EventValidationError as exc:
        item.errors = list(exc.errors)
        return None


# --- rate limiting --------------------------------------------------------------------


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` stored.

    A request for more tokens than the capacity is let through when the bucket is full and
    leaves it in debt, so big batches are possible but still pay for every record.
    """

    rate: float
    capacity: float
    tokens: float
    updated: float

    def take(self, n: int, now: float) -> float:
        """Take ``n`` tokens; 0.0 when allowed, else the seconds to wait before retrying."""
        wait = self.wait(n, now)
        if wait == 0.0:
            self.tokens -= n
        return wait

    def wait(self, n: int, now: float) -> float:
        """What :meth:`take` would answer, taking nothing."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        needed = min(float(n), self.capacity)
        if self.tokens >= needed:
            return 0.0
        return (needed - self.tokens) / self.rate


class RateLimiter:
    """One token bucket per partner; a changed rate takes effect at once."""

    def __init__(self, burst_seconds: float) -> None:
        self.burst_seconds = burst_seconds
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, partner_id: str, rate: float, n: int, now: float) -> float:
        return self._bucket(partner_id, rate, now).take(n, now)

    def wait(self, partner_id: str, rate: float, n: int, now: float) -> float:
        """What :meth:`take` would answer, taking nothing (to refuse before doing the work)."""
        return self._bucket(partner_id, rate, now).wait(n, now)

    def _bucket(self, partner_id: str, rate: float, now: float) -> TokenBucket:
        capacity = max(1.0, rate * self.burst_seconds)
        bucket = self._buckets.get(partner_id)
        if bucket is None or bucket.rate != rate:
            tokens = capacity if bucket is None else min(bucket.tokens, capacity)
            bucket = TokenBucket(rate=rate, capacity=capacity, tokens=tokens, updated=now)
            self._buckets[partner_id] = bucket
        return bucket


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


# --- partner keys ---------------------------------------------------------------------

KEY_PREFIX = "hsk_"
_PARTNER_ID_RE = re.compile(PARTNER_ID_PATTERN)


def generate_key(partner_id: str) -> str:
    """A new API key ``hsk_{partner_id}_{secret}`` (shown once, stored only as a hash)."""
    if not _PARTNER_ID_RE.match(partner_id):
        raise ValueError(f"invalid partner id {partner_id!r}")
    return f"{KEY_PREFIX}{partner_id}_{secrets.token_urlsafe(32)}"


def hash_key(key: str) -> str:
    """Hex sha256 of an API key: the only form in which keys are stored."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def key_partner_id(key: str) -> str | None:
    """The partner id embedded in a well-formed key, else None."""
    if not key.startswith(KEY_PREFIX):
        return None
    partner_id, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or len(secret) < 16 or not _PARTNER_ID_RE.match(partner_id):
        return None
    return partner_id


def key_matches(key: str, key_hash: str) -> bool:
    """Constant-time comparison of a presented key with a stored hash."""
    return hmac.compare_digest(hash_key(key), key_hash)


def slugify_partner_id(name: str) -> str:
    """A partner id derived from a display name: lowercase letters, digits and '-'."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:50].strip("-")
    return slug or "partner"
