"""docker-compose.yml agrees with the native stack: ports, broker settings and security, each
service's Kafka principal, credentials, images.

No Docker engine is needed: the file is read as YAML and compared with ``StackSettings``'
defaults, ``deploy/local/kafka/server.properties``, ``deploy/local/versions.env`` and the native
Prometheus configuration, so a port or setting changed on one side fails here until the other
side follows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel, SecretStr
from screwops_contracts import access_rights
from screwops_contracts.minio import bucket_access
from screwops_settings import (
    StackSettings,
    grpc_certificate_files,
    kafka_ca_file,
    kafka_password_file,
    minio_secret_file,
    port_of,
    triton_model_control_key_file,
)
from screwops_settings.services import Service
from screwops_stack import compose, kafka_security, minio_security
from screwops_stack.compose_secrets import variables
from screwops_stack.dockerfiles import CONTAINER_HOME, STACK_DOCKERFILE, UID
from screwops_stack.servers import (
    MINIO_PRINCIPAL,
    TRITON_RESTRICTED_START,
    Layout,
    kafka_properties,
    minio_notify_env,
    minio_notify_security_env,
    prometheus_config,
)
from screwops_stack.supervisor import available

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
SERVER_PROPERTIES = DEPLOY / "local" / "kafka" / "server.properties"
KAFKA_START = DEPLOY / "compose" / "kafka-start.sh"
SECRETS_VOLUME = "stack-secrets"
MODEL_CONTROLLERS = {"registry", "evaluator"}
"""The services given Triton's model-control key: they load and unload models."""
TRITON_KEY = "secrets/triton/model-control"
VERSIONS = DEPLOY / "local" / "versions.env"
PROMETHEUS_COMPOSE = DEPLOY / "prometheus" / "prometheus-compose.yml"

# `${VAR}`, `${VAR:-default}`, `${VAR-default}` or `${VAR:?error}` (required), as docker compose
# interpolates them.
INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?(?P<op>[-?])(?P<default>[^}]*))?\}"
)

# Jaeger tags each release twice; v2.0.0 came out on v1.63.0's commit.
JAEGER_V1_MINOR_AT_V2_0 = 63

# The host ports each server publishes, from the settings every service reads.
EXPECTED_PORTS: dict[str, Callable[[StackSettings], set[int]]] = {
    "kafka": lambda s: {port_of(s.kafka.bootstrap_servers)},
    "minio": lambda s: {port_of(s.minio.endpoint), s.minio.console_port},
    "mongo": lambda s: {port_of(s.mongo.uri.get_secret_value())},
    "triton": lambda s: {
        port_of(s.triton.http_url),
        port_of(s.triton.grpc_url),
        port_of(s.triton.metrics_url),
    },
    "jaeger": lambda s: {
        port_of(s.telemetry.otlp_grpc_endpoint),
        port_of(s.telemetry.otlp_http_endpoint),
        port_of(s.telemetry.jaeger_query_url),
    },
    "prometheus": lambda s: {port_of(s.telemetry.prometheus_url)},
}


# --- reading the files -------------------------------------------------------------------------


@cache
def _dotenv() -> dict[str, str]:
    return variables({})


@cache
def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _service(name: str) -> dict[str, Any]:
    service = _compose()["services"][name]
    assert isinstance(service, dict)
    return service


def _environment(name: str) -> dict[str, str]:
    env = _service(name).get("environment", {})
    assert isinstance(env, dict), f"{name}: write environment as a mapping"
    return {str(k): str(v) for k, v in env.items()}


def _anchor_env() -> dict[str, str]:
    env = _compose()["x-screwops-env"]
    assert isinstance(env, dict)
    return {str(k): _default(str(v)) for k, v in env.items()}


def _default(value: str) -> str:
    """``value`` as docker compose resolves it when no variable is set but the ones
    ``make compose-secrets`` writes into ``.env`` (the required ones)."""

    def resolve(match: re.Match[str]) -> str:
        if match.group("op") == "?":
            return _dotenv()[match.group("name")]
        default = match.group("default")
        assert default is not None, f"{match.group(0)} has no default"
        return default

    return INTERPOLATION.sub(resolve, value)


