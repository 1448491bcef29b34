"""ingest's response shapes, for the OpenAPI document (the routes build their JSON directly)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class EventResult(BaseModel):
    status: Literal["accepted", "duplicate"]
    key: str = Field(description="the Kafka record key: partner_id/event_id")
    revision: int


class RecordErrorOut(BaseModel):
    pointer: str
    message: str
    code: str


class BatchRecordResult(BaseModel):
    index: int = Field(description="position of the record in the batch, from 0")
    line: int | None = Field(default=None, description="NDJSON line number, from 1")
    status: Literal["accepted", "duplicate", "rejected", "conflict", "unavailable"]
    key: str | None = None
    revision: int | None = None
    errors: list[RecordErrorOut] | None = None


class BatchResult(BaseModel):
    accepted: int
    duplicate: int
    rejected: int = Field(description="records that failed validation")
    conflict: int = Field(description="records refused by the revision rule")
    unavailable: int = Field(description="records Kafka did not acknowledge in time: resend them")
    results: list[BatchRecordResult]


class Health(BaseModel):
    status: str
    checks: dict[str, bool] = Field(default_factory=dict)
