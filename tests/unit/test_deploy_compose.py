"""deploy/compose/compose.yaml runs the real image, commands, settings and ports."""

from __future__ import annotations

from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.unit.test_deploy_common import (
    CONTRACT_PORTS,
    DEPLOY,
    DOCKERFILE,
    HOST_FIELDS,
    KNOWN_IMAGES,
    PORT_FIELDS,
    check_handshake_args,
    dockerfile_env,
    dockerfile_user,
    effective,
    image_repository,
    kafka_command,
    project_image,
    run_kafka_secrets,
    settings_class,
    unknown_env,
)

COMPOSE = DEPLOY / "compose" / "compose.yaml"


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def built() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services().items() if "build" in svc}


def env_of(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def runs(svc: dict[str, Any]) -> str | None:
    """The Handshake service a compose service runs (None for the topics job)."""
    return check_handshake_args(svc["command"])


def handshake_services() -> dict[str, tuple[str, dict[str, Any]]]:
    out = {}
    for name, svc in built().items():
        service = runs(svc)
        if service is not None:
            out[service] = (name, svc)
    return out


def test_compose_parses_and_runs_each_service_once() -> None:
    assert set(handshake_services()) == set(CONTRACT_PORTS), "ingest, aggregator and api, once each"
    assert {"secrets", "kafka", "topics", "prometheus", "grafana"} <= set(services())


@pytest.mark.parametrize("name", sorted(yaml.safe_load(COMPOSE.read_text())["services"]))
def test_every_image_is_known_or_built_from_the_dockerfile(name: str) -> None:
    svc = services()[name]
    if "build" in svc:
        build = svc["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
        assert DOCKERFILE.exists()
        assert svc.get("image", project_image()) == project_image(), "tag the built image consistently"
        assert "command" in svc, "say which handshake command runs"
    else:
        image = svc["image"]
        assert image_repository(image) in KNOWN_IMAGES, f"{name}: unknown image {image}"
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag ({image})"


def secrets_job() -> dict[str, Any]:
    """The ``secrets`` job's ``handshake kafka secrets`` parameters, parsed by the real CLI."""
    return kafka_command(services()["secrets"]["command"])


def mounts(svc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """target → (source, mode) of a compose service's volumes."""
    out = {}
    for volume in svc.get("volumes", []):
        source, target, *mode = str(volume).split(":")
        out[target] = (source, mode[0] if mode else "rw")
    return out


def test_kafka_is_a_secured_single_kraft_node_with_a_healthcheck() -> None:
    from handshake.kafka_secrets import STORAGE_TOOL, Listener

    kafka, job = services()["kafka"], secrets_job()
    assert kafka["image"] == "apache/kafka:3.9.1"
    assert job["directory"] == PurePosixPath("/etc/handshake/secrets") and job["mount"] is None
    assert kafka["depends_on"]["secrets"]["condition"] == "service_completed_successfully"
    assert services()["secrets"].get("restart", "no") == "no"
    # the broker runs the generated start script, from the secrets volume, read-only
    assert kafka["command"] == ["/bin/bash", f"{job['directory']}/broker/start.sh"]
    source = mounts(services()["secrets"])[str(job["directory"])][0]
    assert mounts(kafka)[str(job["directory"])] == (source, "ro")
    assert STORAGE_TOOL.startswith("/opt/kafka/bin/")
    # the broker's files belong to the image's appuser, the clients' to the handshake image's user
    assert job["broker_owner"] == "1000:1000"
    assert job["client_owner"] == "{0}:{0}".format(dockerfile_user())
    # every service dials an advertised listener, whose host the certificate names
    listeners = [Listener.parse(text) for text in job["listener"]]
    advertised = {lst.advertised for lst in listeners}
    for name, svc in built().items():
        if name == "secrets":
            continue
        bootstrap = env_of(svc)["HANDSHAKE_KAFKA_BOOTSTRAP"]
        assert bootstrap in advertised, f"{name}: {bootstrap} is not advertised ({advertised})"
        assert bootstrap.rsplit(":", 1)[0] in job["host"], f"the certificate does not name {bootstrap}"
    # the host listener is published on the port it advertises
    host = next(lst for lst in listeners if lst.advertised.startswith("localhost:"))
    assert kafka["ports"] == [f"${{KAFKA_HOST_PORT:-9092}}:{host.bind.rsplit(':', 1)[1]}"]
    assert host.advertised == "localhost:${KAFKA_HOST_PORT:-9092}"
    # the controller stays inside the container; the data dir is the named volume
    assert job["controller"].startswith("127.0.0.1:")
    assert mounts(kafka)[job["log_dir"]][0] in compose()["volumes"]
    check = " ".join(kafka["healthcheck"]["test"])
    assert "kafka-broker-api-versions.sh" in check
    assert f"--command-config {job['directory']}/broker/admin.properties" in check


@pytest.mark.parametrize(
    "name", sorted(n for n, s in yaml.safe_load(COMPOSE.read_text())["services"].items() if "build" in s)
)
def test_each_container_logs_in_as_its_own_principal_from_its_password_file(name: str) -> None:
    from handshake.security import ADMIN

    if name == "secrets":
        return  # it makes the secrets; it talks to no broker
    svc, job = built()[name], secrets_job()
    env = env_of(svc)
    service = runs(svc)
    principal = ADMIN if service is None else f"handshake-{service}"
    clients = f"{job['directory']}/clients"
    assert env["HANDSHAKE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["HANDSHAKE_KAFKA_USERNAME"] == principal
    assert env["HANDSHAKE_KAFKA_PASSWORD_FILE"] == f"{clients}/{principal}"
    assert env["HANDSHAKE_KAFKA_CA_FILE"] == f"{clients}/ca.pem"
    assert "HANDSHAKE_KAFKA_PASSWORD" not in env, "passwords come from the secrets volume, never the file"
    assert mounts(svc)[str(job["directory"])][1] == "ro"


def test_topics_job_declares_topics_after_kafka_is_healthy() -> None:
    topics = services()["topics"]
    assert topics["command"] == ["kafka", "topics"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert topics.get("restart", "no") == "no"


@pytest.mark.parametrize("service", sorted(CONTRACT_PORTS))
def test_services_wait_for_kafka_and_topics(service: str) -> None:
    _, svc = handshake_services()[service]
    depends = svc["depends_on"]
    assert depends["kafka"]["condition"] == "service_healthy"
    assert depends["topics"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize(
    "name", sorted(n for n, s in yaml.safe_load(COMPOSE.read_text())["services"].items() if "build" in s)
)
def test_handshake_env_vars_are_real_settings(name: str) -> None:
    svc = built()[name]
    service = runs(svc)
    unknown = unknown_env(service, env_of(svc))
    cls = settings_class(service).__name__
    assert not unknown, f"{name}: {unknown} are no fields of {cls} (typo, or the setting was renamed)"


@pytest.mark.parametrize("service", sorted(CONTRACT_PORTS))
def test_services_listen_on_all_interfaces_on_the_published_port(service: str) -> None:
    name, svc = handshake_services()[service]
    env = {**dockerfile_env(), **env_of(svc)}
    host_field, host = effective(service, env, HOST_FIELDS)
    assert host == "0.0.0.0", f"{name}: {host_field} is {host!r}; in a container it must be 0.0.0.0"
    _, port = effective(service, env, PORT_FIELDS)
    assert int(port) == CONTRACT_PORTS[service]
    published = {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in svc.get("ports", [])}
    assert int(port) in published, f"{name} listens on {port} but publishes {published}"


def test_aggregator_keeps_rocksdb_state_on_a_named_volume() -> None:
    _, svc = handshake_services()["aggregator"]
    env = env_of(svc)
    _, data_dir = effective("aggregator", env, ("data_dir",))
    _, store = effective("aggregator", env, ("store",))
    assert str(store).startswith("rocksdb"), store
    named = compose().get("volumes") or {}
    mounts = [str(v).split(":") for v in svc.get("volumes", [])]
    covering = [src for src, dst, *_ in mounts if PurePosixPath(str(data_dir)).is_relative_to(dst)]
    assert covering, f"no volume holds the aggregator data dir {data_dir}"
    assert all(src in named for src in covering), f"use a named volume for {data_dir}: {covering}"


def test_bind_mounts_exist() -> None:
    for name, svc in services().items():
        for volume in svc.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith((".", "/")):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts missing {source}"


def test_monitoring_mounts_this_repository_config() -> None:
    prometheus = services()["prometheus"]
    assert any(str(v).startswith("../prometheus:") for v in prometheus["volumes"])
    grafana = services()["grafana"]
    targets = dict(str(v).split(":")[:2] for v in grafana["volumes"])
    assert targets.get("../grafana/provisioning") == "/etc/grafana/provisioning"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/dashboards.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert targets.get("../grafana/dashboards") == path, (
        "the dashboard provider reads where the JSON is mounted"
    )


def test_prometheus_scrapes_the_compose_services_on_their_ports() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]
    }
    for service, (name, svc) in handshake_services().items():
        _, port = effective(service, env_of(svc), PORT_FIELDS)
        assert f"{name}:{port}" in targets, f"prometheus does not scrape {name}:{port}"


def test_compose_paths_are_relative_to_the_compose_file() -> None:
    assert Path(COMPOSE.parent / "../..").resolve() == DOCKERFILE.parent


def test_every_secret_file_compose_names_is_one_the_secrets_job_writes(tmp_path: Path) -> None:
    """Run the job's ``handshake kafka secrets`` (into tmp_path, seen at the job's directory) and
    find there every file the compose services name: start script, health check login, CA,
    password files; the broker's settings point at its certificate where the broker sees it."""
    job = secrets_job()
    mount = Path(job["directory"])
    run_kafka_secrets(job, tmp_path, mount)

    def local(seen: str) -> Path:
        return tmp_path / Path(seen).relative_to(mount)

    named = [services()["kafka"]["command"][1]]
    named += [
        w for w in " ".join(services()["kafka"]["healthcheck"]["test"]).split() if w.startswith(str(mount))
    ]
    for svc in built().values():
        env = env_of(svc)
        named += [env[k] for k in ("HANDSHAKE_KAFKA_PASSWORD_FILE", "HANDSHAKE_KAFKA_CA_FILE") if k in env]
    assert len(named) >= 2 + 2 * 4
    for path in named:
        assert local(path).is_file(), f"compose names {path}, which the secrets job does not write"
    props = dict(
        line.split("=", 1) for line in (tmp_path / "broker" / "server.properties").read_text().splitlines()
    )
    assert local(props["ssl.keystore.location"]).is_file()
    assert props["log.dirs"] == job["log_dir"]
    assert props["advertised.listeners"] == "SASL_SSL://kafka:9092,HOST://localhost:${KAFKA_HOST_PORT:-9092}"
    assert props["allow.everyone.if.no.acl.found"] == "false"