def _mounts(name: str) -> list[tuple[str, str, str | None]]:
    """(source, container path, subpath of a named volume) of each of the service's volumes,
    short (``source:target[:ro]``) or long syntax."""
    mounts = []
    for entry in _service(name).get("volumes", []):
        if isinstance(entry, dict):
            subpath = entry.get("volume", {}).get("subpath")
            mounts.append((str(entry["source"]), str(entry["target"]), subpath))
            continue
        source, target = str(entry).split(":")[:2]
        mounts.append((source, target, None))
    return mounts


def _secrets_mounts(name: str) -> dict[str, str]:
    """{container path: subpath} of what the service mounts from the secrets volume, each one
    read-only."""
    entries = [v for v in _service(name).get("volumes", []) if isinstance(v, dict)]
    for entry in entries:
        if entry["source"] == SECRETS_VOLUME:
            assert entry.get("read_only") is True, f"{name}: {entry['target']} is writable"
    return {t: sub for s, t, sub in _mounts(name) if s == SECRETS_VOLUME and sub is not None}


def _port_mappings(name: str) -> list[tuple[int, int]]:
    """(host port, container port) for each port the service publishes."""
    mappings = []
    for entry in _service(name).get("ports", []):
        if isinstance(entry, dict):
            mappings.append((int(entry["published"]), int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        assert len(parts) >= 2, f"{name}: {entry!r} publishes no fixed host port"
        mappings.append((int(parts[-2]), int(parts[-1])))
    return mappings


def _properties(path: Path) -> dict[str, str]:
    """The key=value lines of a Java properties file, comments and blank lines skipped."""
    result = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, _, value = line.partition("=")
        result[key.strip()] = value.strip()
    return result


def _kafka_env_name(prop: str) -> str:
    """The apache/kafka image's naming: ``.`` is ``_``, ``_`` is ``__``, ``-`` is ``___``."""
    return "KAFKA_" + prop.replace("_", "__").replace("-", "___").replace(".", "_").upper()


def _listeners(value: str) -> dict[str, str]:
    """``NAME://host:port,...`` as {NAME: host:port}."""
    result = {}
    for item in value.split(","):
        name, _, address = item.partition("://")
        result[name] = address
    return result


def _versions() -> dict[str, str]:
    return _properties(VERSIONS)


def _image_tag(image: str) -> str | None:
    reference = image.split("@")[0]
    name = reference.rsplit("/", 1)[-1]
    return name.partition(":")[2] or None


def _endpoints(settings: StackSettings) -> Iterator[tuple[str, str]]:
    """(SCREWOPS_* variable, value) for every settings field holding an address with a port."""
    for section_name in type(settings).model_fields:
        section = getattr(settings, section_name)
        if not isinstance(section, BaseModel):
            continue
        for field_name in type(section).model_fields:
            value = getattr(section, field_name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if not isinstance(value, str):
                continue
            try:
                port_of(value)
            except ValueError:
                continue
            yield f"SCREWOPS_{section_name.upper()}__{field_name.upper()}", value


def _host(address: str) -> str | None:
    return urlsplit(address if "://" in address else f"//{address}").hostname


def _prometheus_jobs(config: dict[str, Any]) -> dict[str, list[str]]:
    jobs: dict[str, list[str]] = {}
    for job in config["scrape_configs"]:
        targets = [t for sc in job.get("static_configs", []) for t in sc.get("targets", [])]
        jobs[job["job_name"]] = targets
    return jobs


@pytest.fixture
def defaults() -> StackSettings:
    """StackSettings' own defaults, whatever SCREWOPS_* variables this shell happens to set."""
    return StackSettings()


# --- ports ---------------------------------------------------------------------------------


@pytest.mark.parametrize("service", sorted(EXPECTED_PORTS))
def test_server_publishes_the_settings_ports(service: str, defaults: StackSettings) -> None:
    published = {host for host, _ in _port_mappings(service)}
    assert published == EXPECTED_PORTS[service](defaults)


@pytest.mark.parametrize("service", sorted(set(EXPECTED_PORTS) - {"kafka"}))
def test_server_listens_inside_compose_on_the_port_it_publishes(service: str) -> None:
    # So `service:port` inside compose and `127.0.0.1:port` on the host name the same endpoint.
    for host, container in _port_mappings(service):
        assert host == container


def test_host_ports_are_bound_to_loopback_like_the_native_stack() -> None:
    for name, service in _compose()["services"].items():
        for entry in service.get("ports", []):
            assert str(entry).startswith("127.0.0.1:"), f"{name}: {entry!r}"


def test_jaeger_config_gets_the_settings_ports(defaults: StackSettings) -> None:
    env = _environment("jaeger")
    telemetry = defaults.telemetry
    assert int(env["JAEGER_QUERY_PORT"]) == port_of(telemetry.jaeger_query_url)
    assert int(env["JAEGER_OTLP_GRPC_PORT"]) == port_of(telemetry.otlp_grpc_endpoint)
    assert int(env["JAEGER_OTLP_HTTP_PORT"]) == port_of(telemetry.otlp_http_endpoint)


# --- Kafka ---------------------------------------------------------------------------------


def test_kafka_env_repeats_every_shared_broker_setting() -> None:
    env = _environment("kafka")
    shared = _properties(SERVER_PROPERTIES)
    expected = {_kafka_env_name(key): value for key, value in shared.items()}
    assert {name: env.get(name) for name in expected} == expected


def _native_kafka(tmp_path: Path) -> dict[str, str]:
    """The native broker's properties, as ``make up`` writes them (continuations joined)."""
    text = kafka_properties(StackSettings(home=tmp_path), Layout(tmp_path), admin_password="pw")
    return dict(
        line.split("=", 1)
        for line in text.replace("\\\n", "").splitlines()
        if "=" in line and not line.startswith("#")
    )


def test_kafka_protocol_map_is_the_native_one_plus_the_host_listener(tmp_path: Path) -> None:
    native = _native_kafka(tmp_path)["listener.security.protocol.map"]
    compose_map = _environment("kafka")["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert set(compose_map.split(",")) == set(native.split(",")) | {"EXTERNAL:SASL_SSL"}


@pytest.mark.parametrize(
    "prop",
    [
        "inter.broker.listener.name",
        "sasl.enabled.mechanisms",
        "sasl.mechanism.inter.broker.protocol",
        "authorizer.class.name",
        "allow.everyone.if.no.acl.found",
        "super.users",
        "ssl.keystore.type",
        "ssl.truststore.type",
    ],
)
def test_kafka_security_is_the_native_brokers(prop: str, tmp_path: Path) -> None:
    assert _environment("kafka")[_kafka_env_name(prop)] == _native_kafka(tmp_path)[prop]


def test_kafka_client_listeners_are_the_ones_given_logins() -> None:
    env = _environment("kafka")
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    sasl = {name for name, protocol in protocols.items() if protocol == "SASL_SSL"}
    assert sasl == set(compose.CLIENT_LISTENERS)
    assert set(protocols) - sasl == {env["KAFKA_CONTROLLER_LISTENER_NAMES"]}


def test_kafka_controller_listener_stays_on_loopback() -> None:
    # Its ANONYMOUS principal is a super user, as natively.
    env = _environment("kafka")
    controller = _listeners(env["KAFKA_LISTENERS"])[env["KAFKA_CONTROLLER_LISTENER_NAMES"]]
    assert _host(controller) == "127.0.0.1"
    assert f"User:{kafka_security.ADMIN}" in env["KAFKA_SUPER_USERS"].split(";")


def test_kafka_starts_from_the_secrets_volume() -> None:
    service = _service("kafka")
    env = _environment("kafka")
    mounts = _secrets_mounts("kafka")
    script_mount = next(t for s, t, _ in _mounts("kafka") if s == "./deploy/compose/kafka-start.sh")
    assert service["entrypoint"] == [script_mount]
    script = KAFKA_START.read_text()
    broker = next(t for t, sub in mounts.items() if sub == compose.BROKER_DIR)
    assert f"secrets={broker}\n" in script
    for name in (compose.SCRAM_USERS, compose.LISTENER_LOGINS):
        assert f"$secrets/{name}" in script
    assert f"$data/{kafka_security.SCRAM_MARKER}" in script
    tls = compose.KAFKA_TLS_MOUNT
    assert mounts[env["KAFKA_SSL_KEYSTORE_LOCATION"]] == "tls/kafka.pem"
    assert mounts[env["KAFKA_SSL_TRUSTSTORE_LOCATION"]] == "tls/ca.crt"
    assert {env["KAFKA_SSL_KEYSTORE_LOCATION"], env["KAFKA_SSL_TRUSTSTORE_LOCATION"]} == {
        str(tls / "kafka.pem"),
        str(tls / "ca.crt"),
    }
    # The health check logs in as the admin, with the config the secrets job wrote.
    assert f"--command-config {broker}/{compose.ADMIN_CLIENT}" in service["healthcheck"]["test"][1]
    assert service["depends_on"]["stack-secrets"]["condition"] == "service_completed_successfully"


def test_stack_jobs_run_the_native_stacks_code() -> None:
    secrets = _service("stack-secrets")
    init = _service("kafka-init")
    assert secrets["build"]["dockerfile"] == str(STACK_DOCKERFILE.relative_to(ROOT))
    assert init["image"] == secrets["image"]
    assert secrets["command"] == ["python", "-m", "screwops_stack.compose", "secrets"]
    assert init["command"] == ["python", "-m", "screwops_stack.compose", "kafka"]
    home = _environment("stack-secrets")["SCREWOPS_HOME"]
    assert (SECRETS_VOLUME, home, None) in _mounts("stack-secrets")
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_kafka_init_is_the_admin_with_the_homes_password_and_ca() -> None:
    env = _environment("kafka-init")
    home = Path(env["SCREWOPS_HOME"])
    admin = kafka_security.ADMIN
    assert env["SCREWOPS_KAFKA__USERNAME"] == admin
    assert _secrets_mounts("kafka-init") == {
        str(kafka_password_file(home, admin)): f"secrets/kafka/{admin}",
        str(kafka_ca_file(home)): "tls/ca.crt",
    }


def test_kafka_partitions_equal_the_settings(defaults: StackSettings) -> None:
    assert int(_environment("kafka")["KAFKA_NUM_PARTITIONS"]) == defaults.kafka.partitions


def test_kafka_listeners_each_have_a_protocol_and_are_advertised() -> None:
    env = _environment("kafka")
    protocols = {
        item.split(":")[0] for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    }
    listeners = set(_listeners(env["KAFKA_LISTENERS"]))
    advertised = set(_listeners(env["KAFKA_ADVERTISED_LISTENERS"]))
    assert listeners == protocols
    assert advertised == listeners - {env["KAFKA_CONTROLLER_LISTENER_NAMES"]}


def test_kafka_controller_uses_the_settings_controller_port(defaults: StackSettings) -> None:
    env = _environment("kafka")
    controller = _listeners(env["KAFKA_LISTENERS"])[env["KAFKA_CONTROLLER_LISTENER_NAMES"]]
    assert port_of(controller) == defaults.kafka.controller_port
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@{controller}"


def test_kafka_host_listener_is_the_settings_bootstrap_address(defaults: StackSettings) -> None:
    env = _environment("kafka")
    external = _listeners(env["KAFKA_LISTENERS"])["EXTERNAL"]
    assert _listeners(env["KAFKA_ADVERTISED_LISTENERS"])["EXTERNAL"] == (
        defaults.kafka.bootstrap_servers
    )
    assert (port_of(defaults.kafka.bootstrap_servers), port_of(external)) in _port_mappings("kafka")


def test_kafka_compose_listener_is_the_services_bootstrap_address() -> None:
    env = _environment("kafka")
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])[
        env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    ]
    assert advertised == _anchor_env()["SCREWOPS_KAFKA__BOOTSTRAP_SERVERS"]


# --- credentials ---------------------------------------------------------------------------


def test_minio_root_is_the_stacks_with_its_generated_password() -> None:
    env = _environment("minio")
    assert env["MINIO_ROOT_USER"] == minio_security.ROOT
    # Read from the secrets volume by the entrypoint, never a variable of this file.
    assert "MINIO_ROOT_PASSWORD" not in env
    assert 'export MINIO_ROOT_PASSWORD="$$(cat /run/secrets/minio-root)"' in " ".join(
        _service("minio")["entrypoint"]
    )
    assert _secrets_mounts("minio")["/run/secrets/minio-root"] == (
        f"secrets/minio/{minio_security.ROOT}"
    )


def test_minio_init_provisions_the_users_as_the_root_with_every_secret() -> None:
    init = _service("minio-init")
    env = _environment("minio-init")
    home = Path(env["SCREWOPS_HOME"])
    assert init["image"] == _service("stack-secrets")["image"]
    assert init["command"] == ["python", "-m", "screwops_stack.compose", "minio"]
    assert env["SCREWOPS_MINIO__ACCESS_KEY"] == minio_security.ROOT
    assert _secrets_mounts("minio-init") == {
        str(minio_secret_file(home, minio_security.ROOT).parent): "secrets/minio"
    }
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"


# --- the services' environment ----------------------------------------------------------------


def test_service_env_names_every_endpoint_in_the_settings(defaults: StackSettings) -> None:
    assert {name for name, _ in _endpoints(defaults)} <= set(_anchor_env())


def test_service_env_moves_hosts_and_keeps_ports(
    defaults: StackSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _anchor_env().items():
        monkeypatch.setenv(name, value)
    inside = dict(_endpoints(StackSettings()))
    for name, value in _endpoints(defaults):
        assert port_of(inside[name]) == port_of(value), name
        assert _host(inside[name]) in _compose()["services"], name


def test_service_env_holds_no_minio_credential() -> None:
    # Each service is its own user (the settings' doing) with its own mounted secret key.
    assert not {n for n in _anchor_env() if n.startswith("SCREWOPS_MINIO__") and "KEY" in n}


# --- images --------------------------------------------------------------------------------


def test_every_image_is_pinned_to_a_tag() -> None:
    images = [(name, s["image"]) for name, s in _compose()["services"].items()]
    dockerfile = (DEPLOY / "triton" / "Dockerfile").read_text()
    images += [("triton FROM", m) for m in re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)]
    for name, image in images:
        tag = _image_tag(image)
        assert tag is not None, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image}"


def test_kafka_image_is_the_native_kafka_version() -> None:
    assert _image_tag(_service("kafka")["image"]) == _versions()["KAFKA_VERSION"]


def test_jaeger_image_is_the_v2_release_of_the_native_commit() -> None:
    major, minor, patch = _versions()["JAEGER_VERSION"].removeprefix("v").split(".")
    assert major == "1"
    expected = f"2.{int(minor) - JAEGER_V1_MINOR_AT_V2_0}.{patch}"
    assert _image_tag(_service("jaeger")["image"]) == expected


def test_triton_is_built_from_the_repository_dockerfile() -> None:
    build = _service("triton")["build"]
    assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()


# --- wiring --------------------------------------------------------------------------------


def test_bind_mounts_name_files_in_the_repository() -> None:
    for name in _compose()["services"]:
        for source, _, _ in _mounts(name):
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source}"


