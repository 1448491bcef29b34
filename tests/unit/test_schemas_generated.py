"""The checked-in JSON Schemas and AsyncAPI document match the models and are well-formed.

No official AsyncAPI 3.0.0 JSON Schema ships in any PyPI package available here, and tests
run offline, so the AsyncAPI document gets a strict structural check instead.
"""

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator, Draft202012Validator

from schemas import generate
from schemas.events import AcceptedEvent, ExchangeEvent
from schemas.records import encode_event
from schemas.topics import TOPICS

ROOT = Path(generate.__file__).resolve().parent


def test_checked_in_files_match_models() -> None:
    rendered = generate.render()
    assert set(rendered) == {
        Path("json/exchange-event.schema.json"),
        Path("json/accepted-event.schema.json"),
        Path("json/pair-stats.schema.json"),
        Path("json/dead-letter.schema.json"),
        Path("json/partner.schema.json"),
        Path("asyncapi.yaml"),
    }
    stale = [str(rel) for rel, text in rendered.items() if (ROOT / rel).read_text(encoding="utf-8") != text]
    assert not stale, f"run `python -m schemas.generate`; out of date: {stale}"
    assert generate.render() == rendered  # deterministic
    assert generate.main(["--check"]) == 0


def test_check_reports_drift(tmp_path: Path) -> None:
    for rel, text in generate.render().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert generate.differing(tmp_path) == []
    (tmp_path / "asyncapi.yaml").write_text("asyncapi: 3.0.0\n")
    (tmp_path / "json/partner.schema.json").unlink()
    assert sorted(map(str, generate.differing(tmp_path))) == ["asyncapi.yaml", "json/partner.schema.json"]


@pytest.mark.parametrize("name", sorted(generate.JSON_SCHEMAS))
def test_json_schemas_are_valid(name: str) -> None:
    doc = json.loads((ROOT / "json" / f"{name}.schema.json").read_text())
    Draft202012Validator.check_schema(doc)
    # what partners send is closed; Kafka records are open so readers tolerate new optional fields
    text = json.dumps(doc)
    assert ('"additionalProperties": false' in text) == (name == "exchange-event")


def test_json_schema_accepts_and_rejects_like_the_model() -> None:
    schema = json.loads((ROOT / "json/exchange-event.schema.json").read_text())
    validator = Draft202012Validator(schema)
    example = ExchangeEvent.model_json_schema()["examples"][0]
    assert not list(validator.iter_errors(example))
    assert list(validator.iter_errors({**example, "partner_id": "x"}))
    assert list(validator.iter_errors({**example, "description": "x" * 10240}))
    accepted = json.loads((ROOT / "json/accepted-event.schema.json").read_text())
    _, value, _ = encode_event(AcceptedEvent.model_validate(AcceptedEvent.model_json_schema()["examples"][0]))
    assert not list(Draft202012Validator(accepted).iter_errors(json.loads(value)))


# --- AsyncAPI 3.0.0 structural validation -----------------------------------------------


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "asyncapi.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"unresolvable $ref {ref}"
        node = node[part]
    return node


def walk_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        refs = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return refs + [r for v in node.values() for r in walk_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in walk_refs(v)]
    return []


def deref(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = resolve(doc, node["$ref"])
    return node


def test_asyncapi_top_level(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert set(doc) <= {
        "asyncapi", "id", "info", "servers", "defaultContentType", "channels", "operations", "components",
    }  # fmt: skip
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["servers"]["local"] == {
        "host": "127.0.0.1:9092",
        "protocol": "kafka",
        "description": doc["servers"]["local"]["description"],
    }


def test_asyncapi_secured_server_declares_what_the_broker_speaks(doc: dict[str, Any]) -> None:
    from handshake.security import MECHANISM

    secured = doc["servers"]["secured"]
    assert secured["protocol"] == "kafka-secure"  # AsyncAPI's name for Kafka over TLS
    (scheme,) = (deref(doc, s) for s in secured["security"])
    assert scheme["type"] == {"SCRAM-SHA-512": "scramSha512", "SCRAM-SHA-256": "scramSha256"}[MECHANISM]


def test_asyncapi_refs_resolve(doc: dict[str, Any]) -> None:
    refs = walk_refs(doc)
    assert refs
    for ref in refs:
        resolve(doc, ref)


def test_asyncapi_channels_match_topics(doc: dict[str, Any]) -> None:
    channels = doc["channels"]
    assert {c["address"] for c in channels.values()} == {t.name for t in TOPICS}
    by_topic = {t.name: t for t in TOPICS}
    for channel in channels.values():
        spec = by_topic[channel["address"]]
        kafka = channel["bindings"]["kafka"]
        assert kafka["topic"] == spec.name
        assert kafka["partitions"] == spec.partitions
        config = kafka["topicConfiguration"]
        assert config["cleanup.policy"] == [spec.config["cleanup.policy"]]
        assert isinstance(config["cleanup.policy"], list)
        if "retention.ms" in spec.config:
            assert config["retention.ms"] == int(spec.config["retention.ms"]) == 30 * 86_400_000
        assert set(config) <= {"cleanup.policy", "retention.ms"}
        assert channel["messages"]
        for message_ref in channel["messages"].values():
            message = deref(doc, message_ref)
            assert message["contentType"] == "application/json"
            key = message["bindings"]["kafka"]["key"]
            assert key["type"] == "string"
            payload = deref(doc, message["payload"])
            assert payload["type"] == "object"


def test_asyncapi_operations(doc: dict[str, Any]) -> None:
    used: set[str] = set()
    for op_id, op in doc["operations"].items():
        assert op["action"] in ("send", "receive"), op_id
        channel_ref = op["channel"]["$ref"]
        assert channel_ref.startswith("#/channels/")
        used.add(channel_ref.removeprefix("#/channels/"))
        for m in op["messages"]:
            # AsyncAPI 3: operation messages must reference the channel's own messages
            assert m["$ref"].startswith(channel_ref + "/messages/")
            resolve(doc, m["$ref"])
    assert used == set(doc["channels"])
    actions = {(op["channel"]["$ref"], op["action"]) for op in doc["operations"].values()}
    assert len(actions) == 2 * len(doc["channels"])


def test_asyncapi_schemas_are_valid_json_schemas(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert {"AcceptedEvent", "Delegation", "PairStats", "DeadLetter", "PartnerRecord"} <= set(schemas)
    for name, schema in schemas.items():
        # resolve component refs locally so the validator sees a self-contained schema
        standalone = {**schema, "components": {"schemas": schemas}}
        Draft202012Validator.check_schema(standalone)
        Draft7Validator.check_schema(schema)  # AsyncAPI's default schema format is a draft-07 superset
        assert "$defs" not in schema, name
        assert "prefixItems" not in json.dumps(schema), name
    for message in doc["components"]["messages"].values():
        if "headers" in message:
            Draft202012Validator.check_schema(message["headers"])
        Draft202012Validator.check_schema(message["bindings"]["kafka"]["key"])


def test_asyncapi_event_example_validates(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    root = {**schemas["AcceptedEvent"], "components": {"schemas": schemas}}
    validator = Draft202012Validator(root)
    message = doc["components"]["messages"]["ExchangeEventMessage"]
    for example in message["examples"]:
        assert not list(validator.iter_errors(example["payload"]))
    key, _value, headers = encode_event(AcceptedEvent.model_validate(message["examples"][0]["payload"]))
    assert not list(Draft202012Validator(message["headers"]).iter_errors({k: v.decode() for k, v in headers}))
    assert not list(Draft202012Validator(message["bindings"]["kafka"]["key"]).iter_errors(key.decode()))
