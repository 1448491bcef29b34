"""Pure aggregation logic of the aggregator (no Kafka, no faust).

Stage 1 keeps, per source partition, one state store with two kinds of keys:

- ``e:{record key}``: the latest accepted state of an event (:class:`EventState`);
- ``p:{pair}:{partition}``: the *partial* aggregate of a pair from that source partition;
- ``d:{pair}:{partition}:{YYYY-MM}``: that partial's active events per start date of one month
  (at most 31 entries).

A partial holds only its first and last date, and no count per month or per date: the day
counts live in their month's key, and a month's count is the sum of its day counts. So an
event rewrites a bounded amount of state however long a pair's history is (a pair whose events
span 1950-2026 has 924 month keys, and each event touches one). Partials written by earlier
releases kept every month (``by_month``), and before that every date (``dates``), in the partial;
they are converted when first touched, in the same unit as the event that touches them
(:func:`span` reads every form).

Stage 2 needs each pair's count per month: stage 1 publishes, with each partial, the counts of
the months its batch changed (:attr:`BatchOutcome.months`), and stage 2 keeps them in its own
copy of the partial (:func:`services.aggregator.merge.apply_entry`). A batch whose writes were
stored but whose partials were never published (a crash between the two) is read again, but
its records then change nothing (replays, or superseded by later records): so stage 1's first
batch of a source partition, after a crash, a failed batch or a rebalance, republishes every
partial changed since the committed offset with its *whole* months (:func:`republish`), and no
change is lost.

:func:`process` turns one record at offset ``o`` into a list of writes: the partials it changes
and the event state. The aggregator persists the writes of a batch for one source partition as
one unit (one Kafka record batch on the changelog, one RocksDB write batch), so a stored event
state always comes with the partials it changed. Whether a record is new is therefore decided
by the event state alone: written at offset ``o``, it is a replay and changes nothing; a higher
revision is applied (its previous contribution subtracted); an older or equal one changes
nothing. The outcome does not depend on the order in which records of different events arrive,
nor on redelivery: a partition's records may be replayed, or even delivered out of offset
order after a rebalance, without being lost or counted twice. Stage 2 and the ground truth
are in :mod:`services.aggregator.merge`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.acceptance import Verdict, is_active, judge
from schemas.events import AcceptedEvent, content_hash
from schemas.pairs import CHECKSUM_MOD, contributions, event_checksum, month_of
from schemas.records import event_key

# JSON-able values kept in the tables and on the internal topic
Contribution = dict[str, Any]
Partial = dict[str, Any]
EventState = dict[str, Any]
Days = dict[str, int]  # a month's active events per start date (ISO date -> count)

COUNT_FIELDS = ("by_kind", "by_status", "by_direction", "by_month")
Months = dict[str, int]  # active events per start month (YYYY-MM -> count)


def event_state_key(record_key: str) -> str:
    return f"e:{record_key}"


def partial_key(pair: str, partition: int) -> str:
    return f"p:{pair}:{partition}"


def day_key(pair: str, partition: int, month: str) -> str:
    return f"d:{pair}:{partition}:{month}"


def split_partial_key(key: str) -> tuple[str, int]:
    """(pair, partition) of a :func:`partial_key`."""
    _, pair, partition = key.split(":")
    return pair, int(partition)


def split_day_key(key: str) -> tuple[str, int, str]:
    """(pair, partition, month) of a :func:`day_key`."""
    _, pair, partition, month = key.split(":")
    return pair, int(partition), month


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


def empty_partial(months: bool = True) -> Partial:
    """A partial of no events; ``months=False``: stage 1's form (its months are in the day counts)."""
    partial: Partial = {
        "active_events": 0,
        "participants": 0,
        "by_kind": {},
        "by_status": {},
        "by_direction": {},
        "by_month": {},
        "cancelled": 0,
        "first_date": None,  # of the active events (ISO); exact under retraction: see DayCounts
        "last_date": None,
        "checksum": 0,
        "updates": 0,
        "last_offset": -1,
    }
    if not months:
        del partial["by_month"]
    return partial


class DayCounts(Protocol):
    """Where a partial's active events per start date are kept, one month at a time."""

    def days(self, month: str) -> Mapping[str, int]:
        """The month's counts (dates absent when zero)."""
        ...

    def bump(self, month: str, day: str, delta: int) -> int:
        """Add ``delta`` to ``day``'s count; return the new count."""
        ...


class MemoryDays:
    """:class:`DayCounts` in a dict (the ground truth's, and one pair's in the Quix peer's tests)."""

    def __init__(self) -> None:
        self.months: dict[str, Days] = {}

    def days(self, month: str) -> Mapping[str, int]:
        return self.months.get(month, {})

    def bump(self, month: str, day: str, delta: int) -> int:
        counts = self.months.setdefault(month, {})
        bump(counts, day, delta)
        return counts.get(day, 0)


