"""The global view of the compacted events topic: per key, the latest revision and content."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Protocol

from kafka import KafkaConsumer, TopicPartition

from handshake.settings import KafkaSettings
from schemas.events import content_hash
from schemas.records import RecordError, decode_event
from services.ingest.domain import ViewEntry
from services.ingest.partners import assign_all, follower_consumer

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
        self._entries: dict[str, ViewEntry] = {}
        self._lock = threading.Lock()
        self._ready = True

    def get(self, key: str) -> ViewEntry | None:
        return self._entries.get(key)

    def put(self, key: str, entry: ViewEntry) -> None:
        with self._lock:
            current = self._entries.get(key)
            if current is None or current.revision <= entry.revision:
                self._entries[key] = entry

    def remove(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

    def ready(self) -> bool:
        return self._ready

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None


def entry_from_record(value: bytes, key: bytes | None, headers: list[tuple[str, bytes]] | None) -> ViewEntry:
    """Decode a record into a view entry; raises RecordError for unreadable records."""
    event = decode_event(key, value, headers)
    return ViewEntry(event.revision, content_hash(event), event.status.value, value)


class KafkaEventsView(InMemoryView):
    """Follows every partition of the events topic in a thread, from the beginning.

    Ready once it has read up to the end offsets seen at start; afterwards it keeps applying
    records written by anyone (other ingest instances, late acknowledgements).
    """

    def __init__(self, settings: KafkaSettings, poll_ms: int = 100) -> None:
        super().__init__()
        self.settings = settings
        self.poll_ms = poll_ms
        self._ready = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed: BaseException | None = None
        self.skipped = 0

    def start(self) -> None:
        consumer = follower_consumer(self.settings, "handshake-ingest-events-view")
        tps = assign_all(consumer, self.settings.events_topic)
        targets = consumer.end_offsets(tps)
        self._thread = threading.Thread(
            target=self._run, args=(consumer, targets), name="ingest-events-view", daemon=True
        )
        self._thread.start()

    def _run(self, consumer: KafkaConsumer, targets: dict[TopicPartition, int]) -> None:
        try:
            self._check_caught_up(consumer, targets)
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=self.poll_ms, max_records=5000).values():
                    for record in records:
                        self._apply(record.key, record.value, record.headers)
                if not self._ready:
                    self._check_caught_up(consumer, targets)
        except Exception as exc:  # pragma: no cover - reported through readiness
            self.failed = exc
            self._ready = False
            log.exception("events view follower stopped")
        finally:
            with contextlib.suppress(Exception):
                consumer.close()

    def _check_caught_up(self, consumer: KafkaConsumer, targets: dict[TopicPartition, int]) -> None:
        if all(consumer.position(tp) >= end for tp, end in targets.items()):
            if not self._ready:
                log.info("events view caught up", extra={"keys": len(self)})
            self._ready = True

    def _apply(self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None) -> None:
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

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
