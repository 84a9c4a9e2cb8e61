"""The six real servers of the native stack: how each is laid out, started and proven ready.

Every port and credential comes from :class:`screwops_settings.StackSettings`; files shared with
docker-compose (Kafka's broker settings, Jaeger's configuration) live under ``deploy/``.
A server is ready when a real request through its own protocol succeeds, not when a port opens.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from minio import Minio
from minio.error import S3Error
from pydantic import SecretStr
from pymongo import MongoClient
from screwops_contracts import FEEDS, access_rights, all_topics
from screwops_contracts.minio import BUCKET_EVENTS_TOPIC, NOTIFY_TARGET_ID
from screwops_settings import (
    KafkaSettings,
    StackSettings,
    kafka_client_options,
    kafka_password_file,
    port_of,
    triton_model_control_key_file,
    triton_model_repository,
)

from screwops_stack import kafka_security, minio_security

DEPLOY = Path(__file__).resolve().parents[4] / "deploy"
BIND_HOST = "127.0.0.1"
MINIO_PRINCIPAL = next(feed.producer for feed in FEEDS if feed.topic == BUCKET_EVENTS_TOPIC)


class NotReadyError(Exception):
    """A readiness probe's request failed; the message says how."""


@dataclass(frozen=True)
class Layout:
    """Where the stack keeps installs, data, logs and pid files (all outside git)."""

    home: Path

    @property
    def opt(self) -> Path:
        return self.home / "opt"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def run(self) -> Path:
        return self.home / "run"

    def data(self, name: str) -> Path:
        return self.home / "data" / name

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def pidfile(self, name: str) -> Path:
        return self.run / f"{name}.pid"


@dataclass(frozen=True)
class Server:
    """One server: its command, how to prepare its files, and its readiness probe."""

    name: str
    argv: list[str]
    ready: Callable[[], None]
    ports: list[int]
    env: dict[str, str] = field(default_factory=lambda: _base_env())
    prepare: Callable[[], None] = lambda: None
    after_ready: Callable[[], None] = lambda: None
    start_timeout: float = 180.0
    stop_timeout: float = 30.0
    outdated: Callable[[list[str]], str] = lambda cmdline: ""
    """Why a server already running with ``cmdline`` lacks what this stack now starts it with
    (a stack home from before a change), so ``up`` restarts it; empty when it is current."""


def servers(settings: StackSettings) -> list[Server]:
    """The stack in start order: each server's dependencies come before it."""
    layout = Layout(settings.home)
    return [
        _kafka(settings, layout),
        _ferretdb(settings, layout),
        _minio(settings, layout),
        _jaeger(settings, layout),
        _triton(settings, layout),
        _prometheus(settings, layout),
    ]


def _base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREWOPS_")}
    env.update(extra)
    return env


def _mkdirs(*paths: Path) -> None:
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)


def _http_ok(url: str, expect: Callable[[httpx.Response], bool] = lambda r: True) -> None:
    try:
        response = httpx.get(url, timeout=3.0)
    except httpx.HTTPError as exc:
        raise NotReadyError(f"GET {url}: {exc!r}") from exc
    if response.status_code != 200 or not expect(response):
        raise NotReadyError(f"GET {url}: HTTP {response.status_code} {response.text[:200]!r}")


# --- Kafka -----------------------------------------------------------------------------------


def kafka_properties(settings: StackSettings, layout: Layout, *, admin_password: str) -> str:
    """Kafka's server.properties: the shared broker settings plus this node's listeners, key
    store and the admin's login for the broker's own SASL connections (so the file is 0600)."""
    shared = (DEPLOY / "local" / "kafka" / "server.properties").read_text()
    port = port_of(settings.kafka.bootstrap_servers)
    controller = settings.kafka.controller_port
    tls = kafka_security.Tls(layout.home)
    jaas = kafka_security.scram_jaas_config(kafka_security.ADMIN, admin_password)
    node = f"""
# Clients log in with SCRAM-SHA-512 over TLS; the controller listener, on loopback, stays
# PLAINTEXT, and its ANONYMOUS principal is the broker itself, hence a super user. Everyone else
# may do only what the ACLs generated from the event catalogue allow (access_rights).
inter.broker.listener.name=CLIENTS
listener.security.protocol.map=CONTROLLER:PLAINTEXT,CLIENTS:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:{kafka_security.ADMIN};User:ANONYMOUS
ssl.keystore.type=PEM
ssl.truststore.type=PEM
listeners=CLIENTS://{BIND_HOST}:{port},CONTROLLER://{BIND_HOST}:{controller}
advertised.listeners=CLIENTS://{settings.kafka.bootstrap_servers}
controller.quorum.voters=1@{BIND_HOST}:{controller}
log.dirs={layout.data("kafka")}
ssl.keystore.location={tls.broker_keystore}
ssl.truststore.location={tls.ca_cert}
listener.name.clients.scram-sha-512.sasl.jaas.config={jaas}
"""
    return shared + node


