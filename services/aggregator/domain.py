"""Pure aggregation logic of the aggregator (no Kafka, no faust).

Stage 1 keeps, per source partition, one state store with two kinds of keys:

- ``e:{record key}``: the latest accepted state of an event (:class:`EventState`);
- ``p:{pair}:{partition}``: the *partial* aggregate of a pair from that source partition.

:func:`process` turns one record at offset ``o`` into a list of writes: the partials it changes
and the event state. The aggregator persists the writes of a batch for one source partition as
one unit (one Kafka record batch on the changelog, one RocksDB write batch), so a stored event
state always comes with the partials it changed. Whether a record is new is therefore decided
by the event state alone: written at offset ``o``, it is a replay and changes nothing; a higher
revision is applied (its previous contribution subtracted); an older or equal one changes
nothing. The outcome does not depend on the order in which records of different events arrive,
nor on redelivery: a partition's records may be replayed, or even delivered out of offset
order after a rebalance, without being lost or counted twice. Stage 2 (:func:`merge_partials`)
sums the partials of a pair into a :class:`~schemas.records.PairStats` whose ``version`` is the
sum of the partials' ``updates``.

:func:`recompute` is the ground truth: a batch computation from the latest revision of every
event, used by the tests (and the fault suite) to reconcile the incremental aggregates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from schemas.acceptance import Verdict, is_active, judge, latest_revisions
from schemas.events import AcceptedEvent, content_hash
from schemas.pairs import CHECKSUM_MOD, contributions, event_checksum, month_of
from schemas.records import PairStats, checksum_hex, event_key

# JSON-able values kept in the tables and on the internal topic
Contribution = dict[str, Any]
Partial = dict[str, Any]
EventState = dict[str, Any]

COUNT_FIELDS = ("by_kind", "by_status", "by_direction", "by_month", "dates")


def event_state_key(record_key: str) -> str:
    return f"e:{record_key}"


def partial_key(pair: str, partition: int) -> str:
    return f"p:{pair}:{partition}"


def split_partial_key(key: str) -> tuple[str, int]:
    """(pair, partition) of a :func:`partial_key`."""
    _, pair, partition = key.split(":")
    return pair, int(partition)


def contribution(event: AcceptedEvent) -> Contribution:
    """What one event contributes to each of its pairs (JSON-able)."""
    return {
        "kind": event.kind.value,
        "status": event.status.value,
        "month": month_of(event.starts_on),
        "date": event.starts_on.isoformat(),
        "checksum": event_checksum(event.partner_id, event.event_id),
        "cancelled": not is_active(event.status),
        "pairs": [[c.pair, c.direction, c.participants] for c in contributions(event)],
    }


def empty_partial() -> Partial:
    return {
        "active_events": 0,
        "participants": 0,
        "by_kind": {},
        "by_status": {},
        "by_direction": {},
        "by_month": {},
        "cancelled": 0,
        "dates": {},  # starts_on -> active events: first/last date stay exact under subtraction
        "checksum": 0,
        "updates": 0,
        "last_offset": -1,
    }


def _bump(counts: dict[str, int], name: str, delta: int) -> None:
    value = counts.get(name, 0) + delta
    if value:
        counts[name] = value
    else:
        counts.pop(name, None)


def add_contribution(partial: Partial, contrib: Contribution, pair: str, sign: int) -> None:
    """Add (sign=+1) or subtract (sign=-1) ``contrib``'s share of ``pair`` to ``partial`` in place."""
    for p, direction, participants in contrib["pairs"]:
        if p != pair:
            continue
        if contrib["cancelled"]:
            partial["cancelled"] += sign
            return
        partial["active_events"] += sign
        partial["participants"] += sign * participants
        _bump(partial["by_kind"], contrib["kind"], sign)
        _bump(partial["by_status"], contrib["status"], sign)
        _bump(partial["by_direction"], direction, sign)
        _bump(partial["by_month"], contrib["month"], sign)
        _bump(partial["dates"], contrib["date"], sign)
        partial["checksum"] = (partial["checksum"] + sign * contrib["checksum"]) % CHECKSUM_MOD
        return


def pairs_of(contrib: Contribution | None) -> set[str]:
    return {p for p, _, _ in contrib["pairs"]} if contrib else set()