def test_named_volumes_are_declared() -> None:
    declared = set(_compose()["volumes"])
    for name in _compose()["services"]:
        for source, _, _ in _mounts(name):
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: {source}"


def test_healthy_dependencies_have_healthchecks() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} -> {dependency}"


# --- Prometheus ----------------------------------------------------------------------------


def test_prometheus_scrapes_triton_on_the_settings_metrics_port(defaults: StackSettings) -> None:
    jobs = _prometheus_jobs(yaml.safe_load(PROMETHEUS_COMPOSE.read_text()))
    assert jobs["triton"] == [f"triton:{port_of(defaults.triton.metrics_url)}"]


def test_prometheus_scrapes_itself_on_the_settings_port(defaults: StackSettings) -> None:
    jobs = _prometheus_jobs(yaml.safe_load(PROMETHEUS_COMPOSE.read_text()))
    assert jobs["prometheus"] == [f"prometheus:{port_of(defaults.telemetry.prometheus_url)}"]


def test_prometheus_has_the_native_stacks_jobs(defaults: StackSettings, tmp_path: Path) -> None:
    native = yaml.safe_load(prometheus_config(defaults, Layout(tmp_path)))
    compose = yaml.safe_load(PROMETHEUS_COMPOSE.read_text())
    assert set(_prometheus_jobs(compose)) == set(_prometheus_jobs(native))


