"""Applying :mod:`handshake.security`'s rules on a secured broker (kafka-python's admin client, as ``admin``)."""

from __future__ import annotations

import re
import secrets

from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from handshake.errors import HandshakeError
from handshake.security import ANALYST_PREFIX, SERVICES, Rule, analyst_rules
from handshake.settings import KafkaSettings
from handshake.topics import admin_client

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def _acl(rule: Rule) -> ACL:
    pattern = ACLResourcePatternType.PREFIXED if rule.prefixed else ACLResourcePatternType.LITERAL
    return ACL(
        principal=f"User:{rule.principal}",
        host="*",
        operation=ACLOperation[rule.operation],
        permission_type=ACLPermissionType.ALLOW,
        resource_pattern=ResourcePattern(ResourceType[rule.resource], rule.name, pattern),
    )


def _rule(acl: ACL) -> Rule:
    pattern = acl.resource_pattern
    return Rule(
        principal=acl.principal.removeprefix("User:"),
        operation=acl.operation.name,
        resource=pattern.resource_type.name,
        name=pattern.resource_name,
        prefixed=pattern.pattern_type == ACLResourcePatternType.PREFIXED,
    )


def current_rules(admin: KafkaAdminClient) -> set[Rule]:
    """Every ALLOW ACL on the broker."""
    everything = ACLFilter(
        principal=None,
        host="*",
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
    )
    acls, _ = admin.describe_acls(everything)  # raises on an error
    return {_rule(a) for a in acls if a.permission_type == ACLPermissionType.ALLOW}


def apply_rules(admin: KafkaAdminClient, rules: list[Rule]) -> list[Rule]:
    """Create the rules the broker lacks; returns them (a second run creates nothing)."""
    missing = sorted(set(rules) - current_rules(admin))
    if missing:
        result = admin.create_acls([_acl(r) for r in missing])
        if result.get("failed"):
            raise HandshakeError(f"ACLs refused: {result['failed']}")
    return missing


def declare(admin: KafkaSettings, rules: list[Rule]) -> list[Rule]:
    """Apply ``rules`` on the broker that ``admin`` (the ``admin`` principal's login) reaches;
    returns the rules it created."""
    client = admin_client(admin.kafka_bootstrap, security=admin.kafka_python_config())
    try:
        return apply_rules(client, rules)
    finally:
        client.close()


def _check_name(name: str) -> None:
    if not NAME.match(name):
        raise HandshakeError(
            "an analyst's name is 1-40 of a-z, 0-9, '-' and '_', starting with a letter or digit"
        )


def scram_users(admin: KafkaAdminClient) -> list[str]:
    return sorted(admin.describe_user_scram_credentials())


def add_analyst(admin: KafkaAdminClient, settings: KafkaSettings, name: str) -> str:
    """Create analyst ``name`` (a SCRAM credential and read-only ACLs); returns the password."""
    _check_name(name)
    principal = ANALYST_PREFIX + name
    if principal in scram_users(admin):
        raise HandshakeError(f"analyst {name!r} exists; revoke it first to issue a new password")
    password = secrets.token_urlsafe(24)
    errors = admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(principal, ScramMechanism.SCRAM_SHA_512, password, iterations=8192)]
    )
    if errors.get(principal):
        raise HandshakeError(f"the broker refused the credential: {errors[principal]}")
    apply_rules(admin, analyst_rules(settings, name))
    return password


def list_analysts(admin: KafkaAdminClient) -> list[str]:
    return [u.removeprefix(ANALYST_PREFIX) for u in scram_users(admin) if u.startswith(ANALYST_PREFIX)]


def revoke_analyst(admin: KafkaAdminClient, settings: KafkaSettings, name: str) -> None:
    """Delete the analyst's credential (new connections are refused at once) and its ACLs."""
    _check_name(name)
    principal = ANALYST_PREFIX + name
    if principal in SERVICES or principal not in scram_users(admin):
        raise HandshakeError(f"no analyst {name!r}")
    errors = admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion(principal, ScramMechanism.SCRAM_SHA_512)]
    )
    if errors.get(principal):
        raise HandshakeError(f"the broker refused: {errors[principal]}")
    for rule in analyst_rules(settings, name):
        acl = _acl(rule)
        admin.delete_acls(
            [
                ACLFilter(
                    principal=acl.principal,
                    host="*",
                    operation=acl.operation,
                    permission_type=ACLPermissionType.ALLOW,
                    resource_pattern=ResourcePatternFilter(
                        acl.resource_pattern.resource_type,
                        acl.resource_pattern.resource_name,
                        acl.resource_pattern.pattern_type,
                    ),
                )
            ]
        )


def client_properties(
    bootstrap: str, principal: str, password: str, ca_file: str, *, java: bool = False
) -> str:
    """A client configuration: librdkafka's (``kcat -F``), or the Java clients' (``--java``)."""
    lines = [f"bootstrap.servers={bootstrap}", "security.protocol=SASL_SSL", "sasl.mechanism=SCRAM-SHA-512"]
    if java:
        lines += [
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required"
            f' username="{principal}" password="{password}";',
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={ca_file}",
        ]
    else:
        lines += [f"sasl.username={principal}", f"sasl.password={password}", f"ssl.ca.location={ca_file}"]
    return "\n".join(lines) + "\n"
