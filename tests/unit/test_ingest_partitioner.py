"""Ingest's producer helpers. The partitioner must put every key where kafka-python's (and
Java's) default puts it: a key on two partitions would break compaction and per-event ordering."""

from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.cluster import ClusterMetadata
from kafka.partitioner.default import DefaultPartitioner
from kafka.partitioner.default import murmur2 as reference_murmur2

from services.ingest.producer import KeyPartitioner, murmur2


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_murmur2_is_the_java_clients(data: bytes) -> None:
    assert murmur2(data) == reference_murmur2(data) & 0xFFFFFFFF


def test_murmur2_known_values() -> None:
    # values of org.apache.kafka.common.utils.Utils.murmur2 (as kafka-python's tests list them)
    assert murmur2(b"") == reference_murmur2(b"")
    assert murmur2(b"21") == reference_murmur2(b"21") & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") == reference_murmur2(b"a-little-bit-long-string") & 0xFFFFFFFF


class _Cluster(ClusterMetadata):
    def __init__(self, partitions: int) -> None:
        super().__init__()
        self._parts = set(range(partitions))

    def topics(self, exclude_internal_topics: bool = True) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(self._parts) if topic == "t" else None

    def available_partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions_for_topic(topic)


@given(st.binary(min_size=1, max_size=120), st.integers(min_value=1, max_value=64))
@settings(max_examples=300)
def test_key_partitioner_agrees_with_the_default(key: bytes, partitions: int) -> None:
    cluster = _Cluster(partitions)
    expected = DefaultPartitioner().partition("t", key, key, b"v", b"v", cluster)
    assert KeyPartitioner().partition("t", key, key, b"v", b"v", cluster) == expected