def test_prometheus_loads_the_mounted_config_and_rules() -> None:
    service = _service("prometheus")
    config = yaml.safe_load(PROMETHEUS_COMPOSE.read_text())
    mounts = dict(str(v).split(":")[:2] for v in service["volumes"])
    config_path = next(a for a in service["command"] if a.startswith("--config.file="))
    assert mounts["./deploy/prometheus/prometheus-compose.yml"] == config_path.partition("=")[2]
    rules_dir = mounts["./deploy/prometheus/rules"]
    assert config["rule_files"] == [f"{rules_dir}/*.yml"]


def test_minio_notifies_kafka_as_the_native_stack_does(defaults: StackSettings) -> None:
    native = minio_notify_env(defaults, queue_dir="/events")
    native |= minio_notify_security_env(defaults, password="from-its-file")
    env = _environment("minio")
    for name, value in native.items():
        if name.startswith("MINIO_NOTIFY_KAFKA_SASL_PASSWORD"):
            # Read from its file by the entrypoint, never a variable of this file.
            assert name not in env
            assert f'export {name}="$$(cat /run/secrets/kafka-password)"' in (
                " ".join(_service("minio")["entrypoint"])
            )
            continue
        expected = "kafka:9092" if name.startswith("MINIO_NOTIFY_KAFKA_BROKERS") else value
        assert env[name] == expected, name
    assert _secrets_mounts("minio") == {
        "/run/secrets/kafka-password": f"secrets/kafka/{MINIO_PRINCIPAL}",
        "/run/secrets/minio-root": f"secrets/minio/{minio_security.ROOT}",
        "/etc/minio/certs/CAs/screwops-ca.crt": "tls/ca.crt",
    }
    command = _service("minio")["command"]
    assert command[command.index("--certs-dir") + 1] == "/etc/minio/certs"


