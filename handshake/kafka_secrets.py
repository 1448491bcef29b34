"""``handshake kafka secrets DIR``: a secured broker's files for containers (compose, Kubernetes).

The same CA, certificates, SCRAM passwords and broker settings as ``handshake kafka start
--secure`` (:mod:`handshake.security`), laid out for containers that see ``DIR`` at ``mount``:

- ``DIR/broker/``: ``server.properties``, ``broker.pem``, ``ca.pem``, ``start.sh`` (formats KRaft
  storage once with every SCRAM credential, then runs the broker) and ``admin.properties`` (the
  Java tools' login, for a health check). Only the broker's container needs it.
- ``DIR/clients/``: ``ca.pem`` and one file per principal holding its password
  (``HANDSHAKE_KAFKA_PASSWORD_FILE``). A container mounts the CA and its own password.

``DIR`` itself keeps the state (CA key, passwords, cluster id): a second run reuses it, reissues
the broker's certificate for the given hosts and rewrites the files above (so a changed port or
host name takes effect). Every file but the CA certificate is 0600.
"""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from handshake.broker import new_cluster_id, node_properties
from handshake.errors import HandshakeError
from handshake.security import ADMIN, SERVICES, Secrets, listener_properties, write_private

STORAGE_TOOL = "/opt/kafka/bin/kafka-storage.sh"  # the apache/kafka image's tools
SERVER_START = "/opt/kafka/bin/kafka-server-start.sh"


@dataclass(frozen=True)
class Listener:
    """A SASL_SSL listener: its name, where it binds and what clients are told to dial."""

    name: str
    bind: str
    advertised: str

    @classmethod
    def parse(cls, text: str) -> Listener:
        """``NAME=BIND/ADVERTISED``, e.g. ``SASL_SSL=:9092/kafka:9092``."""
        name, sep, rest = text.partition("=")
        bind, slash, advertised = rest.partition("/")
        if not (
            sep
            and slash
            and name.isidentifier()
            and name.upper() == name
            and ":" in bind
            and ":" in advertised
        ):
            raise HandshakeError(
                f"listener {text!r}: expected NAME=BIND/ADVERTISED, e.g. SASL_SSL=:9092/kafka:9092"
            )
        if name == "CONTROLLER":
            raise HandshakeError("listener CONTROLLER is the internal KRaft one; name it otherwise")
        return cls(name, bind, advertised)


@dataclass(frozen=True)
class Layout:
    """What ``export`` writes: where the state lives and where containers see it."""

    directory: Path
    mount: Path

    @property
    def broker(self) -> Path:
        return self.directory / "broker"

    @property
    def clients(self) -> Path:
        return self.directory / "clients"

    def seen(self, path: Path) -> Path:
        """``path`` (under ``directory``) as a container sees it."""
        return self.mount / path.relative_to(self.directory)


def _cluster_id(directory: Path) -> str:
    path = directory / "cluster.id"
    if not path.exists():
        path.write_text(new_cluster_id() + "\n")
    return path.read_text().strip()


def _owned(path: Path, owner: tuple[int, int] | None) -> None:
    if owner is None:
        return
    for p in (path, *path.rglob("*")):
        os.chown(p, *owner)


def start_script(layout: Layout, secrets: Secrets, cluster_id: str) -> str:
    """The broker container's command: format storage once (with the SCRAM credentials), run."""
    props = shlex.quote(str(layout.seen(layout.broker / "server.properties")))
    scram = " ".join(shlex.quote(arg) for arg in secrets.scram_format_args())
    return (
        "#!/bin/bash\n"
        "# Written by `handshake kafka secrets`: format KRaft storage once, with every SCRAM\n"
        "# credential, then run the broker. KAFKA_STORAGE / KAFKA_SERVER_START override the tools.\n"
        "set -euo pipefail\n"
        f'"${{KAFKA_STORAGE:-{STORAGE_TOOL}}}" format --ignore-formatted -t {cluster_id} -c {props} {scram}\n'
        f'exec "${{KAFKA_SERVER_START:-{SERVER_START}}}" {props}\n'
    )


def export(
    directory: Path,
    *,
    hosts: tuple[str, ...],
    listeners: list[Listener],
    controller: str = "127.0.0.1:9093",
    log_dir: str = "/var/lib/kafka/data",
    mount: Path | None = None,
    broker_owner: tuple[int, int] | None = None,
    client_owner: tuple[int, int] | None = None,
) -> Layout:
    """Create (once) the secrets in ``directory`` and write the broker's and clients' files."""
    from handshake.access import client_properties

    if not listeners:
        raise HandshakeError("at least one --listener is needed")
    if not hosts:
        raise HandshakeError("at least one --host (the name clients dial) is needed")
    layout = Layout(directory, mount or directory)
    secrets = Secrets(directory)
    if not secrets.exists():
        secrets.create(hosts)
    else:
        secrets.issue_broker_certificate(hosts)
    os.chmod(directory, 0o755)  # the state files in it stay 0600; each container reads its own folder
    for sub in (layout.broker, layout.clients):
        shutil.rmtree(sub, ignore_errors=True)
        sub.mkdir(mode=0o700)
    broker_pem, ca = layout.broker / "broker.pem", layout.broker / "ca.pem"
    write_private(broker_pem, secrets.broker_pem.read_bytes())
    shutil.copyfile(secrets.ca_file, ca)
    props = node_properties(1, f"1@{controller}", log_dir, 1) | listener_properties(
        {lst.name: (lst.bind, lst.advertised) for lst in listeners},
        controller,
        admin_password=secrets.password(ADMIN),
        broker_pem=layout.seen(broker_pem),
        ca_file=layout.seen(ca),
    )
    write_private(
        layout.broker / "server.properties", "".join(f"{k}={v}\n" for k, v in props.items()).encode()
    )
    write_private(layout.broker / "start.sh", start_script(layout, secrets, _cluster_id(directory)).encode())
    port = listeners[0].bind.rpartition(":")[2]
    local = client_properties(
        f"localhost:{port}", ADMIN, secrets.password(ADMIN), str(layout.seen(ca)), java=True
    )
    write_private(layout.broker / "admin.properties", local.encode())
    shutil.copyfile(secrets.ca_file, layout.clients / "ca.pem")
    for principal in (ADMIN, *SERVICES):
        write_private(layout.clients / principal, secrets.password(principal).encode() + b"\n")
    _owned(layout.broker, broker_owner)
    _owned(layout.clients, client_owner)
    return layout
