"""The acceptance rule of the event contract: which record of an event is its accepted state.

One implementation shared by every reader of ``handshake.exchange-events.v1`` (the aggregator,
the api's event index, the test ground truth) so that they can never disagree on it:

- an event never seen before is ``applied``;
- a higher revision than the stored one is ``applied`` (it replaces the stored state);
- a lower revision is ``stale`` and changes nothing;
- the same revision with the same content is a ``duplicate`` and changes nothing;
- the same revision with other content is a ``conflict`` and changes nothing (the first wins).

A cancellation is an ordinary revision whose status is ``cancelled``: it is applied like any
other and keeps the event (readers decide what "active" means, see :func:`is_active`).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from schemas.events import AcceptedEvent, Status
from schemas.records import event_key


class Verdict(StrEnum):
    applied = "applied"
    duplicate = "duplicate"
    stale = "stale"
    conflict = "conflict"


def judge(stored_revision: int | None, stored_hash: str | None, revision: int, content: str) -> Verdict:
    """The verdict on a record of ``revision`` with content hash ``content`` given what is stored
    for its event (``None``: nothing yet)."""
    if stored_revision is None:
        return Verdict.applied
    if revision > stored_revision:
        return Verdict.applied
    if revision < stored_revision:
        return Verdict.stale
    return Verdict.duplicate if content == stored_hash else Verdict.conflict


def is_active(status: str) -> bool:
    """Whether an accepted event counts in active figures (a cancelled one does not)."""
    return status != Status.cancelled.value


def latest_revisions(events: Iterable[AcceptedEvent]) -> dict[str, AcceptedEvent]:
    """The accepted state of every event, by record key, from events in log order (ground truth).

    Only ``applied`` changes the state, and content tells ``duplicate`` from ``conflict`` only,
    so no content hash is needed here.
    """
    latest: dict[str, AcceptedEvent] = {}
    for event in events:
        key = event_key(event.partner_id, event.event_id)
        seen = latest.get(key)
        stored = None if seen is None else seen.revision
        if judge(stored, None, event.revision, "") is Verdict.applied:
            latest[key] = event
    return latest
