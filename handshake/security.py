"""A secured broker: TLS, SCRAM identities and least-privilege ACLs (``handshake kafka start --secure``).

Every client speaks SASL_SSL with SCRAM-SHA-512 and has its own principal:

- ``admin``: the broker's own identity and the only super user (topics, ACLs, credentials);
- ``handshake-ingest``, ``handshake-aggregator``, ``handshake-api``: the services;
- ``handshake-partners``: the ``handshake partners`` CLI, the only writer of the partners topic;
- ``analyst-<name>``: analysts (``handshake analysts add``), readers of the public topics.

:func:`acl_rules` declares what each may do (topics as code: ``handshake kafka topics`` applies
them). Nothing else is allowed (``allow.everyone.if.no.acl.found=false``). The controller
listener stays on 127.0.0.1 and takes only the broker's own PLAIN login (KRaft keeps SCRAM
credentials in the metadata the controller serves, so it cannot authenticate with them).

Files in ``<data dir>/secrets`` are 0600 (the CA's certificate ``ca.pem`` is public): the CA key,
the broker's key and certificate, and ``credentials.json`` with the service passwords. Analysts'
passwords are stored nowhere but on the broker, as SCRAM credentials (salted hashes).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr

from handshake.settings import KafkaSettings

S = TypeVar("S", bound=KafkaSettings)
MECHANISM = "SCRAM-SHA-512"
ADMIN = "admin"
SERVICES = ("handshake-ingest", "handshake-aggregator", "handshake-api", "handshake-partners")
ANALYST_PREFIX = "analyst-"
LOCAL_HOSTS = ("localhost", "127.0.0.1")
PUBLIC_TOPICS = ("events_topic", "pair_stats_topic", "dead_letter_topic")  # KafkaSettings fields


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file only its owner can read (created 0600, never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class Secrets:
    """The secured broker's files in ``<data dir>/secrets``."""

    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def broker_pem(self) -> Path:
        return self.directory / "broker.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def credentials_file(self) -> Path:
        return self.directory / "credentials.json"

    def exists(self) -> bool:
        return self.credentials_file.exists() and self.ca_file.exists() and self.broker_pem.exists()

    def create(self, hosts: tuple[str, ...] = LOCAL_HOSTS) -> None:
        """A CA, the broker's certificate for ``hosts`` and the service passwords."""
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        ca_key, ca_cert = _ca()
        from cryptography.hazmat.primitives import serialization

        pem = serialization.Encoding.PEM
        self.ca_file.write_bytes(ca_cert.public_bytes(pem))
        write_private(
            self.ca_key, ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, _no_encryption())
        )
        self.issue_broker_certificate(hosts)
        passwords = {name: secrets.token_urlsafe(24) for name in (ADMIN, *SERVICES)}
        write_private(self.credentials_file, json.dumps(passwords, indent=1).encode())

    def issue_broker_certificate(self, hosts: tuple[str, ...]) -> None:
        """(Re)issue the broker's key and certificate, for ``hosts`` (names or IP addresses)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
        key, cert = _broker_certificate(ca_key, ca_cert, hosts)
        pem = serialization.Encoding.PEM
        pkcs8 = serialization.PrivateFormat.PKCS8
        write_private(
            self.broker_pem, key.private_bytes(pem, pkcs8, _no_encryption()) + cert.public_bytes(pem)
        )

    def password(self, principal: str) -> str:
        passwords: dict[str, str] = json.loads(self.credentials_file.read_text())
        return passwords[principal]

    def client_env(self, principal: str) -> dict[str, str]:
        """``HANDSHAKE_KAFKA_*`` variables for a service or CLI running as ``principal``."""
        return {
            "HANDSHAKE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "HANDSHAKE_KAFKA_SASL_MECHANISM": MECHANISM,
            "HANDSHAKE_KAFKA_USERNAME": principal,
            "HANDSHAKE_KAFKA_PASSWORD": self.password(principal),
            "HANDSHAKE_KAFKA_CA_FILE": str(self.ca_file),
        }

    def client_settings(self, principal: str, bootstrap: str) -> KafkaSettings:
        return self.login(KafkaSettings(kafka_bootstrap=bootstrap), principal)

    def login(self, settings: S, principal: str) -> S:
        """``settings`` (any service's) as ``principal`` on this broker: SASL_SSL, its password, the CA."""
        return settings.model_copy(
            update={
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": MECHANISM,
                "kafka_username": principal,
                "kafka_password": SecretStr(self.password(principal)),
                "kafka_ca_file": self.ca_file,
            }
        )

    def scram_format_args(self) -> list[str]:
        """``kafka-storage format`` arguments that store every service's SCRAM credential."""
        out = []
        for name in (ADMIN, *SERVICES):
            out += ["--add-scram", f"{MECHANISM}=[name={name},password={self.password(name)}]"]
        return out

    def broker_properties(self, port: int, controller_port: int) -> dict[str, str]:
        """The native broker's listeners: SASL_SSL on 127.0.0.1:``port``."""
        return listener_properties(
            {"SASL_SSL": (f"127.0.0.1:{port}", f"127.0.0.1:{port}")},
            f"127.0.0.1:{controller_port}",
            admin_password=self.password(ADMIN),
            broker_pem=self.broker_pem,
            ca_file=self.ca_file,
        )


def listener_properties(
    listeners: dict[str, tuple[str, str]],
    controller: str,
    *,
    admin_password: str,
    broker_pem: Path,
    ca_file: Path,
) -> dict[str, str]:
    """A secured broker's listeners, natively or in a container.

    ``listeners``: name → (bind ``host:port``, advertised ``host:port``), all SASL_SSL with SCRAM;
    the first carries the inter-broker traffic. ``controller``: the KRaft controller's bind
    address, SASL_PLAINTEXT with the broker's own PLAIN login (keep it on 127.0.0.1)."""
    admin = admin_password
    scram_login = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" password="{admin}";'
    props = {
        "listeners": ",".join(
            [*(f"{n}://{bind}" for n, (bind, _) in listeners.items()), f"CONTROLLER://{controller}"]
        ),
        "advertised.listeners": ",".join(f"{n}://{adv}" for n, (_, adv) in listeners.items()),
        "inter.broker.listener.name": next(iter(listeners)),
        "listener.security.protocol.map": ",".join(
            [*(f"{n}:SASL_SSL" for n in listeners), "CONTROLLER:SASL_PLAINTEXT"]
        ),
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        **{f"listener.name.{n.lower()}.scram-sha-512.sasl.jaas.config": scram_login for n in listeners},
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": (
            "org.apache.kafka.common.security.plain.PlainLoginModule required"
            f' username="{ADMIN}" password="{admin}" user_{ADMIN}="{admin}";'
        ),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(broker_pem),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(ca_file),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{ADMIN}",
    }
    return props


