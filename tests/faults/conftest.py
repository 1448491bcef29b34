"""A whole platform on its own broker per scenario module, so faults never touch other tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from handshake.access import declare
from handshake.broker import Cluster, temporary_cluster
from handshake.security import ADMIN, acl_rules
from handshake.topics import ensure_topics
from tests.harness import Harness


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with temporary_cluster(tmp_path_factory.mktemp("faults-kafka")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def platform(own_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """The platform on ``own_cluster``; on a secured one, each service as its own principal."""
    workdir: Path = tmp_path_factory.mktemp("faults-platform")
    harness = Harness(
        own_cluster.bootstrap, workdir, secrets=own_cluster.secrets if own_cluster.secure else None
    )
    admin = own_cluster.secrets.login(harness.settings, ADMIN) if own_cluster.secure else harness.settings
    ensure_topics(own_cluster.bootstrap, harness.settings.topic_specs(), security=admin.kafka_python_config())
    if own_cluster.secure:
        declare(admin, acl_rules(harness.settings, app_id=harness.app_id))
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