@pytest.mark.parametrize("spec", available(), ids=lambda s: s.name)
def test_every_service_has_an_entry_with_its_own_ports(spec: Service) -> None:
    service = _service(spec.name)
    # Its own Dockerfile (tests/unit/test_dockerfiles.py checks what is in it), from the root.
    assert service["build"]["context"] == "."
    assert service["build"]["dockerfile"] == f"services/{spec.name}/Dockerfile"
    assert "args" not in service["build"]
    assert {host for host, _ in _port_mappings(spec.name)} == spec.ports
    env = _environment(spec.name)
    assert set(_anchor_env()) <= set(env)
    assert env[f"SCREWOPS_{spec.name.upper()}_METRICS_HOST"] == "0.0.0.0"


def test_services_are_secured_as_on_the_native_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    # No PLAINTEXT: the settings' own SASL_SSL default, which production mode requires.
    env = _anchor_env()
    assert "SCREWOPS_KAFKA__SECURITY_PROTOCOL" not in env
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    inside = StackSettings()
    assert inside.kafka.security_protocol == "SASL_SSL"
    assert inside.home == CONTAINER_HOME


def _kafka_mounts(spec: Service) -> dict[str, str]:
    """What the service mounts from the secrets volume less gRPC's TLS files: an API's
    certificate and key, the console's CA (the tests of gRPC's TLS below check those)."""
    env = _anchor_env()
    if spec.grpc_port:
        grpc_tls = {env["SCREWOPS_GRPC__CERT_FILE"], env["SCREWOPS_GRPC__KEY_FILE"]}
    else:
        grpc_tls = {env["SCREWOPS_GRPC__CA_FILE"]} if spec.name not in access_rights() else set()
    return {t: sub for t, sub in _secrets_mounts(spec.name).items() if t not in grpc_tls}


