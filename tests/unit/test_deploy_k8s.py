"""deploy/k8s: manifests parse, workloads probe real endpoints and run real commands and settings."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.topics import EVENTS_TOPIC, TOPICS_BY_NAME
from tests.unit.test_deploy_common import (
    CONTRACT_PORTS,
    DEPLOY,
    HOST_FIELDS,
    KNOWN_IMAGES,
    PORT_FIELDS,
    ROOT,
    check_handshake_args,
    dockerfile_env,
    effective,
    env_fields,
    image_repository,
    kafka_command,
    project_image,
    run_kafka_secrets,
    unknown_env,
)

K8S = DEPLOY / "k8s"
WORKLOADS = ("Deployment", "StatefulSet")


@cache
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


@cache
def documents() -> tuple[dict[str, Any], ...]:
    docs = []
    for name in kustomization()["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc is not None:
                doc["__file__"] = name
                docs.append(doc)
    return tuple(docs)


def of_kind(*kinds: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] in kinds]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def handshake_containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload or job, container) for every container running the Handshake image."""
    return [
        (doc, c)
        for doc in of_kind(*WORKLOADS, "Job")
        for c in pod_spec(doc)["containers"]
        if image_repository(c["image"]) == "handshake"
    ]


@cache
def config_maps() -> dict[str, dict[str, str]]:
    return {
        d["metadata"]["name"]: {str(k): str(v) for k, v in d.get("data", {}).items()}
        for d in of_kind("ConfigMap")
    }