def bump(counts: dict[str, int], name: str, delta: int) -> None:
    """Add ``delta`` to ``counts[name]``, dropping it at zero."""
    value = counts.get(name, 0) + delta
    if value:
        counts[name] = value
    else:
        counts.pop(name, None)


def add_contribution(partial: Partial, contrib: Contribution, pair: str, sign: int, days: DayCounts) -> None:
    """Add (sign=+1) or subtract (sign=-1) ``contrib``'s share of ``pair`` to ``partial`` in place,
    and to the partial's day counts ``days``."""
    for p, direction, participants in contrib["pairs"]:
        if p != pair:
            continue
        if contrib["cancelled"]:
            partial["cancelled"] += sign
            return
        partial["active_events"] += sign
        partial["participants"] += sign * participants
        bump(partial["by_kind"], contrib["kind"], sign)
        bump(partial["by_status"], contrib["status"], sign)
        bump(partial["by_direction"], direction, sign)
        if "by_month" in partial:  # not stage 1's: see the module doc
            bump(partial["by_month"], contrib["month"], sign)
        left = days.bump(contrib["month"], contrib["date"], sign)
        _reframe(partial, contrib["date"], sign, left, days)
        partial["checksum"] = (partial["checksum"] + sign * contrib["checksum"]) % CHECKSUM_MOD
        return


def _reframe(partial: Partial, day: str, sign: int, left: int, days: DayCounts) -> None:
    """Keep the partial's first and last date exact after ``day`` gained or lost an event.

    When the first (last) date loses its last event, the new one is the first (last) date of the
    first month after (before) it with any count: months are read one by one from there, never
    past the other end, and usually the first one read has it.
    """
    if partial["active_events"] == 0:
        partial["first_date"] = partial["last_date"] = None
    elif sign > 0:
        if partial["first_date"] is None or day < partial["first_date"]:
            partial["first_date"] = day
        if partial["last_date"] is None or day > partial["last_date"]:
            partial["last_date"] = day
    elif left == 0:
        if day == partial["first_date"]:
            partial["first_date"] = min(_nearest_month(days, day[:7], partial["last_date"][:7], +1))
        if day == partial["last_date"]:
            partial["last_date"] = max(_nearest_month(days, day[:7], partial["first_date"][:7], -1))


def shift_month(month: str, step: int) -> str:
    """The month ``step`` (+1 or -1) after ``month`` (YYYY-MM)."""
    index = int(month[:4]) * 12 + int(month[5:]) - 1 + step
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _nearest_month(days: DayCounts, start: str, stop: str, step: int) -> Mapping[str, int]:
    """The day counts of the first month with any, from ``start`` towards ``stop`` (inclusive)."""
    month = start
    while not (counts := days.days(month)):
        if month == stop:
            raise ValueError(f"no day counts between {start} and {stop}, yet active events")
        month = shift_month(month, step)
    return counts


def months_of(partial: Partial, days: DayCounts) -> Months:
    """A stage-1 partial's count per month, read from its day counts (first to last month)."""
    if partial["first_date"] is None:
        return {}
    out: Months = {}
    month, last = partial["first_date"][:7], partial["last_date"][:7]
    while True:
        total = sum(days.days(month).values())
        if total:
            out[month] = total
        if month == last:
            return out
        month = shift_month(month, +1)


def span(partial: Partial) -> tuple[str | None, str | None]:
    """(first, last) date of a partial's active events, from either form (see the module doc)."""
    if "dates" not in partial:
        return partial["first_date"], partial["last_date"]
    dates = [d for d, n in partial["dates"].items() if n > 0]
    return (min(dates), max(dates)) if dates else (None, None)


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
    full: set[str] = field(default_factory=set)  # pairs whose whole months are to be published


Getter = Callable[[str], Any]


class _StoredDays:
    """A partial's :class:`DayCounts` in the state store (``d:`` keys), read through ``get``;
    the months it changed are in ``written``, to be stored with the partial."""

    def __init__(self, get: Getter, pair: str, partition: int, owned: set[str] | None) -> None:
        self._get, self._pair, self._partition, self._owned = get, pair, partition, owned
        self.written: dict[str, Days] = {}

    def days(self, month: str) -> Mapping[str, int]:
        hit = self.written.get(month)
        if hit is not None:
            return hit
        stored = self._get(day_key(self._pair, self._partition, month))
        return {} if stored is None else stored

    def bump(self, month: str, day: str, delta: int) -> int:
        counts = self.written.get(month)
        if counts is None:
            key = day_key(self._pair, self._partition, month)
            stored = self._get(key)
            owned = self._owned is not None and key in self._owned
            counts = {} if stored is None else stored if owned else dict(stored)
            if self._owned is not None:
                self._owned.add(key)
            self.written[month] = counts
        bump(counts, day, delta)
        return counts.get(day, 0)


def stored_months(get: Getter, pair: str, partition: int, partial: Partial) -> Months:
    """:func:`months_of` a stage-1 partial whose day counts are read through ``get``."""
    return months_of(partial, _StoredDays(get, pair, partition, None))