def admin_kafka(settings: StackSettings) -> KafkaSettings:
    """``settings.kafka`` as the stack's admin, the broker's super user, with the password and CA
    Kafka's preparation made under the stack home (docker-compose's Kafka job has only those
    two mounted there)."""
    home = settings.home
    password = kafka_password_file(home, kafka_security.ADMIN).read_text().strip()
    return settings.kafka.model_copy(
        update={
            "username": kafka_security.ADMIN,
            "password": SecretStr(password),
            "ca_file": kafka_security.Tls(home).ca_cert,
        }
    )


def _format_kafka_storage(
    java: list[str], properties: Path, data: Path, passwords: dict[str, str], log: Path
) -> None:
    """Format a new data directory, with every principal's SCRAM user (KRaft adds them at
    format time, before any listener opens); a formatted one is left alone."""
    if (data / "meta.properties").exists():
        return
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    with log.open("ab") as out:
        subprocess.run(
            [
                *java,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(properties),
                "--ignore-formatted",
                *kafka_security.scram_arguments(passwords),
            ],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    (data / kafka_security.SCRAM_MARKER).touch()


def _kafka(settings: StackSettings, layout: Layout) -> Server:
    home = layout.opt / "kafka"
    config_dir = layout.run / "kafka"
    properties = config_dir / "server.properties"
    log4j = config_dir / "log4j.properties"
    classpath = f"{home}/libs/*"
    java = [
        "java",
        "-Xms128m",
        "-Xmx512m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        f"-Dlog4j.configuration=file:{log4j}",
        "-Djava.awt.headless=true",
        "-cp",
        classpath,
    ]
    data = layout.data("kafka")

    def prepare() -> None:
        kafka_security.check_formatted_with_users(data)
        config_dir.mkdir(parents=True, exist_ok=True)
        hosts = {BIND_HOST, "localhost", settings.kafka.bootstrap_servers.rsplit(":", 1)[0]}
        passwords = kafka_security.ensure_secrets(
            layout.home, hosts=sorted(hosts), log=layout.log("kafka")
        )
        kafka_security.write_private(
            properties,
            kafka_properties(settings, layout, admin_password=passwords[kafka_security.ADMIN]),
        )
        log4j.write_text(
            "log4j.rootLogger=INFO, stdout\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka.request.logger=WARN\n"
        )
        _format_kafka_storage(java, properties, data, passwords, layout.log("kafka"))

    def ready() -> None:
        # A refused connection is the expected answer while Kafka boots; the probe reports it.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

        async def probe() -> None:
            admin = AIOKafkaAdminClient(
                **kafka_client_options(admin_kafka(settings)), request_timeout_ms=3000
            )
            try:
                await admin.start()
                await admin.describe_cluster()
            finally:
                await admin.close()

        try:
            asyncio.run(probe())
        except Exception as exc:
            raise NotReadyError(f"Kafka metadata request failed: {exc!r}") from exc

    return Server(
        name="kafka",
        argv=[*java, "kafka.Kafka", str(properties)],
        ready=ready,
        ports=[port_of(settings.kafka.bootstrap_servers), settings.kafka.controller_port],
        prepare=prepare,
        after_ready=lambda: provision_kafka(settings),
        stop_timeout=45.0,
    )


def provision_kafka(settings: StackSettings) -> None:
    """The catalogue's topics and every principal's ACLs on a running broker, as the stack's
    admin: after Kafka is ready natively, in docker-compose's ``kafka-init`` job."""
    asyncio.run(ensure_topics(settings))
    admin = kafka_security.admin_client(admin_kafka(settings))
    try:
        kafka_security.sync_acls(admin, kafka_security.acls(access_rights().values()))
    finally:
        admin.close()


async def ensure_topics(settings: StackSettings) -> list[str]:
    """Create every catalogue topic and its dead-letter twin that does not exist yet.

    The broker does not auto-create topics, so this is the one place topics come from (the
    docker-compose stack runs it too, in its kafka-init job). Returns the topics it created.
    """
    admin = AIOKafkaAdminClient(**kafka_client_options(admin_kafka(settings)))
    await admin.start()
    try:
        missing = [t for t in all_topics() if t not in set(await admin.list_topics())]
        if missing:
            await admin.create_topics(
                [NewTopic(t, settings.kafka.partitions, replication_factor=1) for t in missing]
            )
        return missing
    finally:
        await admin.close()


# --- FerretDB --------------------------------------------------------------------------------


def _ferretdb(settings: StackSettings, layout: Layout) -> Server:
    data = layout.data("ferretdb")
    uri = settings.mongo.uri.get_secret_value()
    port = port_of(uri.split(",")[0].removeprefix("mongodb://").split("/")[0])

    def ready() -> None:
        client: MongoClient[dict[str, object]] = MongoClient(uri, serverSelectionTimeoutMS=2000)
        try:
            client.admin.command("ping")
        except Exception as exc:
            raise NotReadyError(f"MongoDB ping failed: {exc!r}") from exc
        finally:
            client.close()

    return Server(
        name="ferretdb",
        argv=[
            str(layout.opt / "bin" / "ferretdb"),
            "--handler=sqlite",
            f"--sqlite-url=file:{data}/",
            f"--state-dir={data}",
            f"--listen-addr={BIND_HOST}:{port}",
            f"--debug-addr={BIND_HOST}:8088",
            "--telemetry=disable",
            "--log-level=info",
        ],
        ready=ready,
        ports=[port],
        prepare=lambda: data.mkdir(parents=True, exist_ok=True),
    )


# --- MinIO -----------------------------------------------------------------------------------


def minio_notify_env(settings: StackSettings, *, queue_dir: str) -> dict[str, str]:
    """MinIO's Kafka notification target (the docker-compose stack sets the same variables).

    The queue directory keeps notifications on disk while Kafka is down, so none is lost.
    """
    target = NOTIFY_TARGET_ID
    return {
        f"MINIO_NOTIFY_KAFKA_ENABLE_{target}": "on",
        f"MINIO_NOTIFY_KAFKA_BROKERS_{target}": settings.kafka.bootstrap_servers,
        f"MINIO_NOTIFY_KAFKA_TOPIC_{target}": BUCKET_EVENTS_TOPIC,
        f"MINIO_NOTIFY_KAFKA_QUEUE_DIR_{target}": queue_dir,
    }


def minio_notify_security_env(settings: StackSettings, *, password: str) -> dict[str, str]:
    """MinIO's login to Kafka, as the ``minio`` principal (it may write only its bucket
    notifications), over TLS checked against the stack's CA (in MinIO's ``--certs-dir``)."""
    target = NOTIFY_TARGET_ID
    return {
        f"MINIO_NOTIFY_KAFKA_TLS_{target}": "on",
        f"MINIO_NOTIFY_KAFKA_TLS_SKIP_VERIFY_{target}": "off",
        f"MINIO_NOTIFY_KAFKA_SASL_{target}": "on",
        f"MINIO_NOTIFY_KAFKA_SASL_MECHANISM_{target}": "sha512",
        f"MINIO_NOTIFY_KAFKA_SASL_USERNAME_{target}": MINIO_PRINCIPAL,
        f"MINIO_NOTIFY_KAFKA_SASL_PASSWORD_{target}": password,
    }


def _minio(settings: StackSettings, layout: Layout) -> Server:
    data = layout.data("minio")
    certs = layout.run / "minio" / "certs"
    events = layout.data("minio-events")
    port = port_of(settings.minio.endpoint)
    console = settings.minio.console_port

    passwords = minio_security.ensure_passwords(layout.home)
    root = minio_security.root_settings(settings.minio, layout.home)
    client = Minio(
        root.endpoint,
        access_key=minio_security.ROOT,
        secret_key=passwords[minio_security.ROOT],
        secure=root.secure,
    )

    def ready() -> None:
        try:
            client.list_buckets()
        except S3Error as exc:
            if exc.code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return  # it answers S3; provisioning says why it refuses the root
            raise NotReadyError(f"S3 ListBuckets failed: {exc!r}") from exc
        except Exception as exc:
            raise NotReadyError(f"S3 ListBuckets failed: {exc!r}") from exc

    def prepare() -> None:
        _mkdirs(data, events, certs / "CAs")
        # MinIO trusts the CAs of <certs-dir>/CAs when it connects to Kafka.
        shutil.copyfile(kafka_security.Tls(layout.home).ca_cert, certs / "CAs" / "screwops-ca.crt")

    return Server(
        name="minio",
        argv=[
            str(layout.opt / "bin" / "minio"),
            "server",
            str(data),
            "--address",
            f"{BIND_HOST}:{port}",
            "--console-address",
            f"{BIND_HOST}:{console}",
            "--certs-dir",
            str(certs),
            "--quiet",
        ],
        env=_base_env(
            MINIO_ROOT_USER=minio_security.ROOT,
            MINIO_ROOT_PASSWORD=passwords[minio_security.ROOT],
            MINIO_UPDATE="off",
            **minio_notify_env(settings, queue_dir=str(events)),
            **minio_notify_security_env(
                settings,
                password=kafka_security.ensure_passwords(layout.home)[MINIO_PRINCIPAL],
            ),
        ),
        ready=ready,
        ports=[port, console],
        prepare=prepare,
        # The buckets, the drop bucket's notification, each principal's user and policy.
        after_ready=lambda: minio_security.provision(root, passwords),
    )


# --- Jaeger ----------------------------------------------------------------------------------


def _jaeger(settings: StackSettings, layout: Layout) -> Server:
    data = layout.data("jaeger")
    telemetry = settings.telemetry
    query_port = port_of(telemetry.jaeger_query_url)
    grpc_port = port_of(telemetry.otlp_grpc_endpoint)
    http_port = port_of(telemetry.otlp_http_endpoint)
    return Server(
        name="jaeger",
        argv=[str(layout.opt / "bin" / "jaeger"), f"--config={DEPLOY / 'jaeger' / 'config.yaml'}"],
        env=_base_env(
            JAEGER_BIND_HOST=BIND_HOST,
            JAEGER_QUERY_PORT=str(query_port),
            JAEGER_OTLP_GRPC_PORT=str(grpc_port),
            JAEGER_OTLP_HTTP_PORT=str(http_port),
            JAEGER_DATA_DIR=str(data),
        ),
        ready=lambda: _http_ok(
            f"{telemetry.jaeger_query_url}/api/services", lambda r: "data" in r.json()
        ),
        ports=[query_port, grpc_port, http_port],
        prepare=lambda: data.mkdir(parents=True, exist_ok=True),
    )


# --- Triton ----------------------------------------------------------------------------------


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


TRITON_RESTRICTED_START = DEPLOY / "triton" / "restricted.sh"
"""Starts tritonserver with model control closed to all but the key's holders; every stack's
Triton starts through it (the compose and k8s image carries it as ``/opt/screwops/``)."""
TRITON_RESTRICTIONS = ("--grpc-restricted-protocol", "--http-restricted-api")


def ensure_triton_key(home: Path) -> Path:
    """The file of the stack's Triton model-control key, generated (0600) the first time."""
    path = triton_model_control_key_file(home)
    if not path.is_file():
        kafka_security.write_private(path, secrets.token_urlsafe(32))
    return path


def _triton_outdated(cmdline: list[str]) -> str:
    """A Triton started before model control was restricted must be restarted to be."""
    restricted = all(any(a.startswith(f"{flag}=") for a in cmdline) for flag in TRITON_RESTRICTIONS)
    return "" if restricted else "its model-control API is open to anyone (started before the key)"


def _triton(settings: StackSettings, layout: Layout) -> Server:
    pytriton = _site_packages() / "pytriton" / "tritonserver"
    backends = layout.opt / "triton" / "backends"
    repository = triton_model_repository(settings.home)
    http_port = port_of(settings.triton.http_url)
    grpc_port = port_of(settings.triton.grpc_url)
    metrics_port = port_of(settings.triton.metrics_url)
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"

    def prepare() -> None:
        # One backend directory: the Python backend library plus the stub built for our Python.
        python_backend = backends / "python"
        if not (python_backend / "triton_python_backend_stub").exists():
            python_backend.mkdir(parents=True, exist_ok=True)
            shutil.copytree(pytriton / "backends" / "python", python_backend, dirs_exist_ok=True)
            shutil.copytree(
                pytriton / "python_backend_stubs" / python_version,
                python_backend,
                dirs_exist_ok=True,
            )
        repository.mkdir(parents=True, exist_ok=True)
        ensure_triton_key(settings.home)

    venv_bin = str(Path(sys.executable).parent)
    return Server(
        name="triton",
        argv=[
            "/bin/sh",
            str(TRITON_RESTRICTED_START),
            # Made by prepare; the script reads it as Triton starts (it becomes tritonserver).
            str(triton_model_control_key_file(settings.home)),
            str(pytriton / "bin" / "tritonserver"),
            f"--model-repository={repository}",
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            f"--http-address={BIND_HOST}",
            f"--http-port={http_port}",
            f"--grpc-address={BIND_HOST}",
            f"--grpc-port={grpc_port}",
            f"--metrics-address={BIND_HOST}",
            f"--metrics-port={metrics_port}",
            "--allow-gpu-metrics=false",
            # The server's readiness, not every model's: a candidate that failed to load, or a
            # staging version the evaluator unloaded, must not make the whole server "not ready";
            # callers ask for each model's readiness themselves.
            "--strict-readiness=false",
            "--exit-timeout-secs=10",
            "--log-verbose=0",
        ],
        env=_base_env(
            LD_LIBRARY_PATH=os.pathsep.join(
                p
                for p in [
                    str(_site_packages() / "nvidia_pytriton.libs"),
                    os.environ.get("LD_LIBRARY_PATH", ""),
                ]
                if p
            ),
            PATH=os.pathsep.join([venv_bin, os.environ.get("PATH", "")]),
            VIRTUAL_ENV=str(Path(sys.executable).parent.parent),
            PYTHONPATH=str(_site_packages()),
            # Model code shares the machine's two cores with every other server.
            OMP_NUM_THREADS="1",
            TF_NUM_INTEROP_THREADS="1",
            TF_NUM_INTRAOP_THREADS="2",
        ),
        ready=lambda: _http_ok(f"http://{settings.triton.http_url}/v2/health/ready"),
        ports=[http_port, grpc_port, metrics_port],
        prepare=prepare,
        stop_timeout=20.0,
        outdated=_triton_outdated,
    )


# --- Prometheus ------------------------------------------------------------------------------


def prometheus_config(settings: StackSettings, layout: Layout) -> str:
    """Scrape configuration for the native stack: itself, Triton, Jaeger and the services."""
    prometheus = urlsplit(settings.telemetry.prometheus_url).netloc
    return f"""# Written by the ScrewOps native stack manager from screwops_settings; do not edit.
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - {DEPLOY / "prometheus" / "rules"}/*.yml
scrape_configs:
  - job_name: prometheus
    static_configs: [{{targets: ["{prometheus}"]}}]
  - job_name: triton
    static_configs: [{{targets: ["{settings.triton.metrics_url}"]}}]
  - job_name: jaeger
    static_configs: [{{targets: ["{BIND_HOST}:8888"]}}]
  - job_name: screwops-services
    file_sd_configs:
      - files: ["{layout.run / "prometheus" / "targets"}/*.json"]
        refresh_interval: 5s
"""


def prometheus_targets_dir(settings: StackSettings) -> Path:
    """Where a service supervisor drops a file_sd target file as each service appears."""
    return Layout(settings.home).run / "prometheus" / "targets"


def _prometheus(settings: StackSettings, layout: Layout) -> Server:
    data = layout.data("prometheus")
    config = layout.run / "prometheus" / "prometheus.yml"
    port = port_of(settings.telemetry.prometheus_url)

    def prepare() -> None:
        data.mkdir(parents=True, exist_ok=True)
        prometheus_targets_dir(settings).mkdir(parents=True, exist_ok=True)
        config.write_text(prometheus_config(settings, layout))

    return Server(
        name="prometheus",
        argv=[
            shutil.which("prometheus") or "/usr/bin/prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address={BIND_HOST}:{port}",
            "--storage.tsdb.retention.time=7d",
            "--web.enable-lifecycle",
        ],
        ready=lambda: _http_ok(f"{settings.telemetry.prometheus_url}/-/ready"),
        ports=[port],
        prepare=prepare,
    )