@pytest.mark.parametrize("spec", available(), ids=lambda s: s.name)
def test_every_service_logs_in_to_kafka_as_its_own_principal(spec: Service) -> None:
    env = _environment(spec.name)
    home = Path(_anchor_env()["SCREWOPS_HOME"])
    # Its own MinIO user's secret key, where the settings read it, and no other MinIO secret.
    minio = {str(minio_secret_file(home, spec.name)): f"secrets/minio/{spec.name}"}
    assert spec.name in bucket_access()
    mounts = _kafka_mounts(spec)
    if spec.name not in access_rights():
        # A service that is no Kafka principal (the console) gets no Kafka secret at all.
        assert "SCREWOPS_KAFKA__USERNAME" not in env
        assert mounts == minio
        return
    assert env["SCREWOPS_KAFKA__USERNAME"] == spec.name
    # Only its own password, where the settings read it, and the CA; never another's or a key
    # (but Triton's model-control key, where the settings read it, for those that load models).
    triton_key = (
        {str(triton_model_control_key_file(home)): TRITON_KEY}
        if spec.name in MODEL_CONTROLLERS
        else {}
    )
    assert mounts == {
        str(kafka_password_file(home, spec.name)): f"secrets/kafka/{spec.name}",
        _anchor_env()["SCREWOPS_KAFKA__CA_FILE"]: "tls/ca.crt",
        **triton_key,
        **minio,
    }


