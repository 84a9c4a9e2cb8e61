"""docker-compose's one-shot jobs (the stack image, ``deploy/stack/Dockerfile``): Kafka secured
by the native stack's own functions, so compose's broker takes the same SCRAM-SHA-512 over TLS,
the same users and the same ACLs as the one ``make up`` starts.

``secrets`` (the ``stack-secrets`` job) makes the CA, the broker's certificate, every
principal's password and Triton's model-control key in the secrets volume, mounted as the job's
stack home, so its layout is a native home's (``tls/``, ``secrets/kafka/<principal>``,
``secrets/triton/model-control``), plus ``broker/``: what compose's broker reads when it starts
(``deploy/compose/kafka-start.sh``), the SCRAM users to format its storage with and its
listeners' logins, and the admin's client config for its health check. The job runs as root and
gives each file to the uid of the one container that reads it, so every service mounts only its
own password and the CA, read-only (and Triton, the registry and the evaluator the key). Nothing
is replaced once made.

``kafka`` (the ``kafka-init`` job) creates the catalogue's topics and syncs every principal's
ACLs as the admin once the broker is healthy: :func:`screwops_stack.servers.provision_kafka`,
what the native stack does after Kafka is ready.

MinIO likewise: ``secrets`` also makes its root password and each MinIO user's secret key
(``secrets/minio/<principal>``, the services' uid's: each service mounts its own, MinIO the
root's), and ``minio`` (the ``minio-init`` job) makes the buckets, the drop bucket's notification
and every user with its policy as the root once MinIO is healthy:
:func:`screwops_stack.minio_security.provision`, what the native stack does after MinIO is ready.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from screwops_settings import StackSettings, kafka_password_file, minio_secret_file

from screwops_stack import certificates, kafka_security, minio_security
from screwops_stack.dockerfiles import UID as SERVICE_UID
from screwops_stack.servers import ensure_triton_key, provision_kafka

BROKER_HOSTS = ("kafka", "localhost", "127.0.0.1")
"""The broker certificate's names: compose's services reach ``kafka``, the host 127.0.0.1."""
KAFKA_UID = 1000
"""The apache/kafka image's ``appuser``, which reads the broker's files."""
CLIENT_LISTENERS = ("CLIENTS", "EXTERNAL")
"""Compose's SASL_SSL listeners: ``CLIENTS`` (kafka:9092) as natively, ``EXTERNAL`` for the host."""
BROKER_DIR = "broker"
SCRAM_USERS = "scram-arguments"
LISTENER_LOGINS = "listeners.properties"
ADMIN_CLIENT = "admin.properties"
KAFKA_TLS_MOUNT = Path("/etc/kafka/tls")
"""Where compose's broker mounts the CA and its key store (``ssl.*.location``)."""


def _broker_files(home: Path, passwords: dict[str, str]) -> list[Path]:
    """Write ``broker/``: one ``kafka-storage format`` argument a line, the listeners' JAAS
    lines (the admin's login for the broker's own connections), the admin's client config."""
    broker = home / BROKER_DIR
    admin = kafka_security.scram_jaas_config(kafka_security.ADMIN, passwords[kafka_security.ADMIN])
    files = {
        SCRAM_USERS: "\n".join(kafka_security.scram_arguments(passwords)),
        LISTENER_LOGINS: "\n".join(
            f"listener.name.{name.lower()}.scram-sha-512.sasl.jaas.config={admin}"
            for name in CLIENT_LISTENERS
        ),
        ADMIN_CLIENT: "\n".join(
            [
                "security.protocol=SASL_SSL",
                "sasl.mechanism=SCRAM-SHA-512",
                f"sasl.jaas.config={admin}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={KAFKA_TLS_MOUNT / 'ca.crt'}",
            ]
        ),
    }
    for name, text in files.items():
        kafka_security.write_private(broker / name, text + "\n")
    return [broker, *(broker / name for name in files)]


def make_secrets(home: Path, *, log: Path) -> None:
    """The ``stack-secrets`` job: see the module docstring."""
    passwords = kafka_security.ensure_secrets(home, hosts=BROKER_HOSTS, log=log)
    tls = kafka_security.Tls(home)
    for path in [*_broker_files(home, passwords), tls.broker_keystore]:
        os.chown(path, KAFKA_UID, KAFKA_UID)
    for name in passwords:
        os.chown(kafka_password_file(home, name), SERVICE_UID, SERVICE_UID)
    # The gRPC APIs' certificate and key, from the same CA: every API container reads them.
    for path in certificates.ensure_grpc_certificate(home, log=log):
        os.chown(path, SERVICE_UID, SERVICE_UID)
    for name in minio_security.ensure_passwords(home):
        os.chown(minio_secret_file(home, name), SERVICE_UID, SERVICE_UID)
    # The registry and the evaluator read it as the services' uid; Triton's container is root's.
    os.chown(ensure_triton_key(home), SERVICE_UID, SERVICE_UID)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m screwops_stack.compose")
    parser.add_argument("job", choices=["secrets", "kafka", "minio"])
    args = parser.parse_args(argv)
    settings = StackSettings()
    if args.job == "secrets":
        make_secrets(settings.home, log=Path("/dev/stderr"))
    elif args.job == "minio":
        minio_security.provision(
            minio_security.root_settings(settings.minio, settings.home),
            minio_security.ensure_passwords(settings.home),
        )
    else:
        provision_kafka(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
