"""Pure aggregation: contributions, corrections, replays, and a crash-replay state machine."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from schemas.events import AcceptedEvent
from schemas.pairs import event_checksum
from schemas.records import checksum_hex
from services.aggregator import domain, merge
from services.aggregator.testing import event_stream, make_event


def run(records: list[tuple[int, int, AcceptedEvent]], store: dict[str, Any] | None = None) -> dict[str, Any]:
    store = {} if store is None else store
    result = domain.process_batch(lambda _p, k: store.get(k), records)
    for _, key, value in result.writes:
        store[key] = value
    return store


def merged(store: dict[str, Any]) -> dict[str, Any]:
    """Snapshots from the partials in ``store`` (stage 1's: their months read from its day counts)."""
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in store.items():
        if key.startswith("p:"):
            pair, partition = domain.split_partial_key(key)
            if "by_month" not in value:
                months = domain.stored_months(store.get, pair, partition, value)
                value = {**value, "by_month": months}
            grouped.setdefault(pair, {})[str(partition)] = value
    return {pair: merge.merge_partials(pair, parts) for pair, parts in grouped.items()}


def publish(result: domain.BatchOutcome) -> list[tuple[str, int, Any, Any, bool]]:
    """The entries stage 1 publishes for a batch: (pair, partition, partial, months, full)."""
    return [
        (pair, partition, partial, result.months.get((pair, partition), {}), (pair, partition) in result.full)
        for (pair, partition), partial in result.touched.items()
    ]


def take(stage2: dict[str, Any], entries: list[tuple[str, int, Any, Any, bool]]) -> dict[str, Any]:
    """Stage 2 takes entries in order: ``stage2`` maps a partial key to its partial (read fresh,
    as from RocksDB); the keys it wrote, with their values."""
    writes: dict[str, Any] = {}
    for pair, partition, partial, months, full in entries:
        key = domain.partial_key(pair, partition)
        stored = writes[key] if key in writes else fresh(stage2.get(key))
        applied = merge.apply_entry(stored, partial, months, full)
        if applied is not None:
            writes[key] = applied
    for key, value in writes.items():
        stage2[key] = fresh(value)
    return writes


def fresh(value: Any) -> Any:
    """A value as a read from RocksDB gives it: a new object each time."""
    return None if value is None else orjson.loads(orjson.dumps(value))


def test_contribution_covers_host_and_third_country_pairs() -> None:
    event = make_event(host="US", delegations=[("CN", 10), ("FR", None)])
    contrib = domain.contribution(event)
    assert contrib["pairs"] == [["CN-FR", "third_country", 10], ["CN-US", "CN>US", 10], ["FR-US", "FR>US", 0]]
    assert contrib["checksum"] == event_checksum("partner-a", "e1")


def test_new_event_then_correction_with_country_change() -> None:
    first = make_event(host="US", delegations=[("CN", 10)], starts_on=date(2025, 4, 10), days=2)
    store = run([(0, 0, first)])
    stats = merged(store)["CN-US"]
    assert (stats.active_events, stats.participants, stats.version) == (1, 10, 1)
    assert stats.by_direction == {"CN>US": 1}
    assert stats.by_month == {"2025-04": 1}
    assert (stats.first_date, stats.last_date) == (date(2025, 4, 10), date(2025, 4, 10))
    assert stats.checksum == checksum_hex(event_checksum("partner-a", "e1"))
    second = make_event(revision=2, host="US", delegations=[("FR", 3)])
    run([(0, 1, second)], store)
    view = merged(store)
    assert merge.is_empty(view["CN-US"]) and view["CN-US"].version == 2
    assert view["CN-US"].first_date is None and view["CN-US"].checksum == "0" * 16
    assert (view["FR-US"].active_events, view["FR-US"].participants) == (1, 3)


def test_cancellation_leaves_active_counts() -> None:
    store = run([(0, 0, make_event()), (0, 1, make_event(revision=2, status="cancelled"))])
    stats = merged(store)["CN-US"]
    assert (stats.active_events, stats.cancelled, stats.participants, stats.by_status) == (0, 1, 0, {})


def test_duplicate_stale_and_conflict_change_nothing() -> None:
    store = run([(0, 0, make_event(revision=2))])
    before = dict(store)
    for offset, event, result in (
        (1, make_event(revision=2), "duplicate"),
        (2, make_event(revision=1, delegations=[("FR", 1)]), "stale"),
        (3, make_event(revision=2, title="other"), "conflict"),
    ):
        out = domain.process(lambda k: store.get(k), 0, offset, event)
        assert out.result == result and out.writes == [] and out.touched == {"CN-US"}
    assert store == before


def test_replay_at_same_offset_is_harmless() -> None:
    store = run([(0, 0, make_event()), (0, 1, make_event(revision=2, delegations=[("FR", 5)]))])
    before = {k: v for k, v in store.items()}
    run([(0, 1, make_event(revision=2, delegations=[("FR", 5)]))], store)
    assert merged(store) and merge.differences(merged(before), merged(store)) == {}


def test_recompute_uses_latest_revision_and_first_at_equal_revision() -> None:
    events = [
        make_event(revision=2, delegations=[("FR", 1)]),
        make_event(revision=1, delegations=[("DE", 1)]),
        make_event(revision=2, delegations=[("JP", 1)]),
    ]
    truth = merge.recompute(events)
    assert set(truth) == {"FR-US"}


def test_differences_ignores_empty_pairs() -> None:
    store = run([(0, 0, make_event()), (0, 1, make_event(revision=2, delegations=[("FR", 1)]))])
    truth = merge.recompute([make_event(revision=2, delegations=[("FR", 1)])])
    assert merge.differences(truth, merged(store)) == {}
    assert merge.differences(truth, {}) != {}


def test_processing_error_is_reported_not_raised() -> None:
    def broken(_p: int, key: str) -> Any:
        return {"revision": "x"} if key.startswith("e:") else None

    out = domain.process_batch(broken, [(0, 0, make_event(revision=2))])
    assert out.outcomes[0].result == "error" and out.writes == []


# --- the state machine ----------------------------------------------------------------

COUNTRIES = ["US", "CN", "FR", "DE"]
PARTITIONS = 3
DATES = [
    date(1950, 1, 5),
    date(2024, 1, 5),
    date(2024, 1, 20),
    date(2024, 3, 1),
    date(2025, 7, 9),
    date(2025, 7, 31),
]


@st.composite
def event_bodies(draw: st.DrawFn) -> dict[str, Any]:
    host = draw(st.sampled_from(COUNTRIES))
    others = [c for c in COUNTRIES if c != host]
    visitors = draw(st.lists(st.sampled_from(others), min_size=1, max_size=3, unique=True))
    return {
        "host": host,
        "delegations": [(c, draw(st.none() | st.integers(0, 50))) for c in visitors],
        "status": draw(st.sampled_from(["announced", "confirmed", "completed", "cancelled"])),
        "kind": draw(st.sampled_from(["athletic", "civic"])),
        # several dates in a month and several months: retracting a first or last date must find
        # the next one, within its month or in another
        "starts_on": draw(st.sampled_from(DATES)),
        "days": draw(st.integers(0, 3)),
    }


def lost_suffixes(data: st.DataObject, items: Iterable[tuple[Any, int]]) -> set[int]:
    """A crash: of each group's indexes (``items``: (group, index), in order), any suffix is lost."""
    groups: dict[Any, list[int]] = {}
    for group, index in items:
        groups.setdefault(group, []).append(index)
    return {
        i for _, indexes in sorted(groups.items()) for i in indexes[data.draw(st.integers(0, len(indexes))) :]
    }


class Aggregation(RuleBasedStateMachine):
    """Stage 1 + stage 2 under adds, corrections, duplicates, stale revisions, replays and crashes."""

    FRESH = False  # whether reads return new objects (process_batch(..., fresh=True))

    @initialize()
    def setup(self) -> None:
        self.topic: list[tuple[int, int, AcceptedEvent]] = []  # (partition, offset, event)
        self.offsets = [0] * PARTITIONS
        self.processed = 0  # records of self.topic processed so far
        self.log: list[tuple[int, int, str, Any]] = []  # changelog: (batch index, partition, key, value)
        self.batches: list[tuple[int, int]] = []  # record index range of each batch
        self.store: dict[str, Any] = {}
        self.published: list[tuple[str, int, Any, Any, bool]] = []  # internal topic
        self.sent = 0  # entries before this index are acknowledged
        self.latest: dict[str, AcceptedEvent] = {}
        self.committed = 0  # records before this index are committed
        self.durable = 0  # changelog entries before this index are acknowledged
        # stage 2: its store, its changelog (partition, key, value), the entries of
        # self.published it took, and what of both is committed / acknowledged
        self.stage2: dict[str, Any] = {}
        self.stage2_log: list[tuple[int, str, Any]] = []
        self.stage2_taken = 0
        self.stage2_committed = 0
        self.stage2_durable = 0
        self.rescan: dict[int, int] = {}  # partition -> its committed offset, until its first batch

    def _send(self, event: AcceptedEvent) -> None:
        key = f"{event.partner_id}/{event.event_id}"
        partition = sum(key.encode()) % PARTITIONS
        self.topic.append((partition, self.offsets[partition], event))
        self.offsets[partition] += 1
        self.latest.setdefault(key, event)
        if event.revision > self.latest[key].revision:
            self.latest[key] = event

    @rule(partner=st.sampled_from(["pa", "pb"]), n=st.integers(0, 5), body=event_bodies())
    def send_new_or_any_revision(self, partner: str, n: int, body: dict[str, Any]) -> None:
        key = f"{partner}/e{n}"
        revision = self.latest[key].revision + 1 if key in self.latest else 1
        self._send(make_event(partner, f"e{n}", revision=revision, **body))

    @precondition(lambda self: bool(self.latest))
    @rule(data=st.data(), body=event_bodies(), kind=st.sampled_from(["duplicate", "stale", "conflict"]))
    def send_old(self, data: st.DataObject, body: dict[str, Any], kind: str) -> None:
        current = data.draw(st.sampled_from(sorted(self.latest)))
        event = self.latest[current]
        if kind == "duplicate":
            self._send(event)
        elif kind == "conflict":
            self._send(make_event(event.partner_id, event.event_id, revision=event.revision, **body))
        elif event.revision > 1:
            self._send(make_event(event.partner_id, event.event_id, revision=event.revision - 1, **body))

    def _process(self, start: int, end: int) -> None:
        batch = len(self.batches)
        self.batches.append((start, end))
        # a partition's first batch since the crash republishes what the crash may have lost
        first = domain.BatchOutcome()
        for partition in sorted({p for p, _, _ in self.topic[start:end]} & set(self.rescan)):
            found = [
                (k, v)
                for k, v in sorted(self.store.items())
                if k.startswith("p:") and domain.split_partial_key(k)[1] == partition
            ]
            first.then(domain.republish(self.store.get, found, self.rescan.pop(partition)))
        if self.FRESH:  # reads decode anew, as the app's RocksDB reads do: updated in place

            def get(_p: int, key: str) -> Any:
                value = self.store.get(key)
                return None if value is None else orjson.loads(orjson.dumps(value))

            result = domain.process_batch(get, self.topic[start:end], fresh=True)
        else:
            result = domain.process_batch(lambda _p, k: self.store.get(k), self.topic[start:end])
        for partition, key, value in result.writes:
            self.store[key] = value
            self.log.append((batch, partition, key, value))
        first.then(result)
        self.published.extend(publish(first))

    @precondition(lambda self: self.processed < len(self.topic))
    @rule(size=st.integers(1, 6))
    def process(self, size: int) -> None:
        end = min(len(self.topic), self.processed + size)
        self._process(self.processed, end)
        self.processed = end

    @precondition(lambda self: self.processed > 0)
    @rule(data=st.data())
    def replay_one(self, data: st.DataObject) -> None:
        """Redeliver an earlier record at its original offset (at-least-once)."""
        index = data.draw(st.integers(0, self.processed - 1))
        self._process(index, index + 1)

    @rule()
    def commit(self) -> None:
        """faust flushes the producer, then commits: everything so far is durable."""
        self.committed = self.processed
        self.durable = len(self.log)
        self.sent = len(self.published)
        self.stage2_committed = self.stage2_taken
        self.stage2_durable = len(self.stage2_log)

    @rule()
    def acknowledge_partials(self) -> None:
        """The broker acknowledged the entries published so far: stage 2 may read them."""
        self.sent = len(self.published)

    @precondition(lambda self: self.stage2_taken < self.sent)
    @rule(size=st.integers(1, 8))
    def stage2_take(self, size: int) -> None:
        """Stage 2 takes a batch of the acknowledged entries; each key it writes is a record of
        its changelog partition (the pair's), kept or lost on its own."""
        end = min(self.sent, self.stage2_taken + size)
        writes = take(self.stage2, self.published[self.stage2_taken : end])
        for key, value in writes.items():
            partition = sum(domain.split_partial_key(key)[0].encode()) % 2
            self.stage2_log.append((partition, key, value))
        self.stage2_taken = end

    @precondition(lambda self: len(self.topic) - self.processed >= 2)
    @rule(size=st.integers(2, 8), data=st.data())
    def process_out_of_order(self, size: int, data: st.DataObject) -> None:
        """After a rebalance, a partition's later records may arrive before earlier ones."""
        end = min(len(self.topic), self.processed + size)
        cut = data.draw(st.integers(self.processed + 1, end - 1))
        versions = [(e.partner_id, e.event_id, e.revision) for _, _, e in self.topic[self.processed : end]]
        if len(set(versions)) < len(versions):
            # the first of two records at one revision wins: that needs topic order (ingest
            # never accepts the second, so this only arises here)
            cut = self.processed
        self._process(cut, end)
        self._process(self.processed, cut)
        self.processed = end

    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        """Lose any suffix of each partition's unflushed write units, and of each pair's unflushed
        entries on the partials topic (independently), then reprocess from the commit.

        A unit is one batch's writes for one partition: the aggregator sends it as one Kafka
        record batch and writes it to RocksDB in one write batch, so it is kept whole or lost.
        """
        # each pair's unacknowledged entries
        lost = lost_suffixes(data, ((self.published[i][0], i) for i in range(self.sent, len(self.published))))
        self.published = [entry for i, entry in enumerate(self.published) if i not in lost]
        self.sent = min(self.sent, len(self.published))
        units: dict[int, list[int]] = {}  # partition -> its unflushed batches, in order
        for batch, partition, _, _ in self.log[self.durable :]:
            seen = units.setdefault(partition, [])
            if not seen or seen[-1] != batch:
                seen.append(batch)
        kept = {p: set(b[: data.draw(st.integers(0, len(b)))]) for p, b in sorted(units.items())}
        self.log = self.log[: self.durable] + [
            entry for entry in self.log[self.durable :] if entry[0] in kept[entry[1]]
        ]
        self.durable = min(self.durable, len(self.log))
        self.store = {}
        for _, _, key, value in self.log:
            self.store[key] = value
        # stage 2: each of its changelog partitions keeps a prefix of its unacknowledged records,
        # and it takes again from its commit
        pending = ((self.stage2_log[i][0], i) for i in range(self.stage2_durable, len(self.stage2_log)))
        dropped = lost_suffixes(data, pending)
        self.stage2_log = [record for i, record in enumerate(self.stage2_log) if i not in dropped]
        self.stage2_durable = min(self.stage2_durable, len(self.stage2_log))
        self.stage2 = {key: value for _, key, value in self.stage2_log}
        self.stage2_taken = self.stage2_committed
        # delivery starts again at the committed offset of each partition
        self.rescan = {p: 0 for p in range(PARTITIONS)}
        for partition, _, _ in self.topic[: self.committed]:
            self.rescan[partition] += 1
        position = self.committed
        while position < self.processed:
            end = min(self.processed, position + data.draw(st.integers(1, 6)))
            self._process(position, end)
            position = end

    @invariant()
    def incremental_equals_batch(self) -> None:
        if self.processed < len(self.topic):
            return
        truth = merge.recompute([e for _, _, e in self.topic])
        got = merged(self.store)
        assert merge.differences(truth, got) == {}
        # stage 2: newest-by-updates wins, regardless of replays of the internal topic, and the
        # months laid over stay exact though a crash lost some entries, or some of its own records
        view = dict(self.stage2)
        take(view, self.published[self.stage2_taken :])
        stage2 = merged(view)
        assert merge.differences(truth, stage2) == {}
        for pair, stats in stage2.items():
            assert stats.version == got[pair].version


class FreshReadsAggregation(Aggregation):
    FRESH = True


TestAggregation = Aggregation.TestCase
TestFreshReadsAggregation = FreshReadsAggregation.TestCase
TestAggregation.settings = TestFreshReadsAggregation.settings = settings(
    max_examples=300,
    stateful_step_count=30,
    report_multiple_bugs=False,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@given(st.sampled_from(["CN-US", "DE-FR", "ABCD-XY"]), st.integers(min_value=0, max_value=10_000))
def test_partial_keys_split_back_into_pair_and_partition(pair: str, partition: int) -> None:
    assert domain.split_partial_key(domain.partial_key(pair, partition)) == (pair, partition)
    assert domain.split_day_key(domain.day_key(pair, partition, "1950-01")) == (pair, partition, "1950-01")


def test_a_first_batch_republishes_every_partial_changed_since_the_commit_with_its_whole_months() -> None:
    """A crash may store a batch's writes but lose the partials it published: delivery starts
    again at the committed offset, and what changed from there is republished whole."""
    events = [
        make_event("pa", "e1", host="FR", delegations=[("DE", 1)], starts_on=date(2024, 1, 5)),
        make_event("pa", "e2", host="US", delegations=[("CN", 1)], starts_on=date(1950, 1, 5)),
        make_event("pa", "e3", host="US", delegations=[("CN", 1)], starts_on=date(2026, 3, 1)),
    ]
    store = run([(0, offset, event) for offset, event in enumerate(events)])
    store["p:AB-CD:0"] = {
        **domain.empty_partial(),
        "by_month": {"1999-01": 1},
        "last_offset": 9,
    }  # earlier form
    found = [(k, v) for k, v in sorted(store.items()) if k.startswith("p:")]
    out = domain.republish(store.get, found, since=2)  # CN-US changed at 1 and 2, DE-FR at 0
    assert set(out.touched) == {("CN-US", 0), ("AB-CD", 0)}
    assert out.months[("CN-US", 0)] == {"1950-01": 1, "2026-03": 1} and ("CN-US", 0) in out.full
    assert ("AB-CD", 0) not in out.full and ("AB-CD", 0) not in out.months  # carries its months
    assert domain.republish(store.get, found, since=10).touched == {}


def test_a_later_outcome_is_laid_over_an_earlier_one() -> None:
    first, later = domain.BatchOutcome(), domain.BatchOutcome()
    first.touched[("CN-US", 0)] = {"updates": 1}
    first.months[("CN-US", 0)] = {"1950-01": 1, "2026-03": 1}
    first.full.add(("CN-US", 0))
    later.touched[("CN-US", 0)] = {"updates": 2}
    later.months[("CN-US", 0)] = {"1950-01": 0}
    first.then(later)
    assert first.touched[("CN-US", 0)] == {"updates": 2} and ("CN-US", 0) in first.full
    assert first.months[("CN-US", 0)] == {"1950-01": 0, "2026-03": 1}
    whole = domain.BatchOutcome(months={("CN-US", 0): {"1987-01": 2}}, full={("CN-US", 0)})
    first.then(whole)
    assert first.months[("CN-US", 0)] == {"1987-01": 2}


# --- first and last dates under retraction ----------------------------------------------

DAYS = [date(1950, 1, 1) + timedelta(days=d) for d in (0, 3, 40, 9_000, 27_000, 27_010, 28_000)]


@given(st.lists(st.tuples(st.sampled_from(DAYS), st.booleans()), max_size=40), st.booleans())
def test_first_and_last_date_follow_adds_and_retractions(ops: list[tuple[date, bool]], months: bool) -> None:
    """Against the multiset of active dates: retracting a first or last date finds the next one,
    in its month or another (a pair's history may span 1950-2026), with or without ``by_month``;
    the months read from the day counts are those of the active dates."""
    partial, days, active = domain.empty_partial(months), domain.MemoryDays(), Counter[date]()
    for day, add in ops:
        if not add and not active[day]:
            continue  # only what was added can be retracted
        event = make_event(starts_on=day)
        domain.add_contribution(partial, domain.contribution(event), "CN-US", 1 if add else -1, days)
        active[day] += 1 if add else -1
        alive = [d.isoformat() for d, n in active.items() if n > 0]
        assert (partial["first_date"], partial["last_date"]) == (
            (min(alive), max(alive)) if alive else (None, None)
        )
        assert sum(n for month in days.months.values() for n in month.values()) == partial["active_events"]
        by_month = Counter(d.isoformat()[:7] for d in active.elements())
        assert domain.months_of(partial, days) == dict(by_month) == partial.get("by_month", by_month)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batches_of_a_long_stream_end_at_the_ground_truth(seed: int) -> None:
    """Many events per pair over 700 days, corrected and cancelled, in batches over partitions."""
    rng = random.Random(seed)
    events = list(event_stream(rng, 600, correction_rate=0.35))
    records, offsets = [], [0, 0, 0]
    for event in events:
        partition = sum(f"{event.partner_id}/{event.event_id}".encode()) % 3
        records.append((partition, offsets[partition], event))
        offsets[partition] += 1
    store: dict[str, Any] = {}
    while records:
        size = rng.randint(1, 50)
        run(records[:size], store)
        records = records[size:]
    assert merge.differences(merge.recompute(events), merged(store)) == {}


def legacy(store: dict[str, Any], dates: bool) -> dict[str, Any]:
    """The store as earlier releases kept it: every month's count in the partial, and with
    ``dates`` also every date's, and no ``d:`` keys (then its first and last date were not kept)."""
    out = {k: v for k, v in store.items() if not (dates and k.startswith("d:"))}
    for key, value in store.items():
        if key.startswith("p:"):
            pair, partition = domain.split_partial_key(key)
            old = {**value, "by_month": domain.stored_months(store.get, pair, partition, value)}
            if dates:
                counts: dict[str, int] = {}
                for month_key, days in store.items():
                    if month_key.startswith(key.replace("p:", "d:", 1) + ":"):
                        counts.update(days)
                old = {k: v for k, v in old.items() if k not in ("first_date", "last_date")}
                old["dates"] = counts
            out[key] = old
    return out


@pytest.mark.parametrize("dates", [True, False], ids=["dates", "months"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_partials_of_an_earlier_release_are_converted_when_touched(seed: int, dates: bool) -> None:
    rng = random.Random(seed)
    events = list(event_stream(rng, 400, correction_rate=0.35))
    records = [(0, offset, event) for offset, event in enumerate(events)]
    cut = rng.randint(100, 300)
    end = cut + 15  # a few new records: some partials stay in the old form
    old = legacy(run(records[:cut]), dates)
    stage2 = {k: v for k, v in old.items() if k.startswith("p:")}  # stage 2 holds old ones too
    store = dict(old)
    result = domain.process_batch(lambda _p, k: store.get(k), records[cut - 20 : end])  # replays too
    for _, key, value in result.writes:
        store[key] = value
    take(stage2, publish(result))
    truth = merge.recompute(events[:end])
    assert merge.differences(truth, merged(store)) == {}
    assert merge.differences(truth, merged(stage2)) == {}
    written = [value for _, key, value in result.writes if key.startswith("p:")]
    assert written and not any("dates" in value or "by_month" in value for value in written)
    upgraded = {k for _, k, _ in result.writes if k.startswith("p:") and k in old}
    assert upgraded and {domain.partial_key(*at) for at in result.full} >= upgraded  # whole months
    old_form = "dates" if dates else "by_month"
    assert any(old_form in value for value in store.values()), "some partials stay in the old form"
    assert any(old_form in value for value in result.touched.values()), "a replay publishes one as is"
