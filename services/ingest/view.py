"""The global view of the compacted events topic: per key, the latest revision and content."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from schemas.events import content_hash
from schemas.records import RecordError, decode_event
from services.ingest.domain import ViewEntry

log = logging.getLogger(__name__)


class EventsView(Protocol):
    def get(self, key: str) -> ViewEntry | None: ...

    def put(self, key: str, entry: ViewEntry) -> None: ...

    def ready(self) -> bool: ...

    def start(self) -> None: ...

    def close(self) -> None: ...


class InMemoryView:
    """Key -> latest entry; a lower revision never replaces a higher one."""

    def __init__(self) -> None:
        self._entries: dict[str, ViewEntry] = {}  # touched on the event loop only
        self._ready = True

    def get(self, key: str) -> ViewEntry | None:
        return self._entries.get(key)

    def put(self, key: str, entry: ViewEntry) -> None:
        current = self._entries.get(key)
        if current is None or current.revision <= entry.revision:
            self._entries[key] = entry

    def remove(self, key: str) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

    def ready(self) -> bool:
        return self._ready

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None


def entry_from_record(
    value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]] | None
) -> ViewEntry:
    """Decode a record into a view entry; raises RecordError for unreadable records."""
    event = decode_event(key, value, headers)
    return ViewEntry(event.revision, content_hash(event), event.status.value, value)


class KafkaEventsView(InMemoryView):
    """The view fed by a :class:`~services.ingest.follower.TopicFollower` of the events topic.

    Ready once the follower has read up to the end offsets seen at start; afterwards it keeps
    applying records written by anyone (other ingest instances, late acknowledgements).
    """

    def __init__(self) -> None:
        super().__init__()
        self._ready = False
        self.skipped = 0

    def set_ready(self, ready: bool) -> None:
        if ready and not self._ready:
            log.info("events view caught up", extra={"keys": len(self)})
        self._ready = ready

    def apply_record(
        self, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None
    ) -> None:
        if value is None:
            if key is not None:
                self.remove(key.decode("utf-8", "replace"))
            return
        if key is not None:
            current = self._entries.get(key.decode("utf-8", "replace"))
            if current is not None and current.value == value:
                return  # our own write, already applied after its acknowledgement: skip decoding
        try:
            entry = entry_from_record(value, key, headers)
        except RecordError:
            self.skipped += 1
            return
        assert key is not None  # decode_event checked it
        self.put(key.decode(), entry)
