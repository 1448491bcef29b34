"""Stream fan-out at the hub level: numbering, filters, resume, reset, slow clients."""

from __future__ import annotations

import orjson
import pytest

from services.api.hub import StreamFilter, StreamHub, Subscription, TooManyClients
from services.api.testing import make_stats


def frames_data(frames: list[bytes]) -> list[dict]:  # type: ignore[type-arg]
    out = []
    for frame in frames:
        fields = dict(line.split(": ", 1) for line in frame.decode().strip().split("\n"))
        out.append({"id": int(fields["id"]), "event": fields["event"], "data": orjson.loads(fields["data"])})
    return out


def taken(sub: Subscription) -> list[tuple[int, str]]:
    return [(e.seq, e.pair) for e in sub.take()]


def test_sequence_increases_and_hello_carries_it() -> None:
    hub = StreamHub(sequence_start=100)
    sub, initial = hub.subscribe(StreamFilter())
    [hello] = frames_data(initial)
    assert hello == {"id": 100, "event": "hello", "data": {"sequence": 100}}
    hub.publish(make_stats("CN", "US"))
    hub.publish(make_stats("DE", "FR"))
    assert taken(sub) == [(101, "CN-US"), (102, "DE-FR")]
    [frame] = frames_data([hub.publish(make_stats("CN", "US", version=2, events=4)).frame])
    assert frame["id"] == 103 and frame["event"] == "pair"
    assert frame["data"]["pair"] == "CN-US" and frame["data"]["active_events"] == 4


def test_default_sequence_start_is_clock_based_and_json_safe() -> None:
    seq = StreamHub().sequence
    assert 1_600_000_000_000_000 < seq < 2**53


def test_filters_country_pair_kind() -> None:
    hub = StreamHub(sequence_start=0)
    by_country, _ = hub.subscribe(StreamFilter(country="FR"))
    by_pair, _ = hub.subscribe(StreamFilter(pair="CN-US"))
    by_kind, _ = hub.subscribe(StreamFilter(kind="athletic"))
    everything, _ = hub.subscribe(StreamFilter())
    hub.publish(make_stats("CN", "US", by_kind={"athletic": 1}))
    hub.publish(make_stats("DE", "FR", by_kind={"cultural": 1}))
    old = make_stats("FR", "US", by_kind={"athletic": 2})
    hub.publish(old)
    # FR-US loses its athletic events: athletic subscribers still get the update (so it leaves their list)
    hub.publish(make_stats("FR", "US", version=2, by_kind={"civic": 2}), previous=old)
    hub.publish(make_stats("FR", "US", version=3, by_kind={"civic": 3}), previous=None)
    assert taken(by_country) == [(2, "DE-FR"), (3, "FR-US"), (4, "FR-US"), (5, "FR-US")]
    assert taken(by_pair) == [(1, "CN-US")]
    assert taken(by_kind) == [(1, "CN-US"), (3, "FR-US"), (4, "FR-US")]
    assert [s for s, _ in taken(everything)] == [1, 2, 3, 4, 5]
    assert hub.delivered == 3 + 4 + 1 + 3 + 5 - 3  # every match counted once


def test_resume_with_last_event_id_gets_exactly_the_missed_matching_updates() -> None:
    hub = StreamHub(sequence_start=0, replay_size=100)
    for i, pair in enumerate(["CN-US", "DE-FR", "FR-US", "CN-US", "BR-JP"]):
        a, b = pair.split("-")
        hub.publish(make_stats(a, b, version=i + 1))
    _, frames = hub.subscribe(StreamFilter(), last_event_id=2)
    assert [f["id"] for f in frames_data(frames)] == [3, 4, 5]
    _, frames = hub.subscribe(StreamFilter(country="US"), last_event_id=1)
    assert [(f["id"], f["data"]["pair"]) for f in frames_data(frames)] == [(3, "FR-US"), (4, "CN-US")]
    _, frames = hub.subscribe(StreamFilter(), last_event_id=5)
    assert frames == []
    # resumption and live updates join without gap or duplicate
    sub, frames = hub.subscribe(StreamFilter(), last_event_id=4)
    hub.publish(make_stats("CN", "US", version=9))
    assert [f["id"] for f in frames_data(frames)] == [5]
    assert taken(sub) == [(6, "CN-US")]


def test_reset_when_id_is_older_than_the_buffer_or_unknown() -> None:
    hub = StreamHub(sequence_start=0, replay_size=3)
    for v in range(1, 7):
        hub.publish(make_stats("CN", "US", version=v))
    # ring holds 4, 5, 6: from 3 on nothing was lost, from 2 on update 3 was
    assert [f["id"] for f in frames_data(hub.subscribe(StreamFilter(), last_event_id=3)[1])] == [4, 5, 6]
    [reset] = frames_data(hub.subscribe(StreamFilter(), last_event_id=2)[1])
    assert reset["event"] == "reset" and reset["id"] == 6
    [reset] = frames_data(hub.subscribe(StreamFilter(), last_event_id=999)[1])  # another instance's id
    assert reset["event"] == "reset"
    assert hub.resets == 2


def test_slow_client_is_coalesced_then_dropped_without_affecting_others() -> None:
    hub = StreamHub(sequence_start=0, client_queue=3)
    slow, _ = hub.subscribe(StreamFilter())
    fast, _ = hub.subscribe(StreamFilter())
    received: list[int] = []
    for v in range(1, 6):  # the same two pairs again and again: coalescing keeps the slow one in bounds
        hub.publish(make_stats("CN", "US", version=v))
        hub.publish(make_stats("DE", "FR", version=v))
        received += [s for s, _ in taken(fast)]
    assert received == list(range(1, 11))
    assert not slow.dropped
    assert taken(slow) == [(9, "CN-US"), (10, "DE-FR")]  # latest per pair, in sequence order
    assert slow.coalesced > 0
    # after draining it is exact again
    hub.publish(make_stats("CN", "US", version=6))
    assert taken(slow) == [(11, "CN-US")]
    # more distinct pairs than the bound while not reading: dropped
    for pair in ["BR-JP", "CN-US", "DE-FR", "FR-US", "IT-ES"]:
        a, b = pair.split("-")
        hub.publish(make_stats(a, b, version=20))
        taken(fast)
    assert slow.dropped and slow.gone.is_set()
    assert hub.dropped == 1 and hub.clients == 1
    assert not fast.dropped


def test_max_clients_and_unsubscribe() -> None:
    hub = StreamHub(max_clients=2)
    a, _ = hub.subscribe(StreamFilter())
    hub.subscribe(StreamFilter())
    with pytest.raises(TooManyClients):
        hub.subscribe(StreamFilter())
    hub.unsubscribe(a)
    assert hub.clients == 1
    hub.publish(make_stats("CN", "US"))
    assert a.take() == []


async def test_wait_wakes_on_offer_and_times_out() -> None:
    hub = StreamHub(sequence_start=0)
    sub, _ = hub.subscribe(StreamFilter())
    assert await sub.wait(0.01) is False
    hub.publish(make_stats("CN", "US"))
    assert await sub.wait(1) is True
    assert len(sub.take()) == 1
