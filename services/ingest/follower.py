"""Follows compacted topics from the beginning on the event loop: the partners and events views.

One aiokafka consumer (no consumer group, every partition assigned) feeds each topic's records
to its sink. A sink is ready once the follower has read up to the end offsets seen when it
started; afterwards it keeps applying records written by anyone (other ingest replicas, the
admin CLI). aiokafka runs on the event loop and decodes record batches in C, so following the
events topic (which sees every record ingest writes) costs the request path little; a
thread-based consumer here competed with the request handlers for the GIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from handshake.errors import HandshakeError
from services.ingest import hooks

log = logging.getLogger(__name__)


class Sink(Protocol):
    """What a followed topic feeds: its records, then a signal once caught up (or lost)."""

    def apply_record(
        self, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        """Apply one record (``value`` None is a tombstone)."""
        ...

    def set_ready(self, ready: bool) -> None:
        """True once caught up with the topic; False while (re)reading it."""
        ...


class TopicFollower:
    """Reads ``topics`` (name -> sink) from the beginning, forever, in one asyncio task."""

    def __init__(
        self,
        bootstrap: str,
        topics: dict[str, Sink],
        *,
        client_id: str = "handshake-ingest-follower",
        poll_ms: int = 100,
        timeout_s: float = 30.0,
        security: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.security = security or {}  # aiokafka's SASL/TLS arguments (KafkaSettings.aiokafka_config)
        self.topics = topics
        self.client_id = client_id
        self.poll_ms = poll_ms
        self.timeout_s = timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and assign every partition (fails clearly when a topic does not exist)."""
        self._consumer, targets = await self._connect()
        self._task = asyncio.create_task(self._run(targets), name=self.client_id)

    async def _connect(self) -> tuple[AIOKafkaConsumer, dict[TopicPartition, int]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=self.client_id,
            fetch_max_wait_ms=self.poll_ms,
            request_timeout_ms=10_000,
            **self.security,
        )
        await consumer.start()
        try:
            tps = await self._partitions(consumer)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            targets = await consumer.end_offsets(tps)
        except BaseException:
            await consumer.stop()
            raise
        for sink in self.topics.values():
            sink.set_ready(False)
        return consumer, targets

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        tps: list[TopicPartition] = []
        for topic in self.topics:
            # the consumer's own metadata only covers assigned topics: ask the cluster
            while not (parts := await hooks.cluster_partitions(consumer, topic)):
                if loop.time() > deadline:
                    raise HandshakeError(f"topic {topic} has no partitions (does it exist?)")
                await asyncio.sleep(0.2)
            tps.extend(TopicPartition(topic, p) for p in sorted(parts))
        return tps

    async def _run(self, targets: dict[TopicPartition, int]) -> None:
        while True:
            consumer = self._consumer
            assert consumer is not None
            try:
                await self._follow(consumer, targets)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reported through readiness; then read everything again
                for sink in self.topics.values():
                    sink.set_ready(False)
                log.exception("topic follower failed; reconnecting", extra={"error": repr(exc)})
                with contextlib.suppress(Exception):
                    await consumer.stop()
                await asyncio.sleep(1.0)
                with contextlib.suppress(Exception):
                    self._consumer, targets = await self._connect()

    async def _follow(self, consumer: AIOKafkaConsumer, targets: dict[TopicPartition, int]) -> None:
        pending = {topic: [tp for tp in targets if tp.topic == topic] for topic in self.topics}
        await self._check_caught_up(consumer, targets, pending)
        while True:
            batches = await consumer.getmany(timeout_ms=self.poll_ms, max_records=5000)
            for tp, records in batches.items():
                sink = self.topics[tp.topic]
                for record in records:
                    sink.apply_record(record.key, record.value, record.headers)
            if pending:
                await self._check_caught_up(consumer, targets, pending)

    async def _check_caught_up(
        self,
        consumer: AIOKafkaConsumer,
        targets: dict[TopicPartition, int],
        pending: dict[str, list[TopicPartition]],
    ) -> None:
        for topic in list(pending):
            positions = [await consumer.position(tp) for tp in pending[topic]]
            if all(pos >= targets[tp] for pos, tp in zip(positions, pending[topic], strict=True)):
                self.topics[topic].set_ready(True)
                log.info("caught up with topic", extra={"topic": topic})
                del pending[topic]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
