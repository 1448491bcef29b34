"""The stall guard tells a consumer stuck after a broker fault from an idle or busy one."""

from __future__ import annotations

import pytest

from services.api.consumer import ConsumerStalled, StallGuard


def test_a_caught_up_consumer_never_stalls() -> None:
    guard: StallGuard[str] = StallGuard(10)
    for now in range(0, 100, 5):
        assert not guard.stalled(now, {"a": 7, "b": 3}, {"a": 7, "b": 3})


def test_a_consumer_that_moves_never_stalls() -> None:
    guard: StallGuard[str] = StallGuard(10)
    for now in range(0, 100, 5):
        assert not guard.stalled(now, {"a": now, "b": 0}, {"a": 1000, "b": 5})


def test_behind_and_still_for_the_whole_period_is_a_stall() -> None:
    guard: StallGuard[str] = StallGuard(10)
    assert not guard.stalled(0, {"a": 4}, {"a": 9})
    assert not guard.stalled(9.9, {"a": 4}, {"a": 9})
    assert guard.stalled(10, {"a": 4}, {"a": 12})
    with pytest.raises(ConsumerStalled, match="8 records behind"):
        guard.check(11, {"a": 4}, {"a": 12})


def test_time_without_end_offsets_does_not_count() -> None:
    """After a broker outage the positions have not moved, but the consumer was not stuck."""
    guard: StallGuard[str] = StallGuard(10)
    assert not guard.stalled(0, {"a": 4}, {"a": 9})
    guard.reset()  # the end offsets could not be read for a minute
    assert not guard.stalled(60, {"a": 4}, {"a": 9})
    assert not guard.stalled(65, {"a": 4}, {"a": 9})
    assert guard.stalled(70, {"a": 4}, {"a": 9})


def test_catching_up_restarts_the_clock() -> None:
    guard: StallGuard[str] = StallGuard(10)
    assert not guard.stalled(0, {"a": 4}, {"a": 9})
    assert not guard.stalled(8, {"a": 9}, {"a": 9})  # caught up
    assert not guard.stalled(12, {"a": 9}, {"a": 15})  # new records, a fresh start
    assert not guard.stalled(21, {"a": 9}, {"a": 15})
    assert guard.stalled(22, {"a": 9}, {"a": 15})
