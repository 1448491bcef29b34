"""Broker faults under load (issue 8, scenarios 1, 2, 3 and 5): nothing acknowledged is lost,
nothing is counted twice, and no 2xx is ever given while Kafka cannot acknowledge."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from handshake.broker import Cluster, temporary_cluster
from tests.faults.common import record, scale, wait_until
from tests.harness import Harness
from tests.loadgen import LoadGenerator, ground_truth, wait_exact

pytestmark = pytest.mark.integration

RATE = scale(40, 100)


@pytest.fixture(scope="module", params=["open", "secured"])
def own_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Every scenario of this module runs on an open broker and again on a secured one (SASL_SSL,
    SCRAM, ACLs): reconnecting after a broker fault includes TLS and authentication again."""
    with temporary_cluster(
        tmp_path_factory.mktemp("faults-kafka"), secure=request.param == "secured"
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def acknowledged(own_cluster: Cluster) -> dict[tuple[str, str], dict[str, Any]]:
    """The acknowledged events of every scenario on ``own_cluster`` (they share one platform;
    a fixture of its own per broker, open or secured)."""
    return {}


def _run(platform: Harness, keys: dict[str, str], seed: int) -> LoadGenerator:
    load = LoadGenerator(platform["ingest"].url, keys, rate=RATE, threads=4, seed=seed, request_timeout=15)
    load.start()
    return load


def _tails(platform: Harness) -> str:
    """The services' own metrics (ingest's are ``ingest_*``) and last log lines, for a failure's
    message: which of them stopped (the worker publishing, the API's view applying) shows there."""
    parts = []
    for service in platform.services.values():
        try:
            text = httpx.get(f"{service.url}/metrics", timeout=5).text
            mine = "\n".join(
                line
                for line in text.splitlines()
                if line.startswith(("handshake_", "ingest_"))
                and "_created" not in line
                and "_bucket" not in line
            )
        except httpx.HTTPError as exc:
            mine = repr(exc)
        parts.append(f"--- {service.name} ---\n{mine}\n{service.tail(20)}")
    return "\n".join(parts)


def _finish(
    scenario: str,
    platform: Harness,
    load: LoadGenerator,
    acknowledged: dict[tuple[str, str], dict[str, Any]],
    started: float,
    timeout: float = 120,
) -> None:
    load.stop()
    if platform.secrets is not None:
        scenario += ", secured broker"
    acknowledged.update(load.outcomes.truth_events)
    truth = ground_truth(acknowledged)
    try:
        figures, seconds = wait_exact(platform["api"].url, truth, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_tails(platform)}") from None
    out = load.outcomes
    record(
        scenario,
        events=sum(out.statuses.values()),
        acknowledged=out.acknowledged,
        rejected=out.rejected,
        ambiguous=out.ambiguous,
        lost=figures["lost"],
        duplicated=figures["duplicated"],
        pairs_differing=figures["pairs_differing"],
        false_acks=out.false_acks_while_down,
        recovery_s=round(seconds, 1),
        total_s=round(time.monotonic() - started, 1),
    )
    assert out.false_acks_while_down == 0
    assert figures == {"lost": 0, "duplicated": 0, "pairs_differing": 0}, _tails(platform)
    assert out.acknowledged > 0
    for service in platform.services.values():
        assert service.alive(), f"{service.name} died: {service.tail()}"


def test_broker_paused_gives_503_never_2xx(
    platform: Harness, own_cluster: Cluster, partner_keys: dict[str, str], acknowledged: dict[Any, Any]
) -> None:
    started = time.monotonic()
    load = _run(platform, partner_keys, seed=11)
    time.sleep(3)
    own_cluster.kill(1, signal.SIGSTOP)
    load.broker_down.set()
    probe_seconds: list[float] = []
    probes: list[dict[str, Any]] = []
    try:
        key = partner_keys[next(iter(partner_keys))]
        deadline = time.monotonic() + scale(8, 15)
        n = 0
        while time.monotonic() < deadline:
            n += 1
            event = {
                "event_id": f"paused-{n}",
                "kind": "civic",
                "title": "probe",
                "host_country": "FR",
                "delegations": [{"country": "DE"}],
                "starts_on": "2026-03-01",
            }
            probes.append(event)
            t0 = time.monotonic()
            answer = httpx.post(
                f"{platform['ingest'].url}/v1/events",
                json=event,
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            probe_seconds.append(time.monotonic() - t0)
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert int(answer.headers["Retry-After"]) >= 1
    finally:
        load.broker_down.clear()  # before SIGCONT: any 2xx seen while set was given by a paused broker
        own_cluster.kill(1, signal.SIGCONT)
    assert max(probe_seconds) <= 5 + 1.5, probe_seconds
    # the probes were ambiguous (503): like a careful partner, resend each until it resolves
    key_id = next(iter(partner_keys))
    for event in probes:
        deadline = time.monotonic() + 60
        while True:
            answer = httpx.post(
                f"{platform['ingest'].url}/v1/events",
                json=event,
                headers={"Authorization": f"Bearer {partner_keys[key_id]}"},
                timeout=30,
            )
            if answer.status_code == 202 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert answer.status_code == 202, answer.text
        acknowledged[(key_id, event["event_id"])] = event
    time.sleep(3)
    _finish("1 broker paused (SIGSTOP)", platform, load, acknowledged, started)


def test_broker_killed_and_stopped_repeatedly(
    platform: Harness, own_cluster: Cluster, partner_keys: dict[str, str], acknowledged: dict[Any, Any]
) -> None:
    started = time.monotonic()
    load = _run(platform, partner_keys, seed=22)
    rounds = int(scale(1, 3))
    for _ in range(rounds):
        time.sleep(random.uniform(2, 4))
        own_cluster.kill(1, signal.SIGKILL)
        load.broker_down.set()
        time.sleep(1)
        load.broker_down.clear()  # from here the restarted broker may acknowledge
        own_cluster.restart_node(1)
    for _ in range(rounds):
        time.sleep(random.uniform(2, 4))
        own_cluster.stop()
        own_cluster.start()
    time.sleep(3)
    _finish("2 broker SIGKILL + clean stops", platform, load, acknowledged, started)


def test_broker_down_long_readiness_goes_false_and_back(
    platform: Harness, own_cluster: Cluster, partner_keys: dict[str, str], acknowledged: dict[Any, Any]
) -> None:
    started = time.monotonic()
    load = _run(platform, partner_keys, seed=33)
    time.sleep(2)
    own_cluster.stop()
    down_for = scale(15, 70)
    not_ready: dict[str, float] = {}
    t0 = time.monotonic()
    while time.monotonic() - t0 < down_for:
        for name in ("ingest", "api", "aggregator"):
            if name not in not_ready and not platform[name].ready():
                not_ready[name] = round(time.monotonic() - t0, 1)
        time.sleep(0.5)
    own_cluster.start()
    back = {name: round(platform[name].wait_ready(120), 1) for name in ("ingest", "aggregator", "api")}
    time.sleep(3)
    assert "ingest" in not_ready, "ingest must report not ready while Kafka is down"
    print(f"readiness false after {not_ready}, back after {back}")
    _finish(f"3 broker down {down_for:.0f}s", platform, load, acknowledged, started, timeout=120)


def test_broker_and_aggregator_killed_together(
    platform: Harness, own_cluster: Cluster, partner_keys: dict[str, str], acknowledged: dict[Any, Any]
) -> None:
    started = time.monotonic()
    load = _run(platform, partner_keys, seed=55)
    for _ in range(int(scale(1, 2))):
        time.sleep(random.uniform(2, 4))
        own_cluster.kill(1, signal.SIGKILL)
        load.broker_down.set()
        time.sleep(random.uniform(0, 5))
        platform["aggregator"].kill()
        load.broker_down.clear()
        own_cluster.restart_node(1)
        platform["aggregator"].start()
        platform["aggregator"].wait_ready(120)
    time.sleep(3)
    _finish("5 broker + aggregator SIGKILL", platform, load, acknowledged, started)
    try:
        wait_until(lambda: platform["ingest"].ready(), 30)
    except TimeoutError:  # say which of ingest's checks stayed false
        raise AssertionError(
            f"ingest not ready: {httpx.get(platform['ingest'].url + '/readyz').text}"
        ) from None
