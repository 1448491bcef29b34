"""A whole platform on its own broker per scenario module, so faults never touch other tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from handshake.broker import Cluster, temporary_cluster
from handshake.topics import ensure_topics
from tests.harness import Harness


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with temporary_cluster(tmp_path_factory.mktemp("faults-kafka")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def platform(own_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    workdir: Path = tmp_path_factory.mktemp("faults-platform")
    harness = Harness(own_cluster.bootstrap, workdir)
    ensure_topics(own_cluster.bootstrap, harness.settings.topic_specs())
    harness.start_all()
    try:
        yield harness
    finally:
        harness.stop()
        for service in harness.services.values():
            print(f"--- {service.name} (starts: {service.starts}) ---\n{service.tail(15)}")


@pytest.fixture(scope="module")
def partner_keys(platform: Harness) -> dict[str, str]:
    return dict(platform.partner(f"Faults partner {i}") for i in range(3))