def test_triton_model_control_is_closed_to_all_but_the_key_holders() -> None:
    triton = _service("triton")
    # The image's copy of restricted.sh, given the key's file, starts tritonserver.
    dockerfile = (DEPLOY / "triton" / "Dockerfile").read_text()
    assert f"COPY --chmod=0755 {TRITON_RESTRICTED_START.name} /opt/screwops/" in dockerfile
    script, key_file, server = triton["command"][:3]
    assert (script, server) == (f"/opt/screwops/{TRITON_RESTRICTED_START.name}", "tritonserver")
    assert _secrets_mounts("triton") == {key_file: TRITON_KEY}
    assert triton["depends_on"][SECRETS_VOLUME]["condition"] == "service_completed_successfully"
    holders = {
        name
        for name in _compose()["services"]
        if TRITON_KEY in _secrets_mounts(name).values() and name != SECRETS_VOLUME
    }
    assert holders == MODEL_CONTROLLERS | {"triton"}


@pytest.mark.parametrize("spec", available(), ids=lambda s: s.name)
def test_prometheus_scrapes_every_service_on_its_metrics_port(spec: Service) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus-compose.yml").read_text())
    assert f"{spec.name}:{spec.metrics_port}" in _prometheus_jobs(config)["screwops-services"]


@pytest.mark.parametrize("name", ["evaluator", "registry"])
def test_model_writers_share_tritons_repository(name: str) -> None:
    triton = _service("triton")
    repository = next(a for a in triton["command"] if a.startswith("--model-repository="))
    triton_mounts = {source: target for source, target, _ in _mounts("triton")}
    volume = next(v for v, path in triton_mounts.items() if path == repository.partition("=")[2])
    mounts = {source: target for source, target, _ in _mounts(name)}
    assert mounts[volume] == _environment(name)[f"SCREWOPS_{name.upper()}_TRITON_REPOSITORY"]