@dataclass
class Outcome:
    """The result of processing one record: writes in order (event state last), touched pairs."""

    result: str  # applied | duplicate | stale | conflict | replayed | error
    writes: list[tuple[str, Any]] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    partials: dict[str, Partial] = field(default_factory=dict)  # pair -> current partial
    error: str | None = None


Getter = Callable[[str], Any]


def process(
    get: Getter, partition: int, offset: int, event: AcceptedEvent, owned: set[str] | None = None
) -> Outcome:
    """Apply the record at (partition, offset) carrying ``event`` to the state read by ``get``.

    Values returned by ``get`` are never modified, except partials whose key is in ``owned``
    (copies this batch already made); keys of partials copied here are added to ``owned``.
    """
    key = event_state_key(event_key(event.partner_id, event.event_id))
    state: EventState | None = get(key)
    chash = content_hash(event)
    if state is not None:
        if state["offset"] == offset:  # written by this very record: already applied
            return _touch_only(get, partition, state, "replayed")
        verdict = judge(state["revision"], state["hash"], event.revision, chash)
        if verdict is not Verdict.applied:
            return _touch_only(get, partition, state, verdict.value)
    old = state["current"] if state is not None else None
    new = contribution(event)
    out = Outcome(result="applied")
    for pair in pairs_of(old) | pairs_of(new):
        out.touched.add(pair)
        pk = partial_key(pair, partition)
        partial: Partial | None = get(pk)
        if partial is None:
            partial = empty_partial()
        elif owned is None or pk not in owned:
            partial = _copy(partial)
        if owned is not None:
            owned.add(pk)
        if old is not None:
            add_contribution(partial, old, pair, -1)
        if new is not None:
            add_contribution(partial, new, pair, +1)
        partial["updates"] += 1
        partial["last_offset"] = max(partial["last_offset"], offset)
        out.writes.append((pk, partial))
        out.partials[pair] = partial
    out.writes.append(
        (key, {"revision": event.revision, "hash": chash, "offset": offset, "current": new, "previous": old})
    )
    return out


@dataclass
class BatchOutcome:
    """A batch's coalesced writes (partials, then event states; each key once)."""

    writes: list[tuple[int, str, Any]] = field(default_factory=list)  # (partition, key, value)
    outcomes: list[Outcome] = field(default_factory=list)
    touched: dict[tuple[str, int], Partial] = field(default_factory=dict)  # (pair, partition) -> partial


PartitionGetter = Callable[[int, str], Any]


def process_batch(
    get: PartitionGetter, records: Iterable[tuple[int, int, AcceptedEvent]], fresh: bool = False
) -> BatchOutcome:
    """:func:`process` over (partition, offset, event) records, writes coalesced per key.

    ``get(partition, key)`` reads the stored state of a source partition; ``fresh`` says that it
    returns a new object at every call (decoded from bytes), which may then be updated in place
    instead of copied. The writes of each partition must be persisted as one unit (all or
    nothing): see the module documentation.
    """
    overlay: dict[str, tuple[int, Any]] = {}
    owned: set[str] = set()  # partials this batch may update in place (copied, or read fresh)

    def reader(partition: int) -> Getter:
        def read(key: str) -> Any:
            hit = overlay.get(key)
            if hit is not None:
                return hit[1]
            value = get(partition, key)
            if fresh and value is not None and key.startswith("p:"):
                owned.add(key)
            return value

        return read

    out = BatchOutcome()
    for partition, offset, event in records:
        try:
            outcome = process(reader(partition), partition, offset, event, owned)
        except Exception as exc:  # a record that breaks the logic is dead-lettered, never retried
            out.outcomes.append(Outcome(result="error", error=f"{type(exc).__name__}: {exc}"))
            continue
        for key, value in outcome.writes:
            overlay[key] = (partition, value)
        for pair, partial in outcome.partials.items():
            out.touched[(pair, partition)] = partial
        out.outcomes.append(outcome)
    partials = [(p, k, v) for k, (p, v) in overlay.items() if k.startswith("p:")]
    states = [(p, k, v) for k, (p, v) in overlay.items() if not k.startswith("p:")]
    out.writes = partials + states
    return out


def _touch_only(get: Getter, partition: int, state: EventState, result: str) -> Outcome:
    """Nothing changes, but the event's pairs are republished (a replay may follow a crash)."""
    out = Outcome(result=result)
    for pair in pairs_of(state["current"]) | pairs_of(state["previous"]):
        partial = get(partial_key(pair, partition))
        if partial is not None:
            out.touched.add(pair)
            out.partials[pair] = partial
    return out


