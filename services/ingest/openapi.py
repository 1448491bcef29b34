"""ingest's OpenAPI document: the description, the event schema from the contract, request bodies."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from schemas.events import ExchangeEvent
from services.ingest.bodies import JSON, NDJSON

DESCRIPTION = """
Partners push citizen-diplomacy exchange events. Every `/v1` call needs
`Authorization: Bearer <partner key>`; a missing, malformed, unknown or revoked key gets the
same `401`.

A `2xx` is sent only after Kafka acknowledged the record (`acks=all`, idempotent producer).
When Kafka cannot acknowledge within the bound, the answer is `503` with `Retry-After`:
resend the same event (same `event_id` and `revision`); if the first attempt did land, the
resend is answered `duplicate`.

**Revision rules** (per partner and `event_id`):

| stored | sent | result |
|---|---|---|
| nothing | any revision | `accepted` |
| revision r | revision > r | `accepted` (a correction) |
| revision r | revision r, same content | `duplicate` (`202`, nothing is written) |
| revision r | revision r, other content | `409` conflict |
| revision r | revision < r | `409` stale |

`DELETE /v1/events/{event_id}` writes a copy of the latest stored revision with
`status=cancelled` and `revision + 1`; cancelling twice answers `duplicate`. Record keys are
always `{your partner_id}/{event_id}`: another partner's events cannot be addressed at all
(they are simply not found).

Errors are RFC 9457 `application/problem+json`; validation errors list every field problem
as a JSON pointer with a message. Malformed JSON, invalid UTF-8 or JSON nested deeper than
32 levels is `400`. Each partner has a rate (events per second, with a burst); a batch costs
one token per record; over the rate the answer is `429` with `Retry-After` (a batch sent while
the partner is already over its rate is refused before its body is read).

A body over the limit (5 MiB by default) is refused with `413` as soon as that is known; an
answer sent before the whole body was read carries `Connection: close`, and the connection
closes after the rest of the body has been read and discarded (up to twice the limit, for a
few seconds at most), so a client that writes its whole request before reading still gets it.
"""


def event_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    schema = ExchangeEvent.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return schema, defs


SINGLE_BODY = {
    "requestBody": {
        "required": True,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/ExchangeEvent"}}},
    }
}


def batch_body(max_records: int) -> dict[str, Any]:
    """The batch body as it is accepted: any JSON values as records, each judged on its own (an
    invalid record gets its errors in its result, it never fails the batch)."""
    return {
        "requestBody": {
            "required": True,
            "description": (
                f"a JSON array, or NDJSON (one record per line), of 1 to {max_records} records. Each "
                "record is validated as an ExchangeEvent on its own: an invalid one (of any JSON value) "
                "is reported in its result with status `rejected` and its errors, and never blocks the others"
            ),
            "content": {
                JSON: {
                    "schema": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": max_records,
                        "items": {"description": "a record: valid when it is an ExchangeEvent"},
                    }
                },
                NDJSON: {
                    "schema": {
                        "type": "string",
                        # at least one line that is not blank (bytes.strip()'s ASCII whitespace)
                        "pattern": "[^\\t\\n\\x0b\\x0c\\r ]",
                        "description": f"one record (JSON) per line, blank lines skipped; 1 to {max_records} records",
                    }
                },
            },
        }
    }


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        event, defs = event_schema()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(defs)
        components["ExchangeEvent"] = event
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
