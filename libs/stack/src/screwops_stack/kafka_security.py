"""Kafka's security on the native stack: its certificate (from the stack's CA,
:mod:`screwops_stack.certificates`), each principal's password, the SCRAM users and the ACLs
generated from the event catalogue.

Everything is made on the first ``make up`` under the stack home (``tls/`` and
``secrets/kafka/``, readable by the owner only) and kept afterwards, so a password or the CA
never changes under a running client. The ACLs are set again at every start, in one batch through
the Admin API, so a change to the catalogue reaches the broker with the next ``make up``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

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
)
from screwops_contracts import Rights, access_rights
from screwops_settings import KafkaSettings, kafka_ca_file, kafka_password_file

from screwops_stack import certificates
from screwops_stack.certificates import write_private as write_private  # compose and servers

ADMIN = "admin"
"""The stack manager's principal, the broker's super user: it creates the topics and the ACLs
(and the test suite acts as it, since each test makes topics of its own)."""
SCRAM_MARKER = ".screwops-scram"
"""Written into Kafka's data directory once its storage was formatted with the SCRAM users; a
data directory without it predates SASL and has no users to log in as."""


class StaleStackError(Exception):
    """The stack home predates Kafka's security; the message says what to run."""


@dataclass(frozen=True)
class Tls:
    """The native stack's CA and the broker's PEM key store (its key and certificate chain)."""

    home: Path

    @property
    def dir(self) -> Path:
        return self.home / "tls"

    @property
    def ca_cert(self) -> Path:
        return kafka_ca_file(self.home)

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def broker_keystore(self) -> Path:
        """The broker's private key and certificate in one file (``ssl.keystore.type=PEM``)."""
        return self.dir / "kafka.pem"


def principals() -> list[str]:
    """Every Kafka principal of the stack: the admin and each one of the catalogue's rights."""
    return [ADMIN, *sorted(access_rights())]


def ensure_passwords(home: Path) -> dict[str, str]:
    """Each principal's password, generated (and written 0600) the first time it is asked for."""
    passwords = {}
    for name in principals():
        path = kafka_password_file(home, name)
        if not path.is_file():
            write_private(path, secrets.token_urlsafe(32))
        passwords[name] = path.read_text().strip()
    return passwords


def ensure_tls(home: Path, *, hosts: Iterable[str], log: Path) -> Tls:
    """The broker's key store (its certificate for ``hosts``: names and IP addresses), issued
    once by the stack's CA (made first if the home has none)."""
    tls = Tls(home)
    if tls.broker_keystore.is_file() and tls.ca_cert.is_file():
        return tls
    ca = certificates.ensure_ca(home, log=log)
    key, cert = tls.dir / "kafka.key", tls.dir / "kafka.crt"
    certificates.issue(ca, "kafka", cert=cert, key=key, usage="serverAuth", hosts=hosts, log=log)
    # Kafka's PEM key store wants an unencrypted PKCS#8 key followed by the certificate chain.
    write_private(tls.broker_keystore, key.read_text() + cert.read_text() + tls.ca_cert.read_text())
    for scratch in (key, cert):
        scratch.unlink()
    return tls


def ensure_secrets(home: Path, *, hosts: Iterable[str], log: Path) -> dict[str, str]:
    """Everything Kafka's security needs under ``home``, made once: the CA, the broker's
    certificate for ``hosts`` and each principal's password (returned). The native stack calls it
    before Kafka starts, docker-compose's ``stack-secrets`` job into its secrets volume."""
    ensure_tls(home, hosts=hosts, log=log)
    return ensure_passwords(home)


def scram_jaas_config(name: str, password: str) -> str:
    """The JAAS line a SCRAM login as ``name`` takes (a listener's, for the broker's own
    connections, or a Java client's ``sasl.jaas.config``)."""
    return (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{name}" password="{password}";'
    )


def scram_arguments(passwords: dict[str, str]) -> list[str]:
    """``kafka-storage format`` arguments that create every principal's SCRAM-SHA-512 user."""
    return [
        arg
        for name, password in sorted(passwords.items())
        for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")
    ]


def check_formatted_with_users(data: Path) -> None:
    """Refuse a Kafka data directory formatted before SASL: its broker has no SCRAM users, so
    nobody could log in; the message says exactly what to run."""
    if (data / "meta.properties").exists() and not (data / SCRAM_MARKER).exists():
        raise StaleStackError(
            f"Kafka's data in {data} predates SASL/SCRAM (no users to log in as). Wipe the "
            "stack's data and start again: `make clean-stack && make up` (installed servers "
            "stay cached; every topic, model and dataset of this stack is lost)."
        )


def _principal(name: str) -> str:
    return f"User:{name}"


def acls(rights: Iterable[Rights]) -> set[ACL]:
    """The broker's ACLs for ``rights``: Write on each topic written, Read on each topic read
    (Describe comes with both), Read on each consumer group (literal names, and a service's
    ``<name>-`` prefix)."""

    def allow(
        name: str,
        operation: ACLOperation,
        kind: ResourceType,
        resource: str,
        pattern: ACLResourcePatternType = ACLResourcePatternType.LITERAL,
    ) -> ACL:
        return ACL(
            principal=_principal(name),
            host="*",
            operation=operation,
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(kind, resource, pattern),
        )

    wanted = set()
    for entry in rights:
        name = entry.principal
        wanted |= {allow(name, ACLOperation.WRITE, ResourceType.TOPIC, t) for t in entry.write}
        wanted |= {allow(name, ACLOperation.READ, ResourceType.TOPIC, t) for t in entry.read}
        wanted |= {allow(name, ACLOperation.READ, ResourceType.GROUP, g) for g in entry.groups}
        wanted |= {
            allow(name, ACLOperation.READ, ResourceType.GROUP, g, ACLResourcePatternType.PREFIXED)
            for g in entry.group_prefixes
        }
    return wanted


def admin_client(kafka: KafkaSettings) -> KafkaAdminClient:
    """kafka-python's admin client for ``kafka`` (the stack's admin): aiokafka's admin client has
    no ACL requests."""
    password = kafka.password.get_secret_value() if kafka.password else ""
    return KafkaAdminClient(
        bootstrap_servers=kafka.bootstrap_servers,
        security_protocol="SASL_SSL",
        sasl_mechanism=kafka.sasl_mechanism,
        sasl_plain_username=kafka.username,
        sasl_plain_password=password,
        ssl_cafile=str(kafka.ca_file),
        client_id="screwops-stack-acls",
        request_timeout_ms=10_000,
    )


def sync_acls(admin: KafkaAdminClient, wanted: set[ACL]) -> tuple[int, int]:
    """Make the broker's ACLs exactly ``wanted``: create those missing in one batch and delete
    those no longer wanted in another. Returns how many were created and deleted."""
    everything = ACLFilter(
        principal=None,
        host=None,
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
    )
    existing, error = admin.describe_acls(everything)
    if error.errno:
        raise RuntimeError(f"DescribeAcls failed: {error!r}")
    have = set(existing)
    missing = sorted(wanted - have, key=repr)
    stale = sorted(have - wanted, key=repr)
    if missing:
        result = admin.create_acls(missing)
        if result["failed"]:
            raise RuntimeError(f"CreateAcls failed: {result['failed'][:3]!r}")
    if stale:
        admin.delete_acls(stale)
    return len(missing), len(stale)