def _copy(partial: Partial) -> Partial:
    out = dict(partial)
    for name in COUNT_FIELDS:
        out[name] = dict(partial[name])
    return out


# --- stage 2 --------------------------------------------------------------------------


def stage2_key(pair: str, partition: int) -> str:
    """Stage 2 keeps one key per (pair, source partition): a change rewrites only that partial."""
    return f"{pair}:{partition}"


def accept_partial(stored: Partial | None, partial: Partial) -> bool:
    """Whether an incoming partial (from the internal topic) is at least as new as the stored one.

    ``>=``: an equal one is accepted again, so a replay republishes a snapshot that a crash lost.
    """
    return stored is None or partial["updates"] >= stored["updates"]


def sum_partials(partials: Iterable[Partial]) -> Partial:
    total = empty_partial()
    for part in partials:
        for name in ("active_events", "participants", "cancelled", "updates"):
            total[name] += part[name]
        for name in COUNT_FIELDS:
            for k, v in part[name].items():
                _bump(total[name], k, v)
        total["checksum"] = (total["checksum"] + part["checksum"]) % CHECKSUM_MOD
        total["last_offset"] = max(total["last_offset"], part["last_offset"])
    return total


def merge_partials(
    pair: str, partials: Mapping[str, Partial], updated_at: datetime | None = None
) -> PairStats:
    """The snapshot of a pair from its per-partition partials; version = sum of updates."""
    total = sum_partials(partials.values())
    return to_pair_stats(pair, total, version=total["updates"], updated_at=updated_at)


def to_pair_stats(pair: str, total: Partial, version: int, updated_at: datetime | None = None) -> PairStats:
    a, b = pair.split("-")
    dates = [d for d, n in total["dates"].items() if n > 0]
    return PairStats(
        pair=pair,
        countries=(a, b),
        version=version,
        active_events=total["active_events"],
        participants=total["participants"],
        by_kind=dict(total["by_kind"]),
        by_status=dict(total["by_status"]),
        by_direction=dict(total["by_direction"]),
        by_month=dict(total["by_month"]),
        cancelled=total["cancelled"],
        first_date=date.fromisoformat(min(dates)) if dates else None,
        last_date=date.fromisoformat(max(dates)) if dates else None,
        checksum=checksum_hex(total["checksum"]),
        updated_at=updated_at or datetime.now(UTC),
    )


# --- ground truth ---------------------------------------------------------------------


def recompute_partials(events: Iterable[AcceptedEvent]) -> dict[str, Partial]:
    """Batch computation of every pair's totals from the latest revision of every event."""
    totals: dict[str, Partial] = {}
    for event in latest_revisions(events).values():
        contrib = contribution(event)
        for pair in pairs_of(contrib):
            add_contribution(totals.setdefault(pair, empty_partial()), contrib, pair, +1)
    return totals


def recompute(events: Iterable[AcceptedEvent]) -> dict[str, PairStats]:
    """Ground truth: pair -> PairStats (version 0) from the events' latest revisions."""
    at = datetime.now(UTC)
    return {
        pair: to_pair_stats(pair, total, version=0, updated_at=at)
        for pair, total in sorted(recompute_partials(events).items())
    }


def comparable(stats: PairStats) -> dict[str, Any]:
    """The fields that must match ground truth exactly (not version/updated_at)."""
    return stats.model_dump(mode="json", exclude={"version", "updated_at"})


def is_empty(stats: PairStats) -> bool:
    return stats.active_events == 0 and stats.cancelled == 0 and stats.participants == 0


def differences(truth: Mapping[str, PairStats], got: Mapping[str, PairStats]) -> dict[str, Any]:
    """Pairs whose comparable fields differ (a pair missing on one side must be empty on the other)."""
    out: dict[str, Any] = {}
    for pair in sorted(set(truth) | set(got)):
        want, have = truth.get(pair), got.get(pair)
        if want is None and have is not None and is_empty(have):
            continue
        if have is None and want is not None and is_empty(want):
            continue
        w = comparable(want) if want is not None else None
        h = comparable(have) if have is not None else None
        if w != h:
            out[pair] = {"expected": w, "got": h}
    return out