def _upgrade(partial: Partial, days: DayCounts) -> bool:
    """Convert, in place, a partial of an earlier release (every month's, and before that every
    date's, count in the partial); True if it was one."""
    earlier = "dates" in partial or "by_month" in partial
    if "dates" in partial:
        legacy: dict[str, int] = partial.pop("dates")
        partial["first_date"], partial["last_date"] = span({"dates": legacy})
        for day, n in legacy.items():
            days.bump(day[:7], day, n)
    partial.pop("by_month", None)
    return earlier


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
            partial = empty_partial(months=False)
        elif owned is None or pk not in owned:
            partial = _copy(partial)
        if owned is not None:
            owned.add(pk)
        days = _StoredDays(get, pair, partition, owned)
        if _upgrade(partial, days):
            out.full.add(pair)  # stage 2 learns its months anew
        if old is not None:
            add_contribution(partial, old, pair, -1, days)
        if new is not None:
            add_contribution(partial, new, pair, +1, days)
        partial["updates"] += 1
        partial["last_offset"] = max(partial["last_offset"], offset)
        out.writes.append((pk, partial))
        out.writes.extend((day_key(pair, partition, month), counts) for month, counts in days.written.items())
        out.partials[pair] = partial
    out.writes.append(
        (key, {"revision": event.revision, "hash": chash, "offset": offset, "current": new, "previous": old})
    )
    return out


@dataclass
class BatchOutcome:
    """A batch's coalesced writes (partials and day counts, then event states; each key once),
    and what to publish to stage 2: every touched partial, with the count of each month the
    batch changed (0: none left), or of every month (the partials in ``full``)."""

    writes: list[tuple[int, str, Any]] = field(default_factory=list)  # (partition, key, value)
    outcomes: list[Outcome] = field(default_factory=list)
    touched: dict[tuple[str, int], Partial] = field(default_factory=dict)  # (pair, partition) -> partial
    months: dict[tuple[str, int], Months] = field(default_factory=dict)
    full: set[tuple[str, int]] = field(default_factory=set)

    def then(self, later: BatchOutcome) -> None:
        """Add what ``later`` (processed after this one) publishes: its partials replace, and its
        months are laid over (all of them if full). Writes and outcomes are the caller's: each
        unit's are persisted and counted as they come."""
        self.touched.update(later.touched)
        for at, changed in later.months.items():
            if at in later.full:
                self.months[at] = dict(changed)
                self.full.add(at)
            else:
                self.months.setdefault(at, {}).update(changed)


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
            if fresh and value is not None and not key.startswith("e:"):
                owned.add(key)  # a partial or a month's day counts
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
        out.full.update((pair, partition) for pair in outcome.full)
        out.outcomes.append(outcome)
    for key, (partition, value) in overlay.items():
        if key.startswith("d:"):
            pair, _, month = split_day_key(key)
            out.months.setdefault((pair, partition), {})[month] = sum(value.values())
    for pair, partition in list(out.full):
        partial = out.touched[(pair, partition)]
        if "by_month" in partial:  # an earlier release's, republished as is: whole already
            out.full.discard((pair, partition))
        else:
            out.months[(pair, partition)] = stored_months(reader(partition), pair, partition, partial)
    partials = [(p, k, v) for k, (p, v) in overlay.items() if not k.startswith("e:")]
    states = [(p, k, v) for k, (p, v) in overlay.items() if k.startswith("e:")]
    out.writes = partials + states
    return out


def _touch_only(get: Getter, partition: int, state: EventState, result: str) -> Outcome:
    """Nothing changes, but the event's pairs are republished (their months are stage 2's
    already: what a crash lost is republished whole by :func:`republish`)."""
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
        if name in partial:
            out[name] = dict(partial[name])
    return out  # an earlier release's ``dates`` stays shared: _upgrade pops it, never changes it


def republish(get: Getter, partials: Iterable[tuple[str, Partial]], since: int) -> BatchOutcome:
    """What stage 1 publishes first for a source partition, after a crash, a failed batch or a
    rebalance: every partial of ``partials`` (key, partial: all of that partition's) changed at
    or after offset ``since`` (where delivery starts again: the committed offset), with its
    whole months, read through ``get``.

    A crash can store a batch's writes but lose what it published: its records are then
    delivered again, but they are replays or superseded by later records, and change nothing.
    The partials they changed all have ``last_offset >= since``, so this republishes them. A
    partial of an earlier release carries its months inside, and is published as it is.
    """
    out = BatchOutcome()
    for key, partial in partials:
        if partial["last_offset"] < since:
            continue
        pair, partition = split_partial_key(key)
        out.touched[(pair, partition)] = partial
        if "by_month" not in partial and "dates" not in partial:
            out.months[(pair, partition)] = stored_months(get, pair, partition, partial)
            out.full.add((pair, partition))
    return out
