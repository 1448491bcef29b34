"""The contract on a real broker: a serialised record read back by Debian's kcat with its headers,
and by a plain kafka-python consumer that knows nothing but the AsyncAPI document."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
import yaml
from kafka import KafkaConsumer

from handshake.settings import KafkaSettings
from schemas.events import AcceptedEvent
from schemas.records import encode_event

pytestmark = pytest.mark.integration

ASYNCAPI = Path(__file__).resolve().parents[2] / "schemas" / "asyncapi.yaml"


def _event() -> AcceptedEvent:
    return AcceptedEvent.model_validate(
        {
            "event_id": "kcat-check:1",
            "revision": 2,
            "kind": "scientific",
            "title": "Arctic research exchange",
            "host_country": "NOR",
            "delegations": [{"country": "suhh", "participants": 12}, {"country": "DE"}],
            "starts_on": "1989-06-01",
            "ends_on": "1989-06-14",
            "partner_id": "polar-institute",
            "received_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        }
    )


def _produce(settings: KafkaSettings, producer_factory) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    key, value, headers = encode_event(_event())
    producer_factory().send(settings.events_topic, key=key, value=value, headers=headers).get(timeout=10)
    return key, value, headers


def test_kcat_reads_the_record_with_its_headers(kafka_settings: KafkaSettings, producer_factory) -> None:
    key, value, headers = _produce(kafka_settings, producer_factory)
    out = subprocess.run(
        [
            "kcat",
            "-C",
            "-b",
            kafka_settings.kafka_bootstrap,
            "-t",
            kafka_settings.events_topic,
            "-e",
            "-q",
            "-f",
            "%k\\t%h\\t%s\\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    got_key, got_headers, got_value = out.split("\t")
    assert got_key == key.decode()
    assert json.loads(got_value) == json.loads(value)
    for name, raw in headers:
        assert f"{name}={raw.decode()}" in got_headers
    assert "ce_type=org.handshake.exchange.v1" in got_headers


def test_a_plain_consumer_reads_it_with_only_the_asyncapi_document(
    kafka_settings: KafkaSettings, producer_factory
) -> None:
    _produce(kafka_settings, producer_factory)
    doc = yaml.safe_load(ASYNCAPI.read_text())
    channel = doc["channels"]["exchangeEvents"]
    message = doc["components"]["messages"]["ExchangeEventMessage"]
    assert channel["address"] == "handshake.exchange-events.v1"
    schemas = doc["components"]["schemas"]

    def resolve(node):  # the document's local $refs, nothing else
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(schemas[node["$ref"].rsplit("/", 1)[1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    payload_schema = resolve(message["payload"])
    headers_schema = message["headers"]
    key_schema = message["bindings"]["kafka"]["key"]
    consumer = KafkaConsumer(
        kafka_settings.events_topic,  # this test's own name for the channel's address
        bootstrap_servers=kafka_settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10000,
        group_id="asyncapi-reader",
    )
    try:
        record = next(iter(consumer))
    finally:
        consumer.close()
    key = record.key.decode()
    headers = {name: raw.decode() for name, raw in record.headers}
    payload = json.loads(record.value)
    jsonschema.validate(key, key_schema)
    jsonschema.validate(headers, headers_schema)
    jsonschema.validate(payload, payload_schema)
    assert key == f"{payload['partner_id']}/{payload['event_id']}"
    assert payload["host_country"] == "NO" and payload["delegations"][0]["country"] == "SUHH"