def container_env(container: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(variables from ConfigMaps, variables of the container itself); secrets count as set."""
    shared: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref:
            assert ref["name"] in config_maps(), f"ConfigMap {ref['name']} is not in the kustomization"
            shared.update(config_maps()[ref["name"]])
    own = {e["name"]: str(e.get("value", "<from secret or field>")) for e in container.get("env", [])}
    return shared, own


def service_of(container: dict[str, Any]) -> str | None:
    assert "command" not in container, "keep the image's ENTRYPOINT (handshake); set args only"
    return check_handshake_args(container["args"])


def serving() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    out = {}
    for doc, container in handshake_containers():
        service = service_of(container)
        if service is not None:
            assert doc["kind"] in WORKLOADS
            out[service] = (doc, container)
    return out


def test_kustomization_lists_existing_files_and_every_manifest() -> None:
    listed = kustomization()["resources"]
    for name in listed:
        assert (K8S / name).is_file(), f"kustomization.yaml lists missing {name}"
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk == set(listed), f"not listed: {sorted(on_disk - set(listed))}"
    assert kustomization().get("namespace") == "handshake"
    assert [d["metadata"]["name"] for d in of_kind("Namespace")] == ["handshake"]


def test_every_document_parses_with_kind_and_name() -> None:
    assert documents()
    for doc in documents():
        assert doc.get("apiVersion") and doc.get("kind"), doc["__file__"]
        assert doc.get("metadata", {}).get("name"), doc["__file__"]
        assert "namespace" not in doc["metadata"], "the kustomization sets the namespace"


def secrets_command() -> list[str]:
    """The ``handshake kafka secrets`` line kustomization.yaml tells operators to run first."""
    lines = [
        line.removeprefix("#").strip()
        for line in (K8S / "kustomization.yaml").read_text().splitlines()
        if line.removeprefix("#").strip().startswith("handshake kafka secrets ")
    ]
    assert len(lines) == 1, "kustomization.yaml says how to make deploy/k8s/secrets, once"
    return shlex.split(lines[0])[1:]


def make_secrets(where: Path) -> tuple[dict[str, Any], Path]:
    """A copy of deploy/k8s in ``where`` with its secrets made by the documented command."""
    copy = where / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("secrets"))
    params = kafka_command(secrets_command())
    assert params["directory"] == Path("deploy/k8s/secrets")
    run_kafka_secrets(params, copy / "secrets", params["mount"])
    return params, copy


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_builds_with_the_secrets_made_as_documented(tmp_path: Path) -> None:
    params, copy = make_secrets(tmp_path)
    out = subprocess.run(
        ["kubectl", "kustomize", str(copy)], capture_output=True, text=True, timeout=30, check=False
    )
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    secrets = {d["metadata"]["name"].rsplit("-", 1)[0]: d for d in built if d["kind"] == "Secret"}
    assert set(secrets) == {"kafka-broker", "kafka-clients"}
    assert len(built) == len(documents()) + 2
    assert all(d["metadata"].get("namespace", "handshake") == "handshake" for d in built)
    # every Secret item a pod mounts exists, under the hashed name kustomize gave it
    for doc in built:
        if doc["kind"] not in (*WORKLOADS, "Job"):
            continue
        for volume in pod_spec(doc).get("volumes", []):
            if "secret" not in volume:
                continue
            secret = next(
                s for s in secrets.values() if s["metadata"]["name"] == volume["secret"]["secretName"]
            )
            for item in volume["secret"].get("items", []):
                assert item["key"] in secret["data"], (doc["metadata"]["name"], item["key"])
    # the broker's settings: advertised where the clients dial, and its files where it mounts them
    props = dict(
        line.split("=", 1) for line in (copy / "secrets/broker/server.properties").read_text().splitlines()
    )
    assert props["ssl.keystore.location"] == f"{params['mount']}/broker/broker.pem"
    bootstrap = config_maps()["handshake-config"]["HANDSHAKE_KAFKA_BOOTSTRAP"]
    advertised = props["advertised.listeners"].split("//", 1)[1]
    for host in (bootstrap.rsplit(":", 1)[0], advertised.rsplit(":", 1)[0], "localhost"):
        assert host in params["host"], f"the broker's certificate does not name {host}"


def secret_volume(doc: dict[str, Any], container: dict[str, Any], secret: str) -> tuple[str, list[str]]:
    """(mount path, keys) of the Secret ``secret`` in a container."""
    volume = next(v for v in pod_spec(doc)["volumes"] if v.get("secret", {}).get("secretName") == secret)
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert mount.get("readOnly") is True
    keys = [item["key"] for item in volume["secret"].get("items", [])]
    return mount["mountPath"], keys


def test_kafka_runs_the_generated_start_script_from_its_secret() -> None:
    params = kafka_command(secrets_command())
    kafka = next(d for d in of_kind("StatefulSet") if d["metadata"]["name"] == "kafka")
    container = pod_spec(kafka)["containers"][0]
    path, keys = secret_volume(kafka, container, "kafka-broker")
    assert path == f"{params['mount']}/broker" and keys == []
    assert container["command"] == ["/bin/bash", f"{path}/start.sh"]
    assert pod_spec(kafka)["securityContext"]["fsGroup"] == 1000  # the image's appuser reads 0440
    assert params["controller"].startswith("127.0.0.1:")
    service = next(s for s in of_kind("Service") if s["metadata"]["name"] == "kafka")
    assert [p["port"] for p in service["spec"]["ports"]] == [9092], "the controller listener stays inside"


def test_each_container_logs_in_as_its_own_principal_with_only_its_password() -> None:
    from handshake.security import ADMIN

    params = kafka_command(secrets_command())
    shared = config_maps()["handshake-config"]
    assert shared["HANDSHAKE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert shared["HANDSHAKE_KAFKA_CA_FILE"] == f"{params['mount']}/clients/ca.pem"
    for doc, container in handshake_containers():
        service = service_of(container)
        principal = ADMIN if service is None else f"handshake-{service}"
        _, own = container_env(container)
        path, keys = secret_volume(doc, container, "kafka-clients")
        assert path == f"{params['mount']}/clients"
        assert sorted(keys) == sorted(["ca.pem", principal]), doc["metadata"]["name"]
        assert own["HANDSHAKE_KAFKA_USERNAME"] == principal
        assert own["HANDSHAKE_KAFKA_PASSWORD_FILE"] == f"{path}/{principal}"
        assert pod_spec(doc)["securityContext"]["fsGroup"] == pod_spec(doc)["securityContext"]["runAsGroup"]


def test_one_workload_per_service_and_images_are_consistent() -> None:
    assert set(serving()) == set(CONTRACT_PORTS)
    assert serving()["aggregator"][0]["kind"] == "StatefulSet"
    assert serving()["ingest"][0]["kind"] == "Deployment"
    assert serving()["api"][0]["kind"] == "Deployment"
    for doc in of_kind(*WORKLOADS, "Job"):
        for container in pod_spec(doc)["containers"]:
            image = container["image"]
            if image_repository(image) == "handshake":
                assert image == project_image(), f"{doc['metadata']['name']}: use {project_image()}"
            else:
                assert image_repository(image) in KNOWN_IMAGES, image


def test_topics_job_runs_handshake_kafka_topics() -> None:
    jobs = [doc for doc, c in handshake_containers() if doc["kind"] == "Job" and service_of(c) is None]
    assert len(jobs) == 1
    assert pod_spec(jobs[0])["restartPolicy"] in ("OnFailure", "Never")


@pytest.mark.parametrize("kind", WORKLOADS)
def test_selectors_match_template_labels(kind: str) -> None:
    for doc in of_kind(kind):
        selector = doc["spec"]["selector"]["matchLabels"]
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert selector and selector.items() <= labels.items(), doc["metadata"]["name"]


def test_services_select_a_workload_and_target_its_ports() -> None:
    workloads = of_kind(*WORKLOADS)
    for svc in of_kind("Service"):
        selector = svc["spec"]["selector"]
        matched = [
            w for w in workloads if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, f"Service {svc['metadata']['name']} selects {len(matched)} workloads"
        names = {p.get("name") for c in pod_spec(matched[0])["containers"] for p in c.get("ports", [])}
        numbers = {p["containerPort"] for c in pod_spec(matched[0])["containers"] for p in c.get("ports", [])}
        assert names or numbers, f"{matched[0]['metadata']['name']} declares no ports"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in names or target in numbers, (
                f"{svc['metadata']['name']}: no container port {target}"
            )
    stateful = {d["spec"]["serviceName"] for d in of_kind("StatefulSet")}
    assert stateful <= {s["metadata"]["name"] for s in of_kind("Service")}


def _port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


@pytest.mark.parametrize("service", sorted(CONTRACT_PORTS))
def test_probes_readyz_and_healthz_on_the_service_port(service: str) -> None:
    doc, container = serving()[service]
    shared, own = container_env(container)
    _, port = effective(service, {**dockerfile_env(), **shared, **own}, PORT_FIELDS)
    probes = {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe, path in probes.items():
        spec = container.get(probe, {})
        if "exec" in spec:  # the api's token-aware readiness probe requests the URL itself
            command = " ".join(spec["exec"]["command"])
            assert f"http://127.0.0.1:{port}{path}" in command, f"{probe} probes another URL: {command}"
            assert "HANDSHAKE_API_TOKENS" in command
            continue
        get = spec.get("httpGet")
        assert get, f"{doc['metadata']['name']} needs an HTTP {probe}"
        assert get["path"] == path
        assert _port_number(container, get["port"]) == int(port), f"{probe} probes another port than {port}"


@pytest.mark.parametrize("service", sorted(CONTRACT_PORTS))
def test_probed_paths_are_served(service: str) -> None:
    source = "\n".join(p.read_text() for p in sorted((ROOT / "services" / service).rglob("*.py")))
    for path in ("/readyz", "/healthz", "/metrics"):
        assert re.search(rf"""["']{re.escape(path)}["']""", source), (
            f"services/{service} serves no {path} route yet, but deploy/ probes or scrapes it"
        )


@pytest.mark.parametrize("service", sorted(CONTRACT_PORTS))
def test_containers_listen_on_all_interfaces(service: str) -> None:
    _, container = serving()[service]
    shared, own = container_env(container)
    field, host = effective(service, {**dockerfile_env(), **shared, **own}, HOST_FIELDS)
    assert host == "0.0.0.0", f"{service}: {field} is {host!r}; in a pod it must be 0.0.0.0"


def test_handshake_env_vars_are_real_settings() -> None:
    consumers: dict[str, set[str | None]] = {}
    for doc, container in handshake_containers():
        service = service_of(container)
        shared, own = container_env(container)
        unknown = unknown_env(service, own)
        assert not unknown, (
            f"{doc['metadata']['name']}: {unknown} are no settings of {service or 'kafka topics'}"
        )
        for key in shared:
            consumers.setdefault(key, set()).add(service)
    for key, services in consumers.items():
        if key.startswith("HANDSHAKE_"):
            assert any(key in env_fields(s) for s in services), (
                f"ConfigMap {key} is read by none of {services}"
            )


def test_handshake_containers_have_resources_and_run_as_non_root() -> None:
    for doc, container in handshake_containers():
        name = doc["metadata"]["name"]
        resources = container.get("resources", {})
        assert resources.get("requests") and resources.get("limits", {}).get("memory"), name
        assert pod_spec(doc).get("securityContext", {}).get("runAsNonRoot") is True, name


def test_ingest_and_api_are_replicated_deployments() -> None:
    for service in ("ingest", "api"):
        doc, _ = serving()[service]
        assert doc["spec"]["replicas"] >= 2


def test_aggregator_statefulset_has_state_volumes_and_fits_the_partitions() -> None:
    doc, container = serving()["aggregator"]
    replicas = doc["spec"]["replicas"]
    assert 1 <= replicas <= TOPICS_BY_NAME[EVENTS_TOPIC].partitions
    shared, own = container_env(container)
    _, data_dir = effective("aggregator", {**shared, **own}, ("data_dir",))
    _, store = effective("aggregator", {**shared, **own}, ("store",))
    assert str(store).startswith("rocksdb")
    claims = {t["metadata"]["name"] for t in doc["spec"]["volumeClaimTemplates"]}
    mounts = [m for m in container["volumeMounts"] if m["name"] in claims]
    assert any(str(data_dir).startswith(m["mountPath"].rstrip("/") + "/") for m in mounts), (
        f"the aggregator data dir {data_dir} is not on a volumeClaimTemplate"
    )


def test_configmap_points_at_a_reachable_kafka() -> None:
    bootstrap = config_maps()["handshake-config"]["HANDSHAKE_KAFKA_BOOTSTRAP"]
    host = bootstrap.split(",")[0].rsplit(":", 1)[0]
    kafka = [s for s in of_kind("Service") if s["metadata"]["name"] == host]
    if kafka:  # the trial broker of kafka.yaml (a real cluster is outside the kustomization)
        assert [d for d in of_kind("StatefulSet") if d["metadata"]["name"] == "kafka"]
        statefulset = next(d for d in of_kind("StatefulSet") if d["metadata"]["name"] == "kafka")
        assert pod_spec(statefulset)["containers"][0]["image"] == "apache/kafka:3.9.1"