# --- the stack-secrets job ---------------------------------------------------------------------


def test_the_secrets_job_gives_each_file_to_its_one_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owners: dict[Path, int] = {}
    monkeypatch.setattr(os, "chown", lambda path, uid, gid: owners.__setitem__(Path(path), uid))
    compose.make_secrets(tmp_path, log=tmp_path / "openssl.log")
    passwords = kafka_security.ensure_passwords(tmp_path)
    tls = kafka_security.Tls(tmp_path)
    broker = tmp_path / compose.BROKER_DIR
    # Kafka formats its storage with every principal's user, and logs in on each listener.
    users = (broker / compose.SCRAM_USERS).read_text().splitlines()
    assert users == kafka_security.scram_arguments(passwords)
    logins = _properties(broker / compose.LISTENER_LOGINS)
    assert set(logins) == {
        f"listener.name.{name.lower()}.scram-sha-512.sasl.jaas.config"
        for name in compose.CLIENT_LISTENERS
    }
    admin_login = kafka_security.scram_jaas_config(
        kafka_security.ADMIN, passwords[kafka_security.ADMIN]
    )
    assert set(logins.values()) == {admin_login}
    client = _properties(broker / compose.ADMIN_CLIENT)
    assert client["security.protocol"] == "SASL_SSL"
    assert (
        client["ssl.truststore.location"]
        == (_environment("kafka")["KAFKA_SSL_TRUSTSTORE_LOCATION"])
    )
    # Kafka's files are the kafka image's user's, each password the services' user's (MinIO
    # runs as root), the CA's key nobody's but root's; all owner-only.
    kafka_files = {broker, *broker.iterdir(), tls.broker_keystore}
    assert {p for p, uid in owners.items() if uid == compose.KAFKA_UID} == kafka_files
    assert {p for p, uid in owners.items() if uid == UID} == {
        *grpc_certificate_files(tmp_path),
        *(kafka_password_file(tmp_path, name) for name in passwords),
        *(minio_secret_file(tmp_path, name) for name in minio_security.principals()),
        triton_model_control_key_file(tmp_path),
    }
    assert triton_model_control_key_file(tmp_path).stat().st_mode & 0o077 == 0
    assert tls.ca_key not in owners
    for path in grpc_certificate_files(tmp_path):
        assert path.stat().st_mode & 0o077 == 0, path
    for path in [*kafka_files - {broker}, *(kafka_password_file(tmp_path, n) for n in passwords)]:
        assert path.stat().st_mode & 0o077 == 0, path
    # A second run keeps what exists.
    compose.make_secrets(tmp_path, log=tmp_path / "openssl.log")
    assert kafka_security.ensure_passwords(tmp_path) == passwords


@pytest.mark.parametrize("spec", [s for s in available() if s.grpc_port], ids=lambda s: s.name)
def test_every_api_serves_the_secrets_jobs_grpc_certificate(spec: Service) -> None:
    env = _anchor_env()
    cert, key = grpc_certificate_files(Path("/"))
    mounts = _secrets_mounts(spec.name)
    assert mounts[env["SCREWOPS_GRPC__CERT_FILE"]] == str(cert.relative_to("/"))
    assert mounts[env["SCREWOPS_GRPC__KEY_FILE"]] == str(key.relative_to("/"))
    assert mounts[env["SCREWOPS_GRPC__CA_FILE"]] == "tls/ca.crt"


def test_the_console_trusts_the_apis_ca_and_holds_no_key() -> None:
    mounts = _secrets_mounts("console")
    assert mounts[_anchor_env()["SCREWOPS_GRPC__CA_FILE"]] == "tls/ca.crt"
    assert not {"tls/grpc.key", "tls/ca.key"} & set(mounts.values())
