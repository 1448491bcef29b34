"""Generate the JSON Schemas and the AsyncAPI 3.0 document from the models.

python -m schemas.generate          # write schemas/json/*.schema.json and schemas/asyncapi.yaml
python -m schemas.generate --check  # exit 1 and list the files that differ
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from schemas.events import EVENT_ID_PATTERN, PARTNER_ID_PATTERN, AcceptedEvent, ExchangeEvent
from schemas.records import CE_SPECVERSION, CE_TYPE_EVENT, CONTENT_TYPE, DeadLetter, PairStats, PartnerRecord
from schemas.topics import DEAD_LETTER_TOPIC, EVENTS_TOPIC, PAIR_STATS_TOPIC, PARTNERS_TOPIC, TOPICS_BY_NAME

ROOT = Path(__file__).resolve().parent
KAFKA_BINDING_VERSION = "0.5.0"

JSON_SCHEMAS: dict[str, type[BaseModel]] = {
    "exchange-event": ExchangeEvent,
    "accepted-event": AcceptedEvent,
    "pair-stats": PairStats,
    "dead-letter": DeadLetter,
    "partner": PartnerRecord,
}


def _dump_json(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _open(node: Any) -> Any:
    """Drop ``additionalProperties: false``: readers of a topic must ignore fields added later."""
    if isinstance(node, dict):
        return {k: _open(v) for k, v in node.items() if not (k == "additionalProperties" and v is False)}
    if isinstance(node, list):
        return [_open(v) for v in node]
    return node


def json_schema(name: str, model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    if model is not ExchangeEvent:  # what partners send stays closed; Kafka records stay open
        schema = _open(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://handshake.example/schemas/{name}.schema.json",
        **schema,
    }


def _event_headers() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "CloudEvents 1.0 binary-mode Kafka headers (UTF-8 values). Ignore unknown headers.",
        "required": ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type"],
        "properties": {
            "ce_specversion": {"type": "string", "const": CE_SPECVERSION},
            "ce_id": {
                "type": "string",
                "description": "{partner_id}/{event_id}/{revision}: unique per revision",
            },
            "ce_source": {"type": "string", "pattern": "^/partners/[a-z0-9][a-z0-9-]{0,62}$"},
            "ce_type": {"type": "string", "const": CE_TYPE_EVENT},
            "ce_time": {"type": "string", "format": "date-time", "description": "received_at, RFC 3339 UTC"},
            "content-type": {"type": "string", "const": CONTENT_TYPE},
        },
    }


_KEYS: dict[str, dict[str, Any]] = {
    EVENTS_TOPIC: {
        "type": "string",
        "description": "{partner_id}/{event_id}",
        "pattern": PARTNER_ID_PATTERN.removesuffix("$") + "/" + EVENT_ID_PATTERN.removeprefix("^"),
    },
    PARTNERS_TOPIC: {"type": "string", "description": "partner_id", "pattern": PARTNER_ID_PATTERN},
    PAIR_STATS_TOPIC: {
        "type": "string",
        "description": "the two country codes sorted, joined by '-'",
        "pattern": "^[A-Z]{2,4}-[A-Z]{2,4}$",
    },
    DEAD_LETTER_TOPIC: {"type": "string", "description": "the failed record's original key (may be absent)"},
}

# (channel id, topic, message id, payload model, summary, sender)
_CHANNELS: list[tuple[str, str, str, type[BaseModel], str, str]] = [
    ("exchangeEvents", EVENTS_TOPIC, "exchangeEvent", AcceptedEvent, "An accepted exchange event", "ingest"),
    ("partners", PARTNERS_TOPIC, "partner", PartnerRecord, "A partner and its key hash", "the handshake CLI"),
    ("pairStats", PAIR_STATS_TOPIC, "pairStats", PairStats, "A country pair's full aggregate", "aggregator"),
    ("deadLetter", DEAD_LETTER_TOPIC, "deadLetter", DeadLetter, "A record that failed", "any consumer"),
]


def _capitalise(word: str) -> str:
    return word[:1].upper() + word[1:]


def asyncapi() -> dict[str, Any]:
    models = [(m, "validation") for m in (AcceptedEvent, PartnerRecord, PairStats, DeadLetter)]
    _, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")  # type: ignore[arg-type]
    schemas = {k: _open(defs["$defs"][k]) for k in sorted(defs["$defs"])}

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for channel_id, topic, message_id, model, summary, sender in _CHANNELS:
        spec = TOPICS_BY_NAME[topic]
        topic_config: dict[str, Any] = {"cleanup.policy": spec.config["cleanup.policy"].split(",")}
        if "retention.ms" in spec.config:
            topic_config["retention.ms"] = int(spec.config["retention.ms"])
        message: dict[str, Any] = {
            "name": message_id,
            "title": model.model_config.get("title") or model.__name__,
            "summary": summary,
            "contentType": CONTENT_TYPE,
            "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
            "bindings": {
                "kafka": {"key": copy.deepcopy(_KEYS[topic]), "bindingVersion": KAFKA_BINDING_VERSION}
            },
        }
        if topic == EVENTS_TOPIC:
            message["headers"] = _event_headers()
        extra = model.model_config.get("json_schema_extra")
        examples = extra.get("examples") if isinstance(extra, dict) else None
        if isinstance(examples, list) and examples:
            message["examples"] = [{"name": "example", "payload": examples[0]}]
        messages[_capitalise(message_id) + "Message"] = message
        channels[channel_id] = {
            "address": topic,
            "title": topic,
            "description": f"{spec.description} Key: {spec.key}.",
            "messages": {message_id: {"$ref": f"#/components/messages/{_capitalise(message_id)}Message"}},
            "bindings": {
                "kafka": {
                    "topic": topic,
                    "partitions": spec.partitions,
                    "topicConfiguration": topic_config,
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
        }
        ref_channel = {"$ref": f"#/channels/{channel_id}"}
        ref_messages = [{"$ref": f"#/channels/{channel_id}/messages/{message_id}"}]
        operations[f"send{_capitalise(channel_id)}"] = {
            "action": "send",
            "summary": f"{sender} produces to {topic}",
            "channel": ref_channel,
            "messages": ref_messages,
        }
        operations[f"receive{_capitalise(channel_id)}"] = {
            "action": "receive",
            "summary": f"subscribers consume {topic}",
            "channel": copy.deepcopy(ref_channel),
            "messages": copy.deepcopy(ref_messages),
        }

    return {
        "asyncapi": "3.0.0",
        "id": "urn:handshake:kafka",
        "info": {
            "title": "Handshake Kafka topics",
            "version": "1.0.0",
            "description": (
                "Citizen-diplomacy exchange events and country-pair aggregates. Records are JSON "
                "(UTF-8); keys are UTF-8 strings. Consumers must ignore unknown fields and headers. "
                "Breaking changes get a new .v2 topic."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "local": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "the open local broker started by `handshake up` / `handshake kafka start`"
                " (no authentication: for one machine only)",
            },
            "secured": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka-secure",
                "description": "a secured broker (`handshake up --secure`, compose, Kubernetes): TLS with"
                " the deployment's CA, SASL/SCRAM-SHA-512; an analyst's credential (`handshake analysts"
                " add NAME`) may read the events, pair-stats and dead-letter topics and use consumer"
                " groups named `analyst-NAME.*`, nothing else",
                "security": [{"$ref": "#/components/securitySchemes/scram"}],
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "securitySchemes": {
                "scram": {
                    "type": "scramSha512",
                    "description": "SASL/SCRAM-SHA-512 over TLS; each client its own principal",
                }
            },
        },
    }


def _dump_yaml(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def render() -> dict[Path, str]:
    """Every generated file (path relative to schemas/) and its exact content."""
    files = {
        Path("json") / f"{name}.schema.json": _dump_json(json_schema(name, m))
        for name, m in JSON_SCHEMAS.items()
    }
    files[Path("asyncapi.yaml")] = _dump_yaml(asyncapi())
    return files


def differing(root: Path = ROOT) -> list[Path]:
    out = []
    for rel, text in render().items():
        path = root / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            out.append(rel)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the checked-in files differ")
    args = parser.parse_args(argv)
    if args.check:
        diff = differing()
        for rel in diff:
            print(f"out of date: schemas/{rel} (run python -m schemas.generate)", file=sys.stderr)
        return 1 if diff else 0
    for rel, text in render().items():
        path = ROOT / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote schemas/{rel}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
