"""The partials topic between the aggregator's two stages: bundles, their reading, their purge.

Stage 1 publishes every partial a batch touched. One record per partial made stage 2 pay faust's
per-record path (its fetcher, conductor and stream: about as much as the faust floor's whole
cost per record) about twice per event. Stage 1 therefore publishes *bundles*: per partition of
the partials topic (the pair's, so stage 2 finds all partials of a pair together), the batch's
partials in records of at most :data:`BUNDLE_BYTES`. A bundle is one record: stage 2 takes it
whole or not at all, and applies each partial by its update counter (newest wins, an equal one
again), so bundles may be replayed or cut anywhere.

Bundles cannot be compacted (no later record supersedes an earlier one), so the topic keeps
records (``cleanup.policy=delete``, no time limit) and each worker deletes, every
``purge_interval`` (30 s), the records below the offsets its group committed on the partitions it
owns (Kafka Streams does the same with its repartition topics): nothing stage 2 has not taken is
ever deleted, and a restarted stage 2 resumes at or above the log start. Releases before bundles
kept the topic compacted with one partial per record; :func:`migrate_topic` switches its policy,
and stage 2 reads both record forms (:func:`entries`), so it resumes exactly where it was.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from handshake.topics import admin_client

log = logging.getLogger("services.aggregator")

#: A bundle's size: at ~600 bytes a partial, ~27 partials in one record (stage 2 buffers up to
#: ``stream_buffer_maxsize`` records when behind, so this also bounds that buffer's memory).
BUNDLE_BYTES = 16 * 1024
TOPIC_CONFIG = {"cleanup.policy": "delete", "retention.ms": "-1"}

Entry = dict[str, Any]  # {"pair", "partition", "updates", "partial", "months", "full"}


def entry_bytes(
    pair: str, partition: int, updates: int, raw_partial: bytes, months: Mapping[str, int], full: bool
) -> bytes:
    """One partial as an element of a bundle (``raw_partial``: the partial's JSON, as stored),
    with the count of each month its batch changed, or of all its months if ``full`` (see
    :func:`services.aggregator.merge.apply_entry`)."""
    head = (
        f'{{"pair":"{pair}","partition":{partition},"updates":{updates},"full":{"true" if full else "false"},'
    )
    return head.encode() + b'"months":' + orjson.dumps(months) + b',"partial":' + raw_partial + b"}"


def bundle(
    entries: Mapping[int, Iterable[bytes]], limit: int = BUNDLE_BYTES
) -> dict[int, list[tuple[bytes, bytes]]]:
    """Per partition of the partials topic, (key, value) records holding its entries in order,
    each at most ``limit`` bytes (an entry larger than that alone). Keys are random: the topic
    is not compacted, and one that someone compacted by mistake would still keep every bundle."""
    out: dict[int, list[tuple[bytes, bytes]]] = {}
    for partition, items in entries.items():
        records = out.setdefault(partition, [])
        chunk: list[bytes] = []
        size = len(_HEAD) + len(_TAIL)
        for item in items:
            if chunk and size + len(item) + 1 > limit:
                records.append(_record(chunk))
                chunk, size = [], len(_HEAD) + len(_TAIL)
            chunk.append(item)
            size += len(item) + 1  # and a comma
        if chunk:
            records.append(_record(chunk))
    return out


_HEAD, _TAIL = b'{"partials":[', b"]}"


def _record(chunk: list[bytes]) -> tuple[bytes, bytes]:
    return b"b:" + os.urandom(8).hex().encode(), _HEAD + b",".join(chunk) + _TAIL


def entries(value: bytes | None) -> list[Entry]:
    """The partials of one record of the topic: a bundle, or a single partial (earlier releases,
    whose partials carry their months: an entry without ``months`` has none to lay over)."""
    body = orjson.loads(value or b"")
    items = body.get("partials", [body])
    for item in items:
        if not isinstance(item.get("partial"), dict) or not isinstance(item.get("pair"), str):
            raise ValueError("a partial without pair or value")
        item["partition"] = int(item["partition"])
        item.setdefault("months", {})
        item["full"] = bool(item.get("full", False))
        if not isinstance(item["months"], dict):
            raise ValueError("months that are not a mapping")
    return items


def migrate_topic(bootstrap: str, topic: str, security: dict[str, Any] | None = None) -> bool:
    """Switch an earlier release's compacted partials topic to :data:`TOPIC_CONFIG`; True if it did.

    Only this topic, and only from ``compact``: it is the aggregator's own, and its records (single
    partials) stay readable. Any other drift is left for the topic check to report."""
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = admin_client(bootstrap, security=security)
    try:
        if topic not in set(admin.list_topics()):
            return False
        resource = ConfigResource(ConfigResourceType.TOPIC, topic)
        described = admin.describe_configs([resource], config_filter="all")
        policy = described.get("topic", {}).get(topic, {}).get("cleanup.policy", {}).get("value")
        if policy != "compact":
            return False
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=dict(TOPIC_CONFIG))])
        log.warning(
            "partials topic of an earlier release: now bundles, not compacted", extra={"topic": topic}
        )
        return True
    finally:
        admin.close()


class Purger:
    """Deletes the partials topic's records below the offsets a group committed (aiokafka admin).

    The offsets are asked from the broker, not taken from faust: faust records an offset as
    committed even when the commit failed (``Consumer._commit_offsets``), and deleting above
    what the broker holds would leave a restarted reader below the log's start."""

    def __init__(self, bootstrap: str, security: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.security = security or {}
        self._admin: Any = None
        self._done: dict[Any, int] = {}  # TopicPartition -> offset purged below

    async def purge(self, group: str, partitions: Iterable[Any]) -> dict[Any, int]:
        """Delete below ``group``'s committed offset on each of ``partitions`` (those a worker owns),
        where it moved since the last time; returns the new log starts."""
        from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

        tps = list(partitions)
        if not tps:
            return {}
        if self._admin is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.bootstrap, client_id="handshake-aggregator-purge", **self.security
            )
            await admin.start()
            self._admin = admin
        committed = await self._admin.list_consumer_group_offsets(group, partitions=tps)
        todo = {
            tp: meta.offset
            for tp, meta in committed.items()
            if meta is not None and meta.offset > self._done.get(tp, 0)
        }
        if not todo:
            return {}
        starts = await self._admin.delete_records({tp: RecordsToDelete(o) for tp, o in todo.items()})
        self._done.update(todo)
        return dict(starts)

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            self._admin = None
