"""Demo feed generation and `handshake push` parsing (pure, no broker)."""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from handshake.demo import DemoGenerator
from handshake.push import BATCH_RECORDS, batches, csv_row_to_event, read_lines
from schemas.events import EventValidationError, parse_event


def test_demo_events_are_valid_and_realistic() -> None:
    gen = DemoGenerator(seed=3, today=date(2026, 6, 1))
    actions = [a for _, a in zip(range(2000), gen.actions(), strict=False)]
    posts = [p for verb, p in actions if verb == "post"]
    deletes = [p for verb, p in actions if verb == "delete"]
    for payload in posts:
        parse_event(payload)  # raises on any invalid demo event
    kinds = Counter(p["kind"] for p in posts)
    assert set(kinds) == {
        "athletic",
        "cultural",
        "civic",
        "educational",
        "scientific",
        "professional",
        "humanitarian",
    }
    assert any(p["revision"] > 1 for p in posts), "corrections are part of the mix"
    assert deletes, "cancellations are part of the mix"
    assert any(len(p["delegations"]) >= 3 for p in posts), "tournaments bring several delegations"
    assert any(p["kind"] == "civic" and "sister city" in p["title"] for p in posts)
    starts = [date.fromisoformat(p["starts_on"]) for p in posts]
    assert min(starts) < date(2026, 1, 1) < date(2026, 6, 1) < max(starts), (
        "dates span past and coming months"
    )


def test_demo_is_deterministic_per_seed() -> None:
    a = [x for _, x in zip(range(50), DemoGenerator(seed=9, today=date(2026, 1, 1)).actions(), strict=False)]
    b = [x for _, x in zip(range(50), DemoGenerator(seed=9, today=date(2026, 1, 1)).actions(), strict=False)]
    assert a == b


def test_csv_rows_become_events(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,kind,title,host_country,delegations,starts_on,tags,revision\n"
        "e1,cultural,Jazz week,FR,US:12;DEU,2026-06-01,music;jazz,2\n"
        "e2,athletic,Cup,JP,,2026-07-01,,\n",
        encoding="utf-8",
    )
    lines = list(read_lines(path))
    assert len(lines) == 2
    first = parse_event(__import__("orjson").loads(lines[0]))
    assert first.revision == 2
    assert [d.country for d in first.delegations] == ["US", "DE"]
    assert first.delegations[0].participants == 12
    assert first.tags == ["music", "jazz"]
    with pytest.raises(EventValidationError):  # no delegations: the server will say so per record
        parse_event(__import__("orjson").loads(lines[1]))


def test_csv_keeps_bad_participants_for_the_server_to_reject() -> None:
    event = csv_row_to_event({"delegations": "US:many"})
    assert event["delegations"] == [{"country": "US", "participants": "many"}]


def test_batches_respect_record_limit() -> None:
    lines = [b"{}"] * (BATCH_RECORDS * 2 + 5)
    sizes = [len(b) for b in batches(iter(lines))]
    assert sizes == [BATCH_RECORDS, BATCH_RECORDS, 5]


def test_cluster_id_never_starts_with_a_dash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-storage reads a cluster id starting with "-" as an option (a CI run hit one):
    like Kafka's Uuid.randomUuid, such ids are drawn again."""
    import uuid

    from handshake.broker import Cluster

    drawn = iter([uuid.UUID(bytes=b"\xf8" + b"\x00" * 15), uuid.UUID(bytes=b"\x10" * 16)])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(drawn))
    cid = Cluster(tmp_path / "kafka").cluster_id()
    assert not cid.startswith("-")
    assert cid == "EBAQEBAQEBAQEBAQEBAQEA"
    assert Cluster(tmp_path / "kafka").cluster_id() == cid  # kept in the data dir