def _no_encryption() -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.NoEncryption()


def _ca() -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Handshake local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return ca_key, ca_cert


def _broker_certificate(ca_key: Any, ca_cert: Any, hosts: tuple[str, ...]) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


# --- ACLs: topics as code -----------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Rule:
    """One ALLOW ACL: ``principal`` may ``operation`` on ``resource`` ``name`` (a prefix when
    ``prefixed``), from any host."""

    principal: str
    operation: str  # READ, WRITE, CREATE, DESCRIBE, DESCRIBE_CONFIGS, IDEMPOTENT_WRITE, ALL
    resource: str  # TOPIC, GROUP, CLUSTER, TRANSACTIONAL_ID
    name: str
    prefixed: bool = False

    def __str__(self) -> str:
        pattern = f"{self.name}*" if self.prefixed else self.name
        return f"User:{self.principal} {self.operation} {self.resource}:{pattern}"


def acl_rules(settings: KafkaSettings, app_id: str = "handshake-aggregator") -> list[Rule]:
    """What each service principal may do, and nothing more."""
    events, partners = settings.events_topic, settings.partners_topic
    stats, dead = settings.pair_stats_topic, settings.dead_letter_topic
    declared = (events, partners, stats, dead)
    rules: list[Rule] = []
    for service in ("handshake-ingest", "handshake-aggregator", "handshake-api"):
        # at start every service checks the declared topics' partitions and policies
        rules += [Rule(service, op, "TOPIC", t) for t in declared for op in ("DESCRIBE", "DESCRIBE_CONFIGS")]
    rules += [
        Rule("handshake-ingest", "WRITE", "TOPIC", events),
        Rule("handshake-ingest", "READ", "TOPIC", events),  # the follower: revisions already stored
        Rule("handshake-ingest", "READ", "TOPIC", partners),
        Rule("handshake-ingest", "IDEMPOTENT_WRITE", "CLUSTER", "kafka-cluster"),
        Rule("handshake-aggregator", "READ", "TOPIC", events),
        Rule("handshake-aggregator", "WRITE", "TOPIC", stats),
        Rule("handshake-aggregator", "DESCRIBE", "TOPIC", stats),
        Rule("handshake-aggregator", "WRITE", "TOPIC", dead),
        Rule("handshake-aggregator", "ALL", "TOPIC", f"{app_id}-", prefixed=True),  # changelogs, partials
        Rule("handshake-aggregator", "ALL", "GROUP", app_id),
        Rule("handshake-aggregator", "IDEMPOTENT_WRITE", "CLUSTER", "kafka-cluster"),
        Rule("handshake-api", "READ", "TOPIC", events),
        Rule("handshake-api", "READ", "TOPIC", stats),
        Rule("handshake-partners", "WRITE", "TOPIC", partners),
        Rule("handshake-partners", "READ", "TOPIC", partners),
        Rule("handshake-partners", "DESCRIBE", "TOPIC", partners),
        Rule("handshake-partners", "IDEMPOTENT_WRITE", "CLUSTER", "kafka-cluster"),
    ]
    return sorted(set(rules))


def analyst_rules(settings: KafkaSettings, name: str) -> list[Rule]:
    """An analyst reads the public topics and uses consumer groups named ``analyst-<name>.*``."""
    principal = ANALYST_PREFIX + name
    rules = [
        Rule(principal, op, "TOPIC", getattr(settings, field))
        for field in PUBLIC_TOPICS
        for op in ("READ", "DESCRIBE")
    ]
    rules.append(Rule(principal, "READ", "GROUP", f"{principal}.", prefixed=True))
    return rules
