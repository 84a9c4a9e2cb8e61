"""deploy/k8s: valid against the Kubernetes and Strimzi schemas, and in agreement with the code.

No cluster is needed. The manifests are validated by kubeconform against JSON schemas that
``deploy/local/install.sh k8s`` lays out offline (Kubernetes' own, from the kubernetes-validate
wheel; Strimzi's, generated from its api jar), strictly: an unknown or misspelt field fails. The
validation tests skip, saying why, where that step has not run (``make setup`` and
``make k8s-validate`` run it). The rest reads the YAML and checks what a schema cannot: every
service has a Deployment with probes on its own ports and resource limits, the topics are the
event catalogue's with the settings' partitions, the shared settings name Services that exist,
Triton's replicas share the repository the registry writes, and the copies of the other stacks'
settings (images, Jaeger's configuration, Prometheus' jobs) have not drifted, and the network
policies allow exactly the flows the configuration and the code name.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel, SecretStr
from screwops_contracts import DLQ_SUFFIX, access_rights, all_topics
from screwops_contracts.minio import bucket_access
from screwops_settings import Role, StackSettings, minio_secret_file, port_of
from screwops_settings.services import SERVICES, Service
from screwops_stack import minio_security
from screwops_stack.certificates import GRPC_HOSTS
from screwops_stack.dockerfiles import UID, dockerfile_path
from screwops_stack.servers import (
    MINIO_PRINCIPAL,
    Layout,
    minio_notify_env,
    minio_notify_security_env,
)
from screwops_stack.supervisor import available

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s" / "base"
VERSIONS = ROOT / "deploy" / "local" / "versions.env"
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA_TOOL = ROOT / "deploy" / "local" / "k8s_schemas.py"

# Services whose instances must not run side by side (see each one's manifest for why).
SINGLETONS = {"trainer", "evaluator", "registry", "monitor"}
# Services that only consume events: instances beyond the partitions would idle.
CONSUMERS_ONLY = {"validation", "trainer", "evaluator", "monitor"}
SPECS = available()

Doc = dict[str, Any]


# --- reading the manifests ---------------------------------------------------------------------


@cache
def _kustomization() -> Doc:
    loaded = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@cache
def _documents() -> tuple[tuple[str, Doc], ...]:
    """(file, resource) for every resource of every file the kustomization lists."""
    found = []
    for name in _kustomization()["resources"]:
        for doc in yaml.safe_load_all((BASE / name).read_text()):
            if doc is not None:
                found.append((name, doc))
    return tuple(found)


def _all(kind: str) -> list[Doc]:
    return [doc for _, doc in _documents() if doc["kind"] == kind]


def _one(kind: str, name: str) -> Doc:
    matches = [doc for doc in _all(kind) if doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"{len(matches)} {kind} named {name}"
    return matches[0]


def _workloads() -> list[Doc]:
    return [d for k in ("Deployment", "StatefulSet", "Job") for d in _all(k)]


def _pod(workload: Doc) -> Doc:
    pod = workload["spec"]["template"]["spec"]
    assert isinstance(pod, dict)
    return pod


def _container(workload: Doc, name: str | None = None) -> Doc:
    containers = _pod(workload)["containers"]
    name = name or workload["metadata"]["name"]
    (container,) = [c for c in containers if c["name"] == name]
    assert isinstance(container, dict)
    return container


def _ports(container: Doc) -> dict[str, int]:
    return {p["name"]: int(p["containerPort"]) for p in container.get("ports", [])}


def _probe_target(container: Doc, probe: Doc) -> tuple[str, int, str | None]:
    """(kind, port number, HTTP path) of a probe, its named port resolved; a gRPC health check
    over TLS (``python -m screwops_rpc.health host:port``) is kind ``grpc-tls``."""
    command = probe.get("exec", {}).get("command", [])
    if command[:3] == ["python", "-m", "screwops_rpc.health"]:
        return "grpc-tls", port_of(command[3]), None
    for kind in ("grpc", "httpGet", "tcpSocket"):
        if kind in probe:
            port = probe[kind]["port"]
            number = _ports(container)[port] if isinstance(port, str) else int(port)
            return kind, number, probe[kind].get("path")
    raise AssertionError(f"{container['name']}: an exec probe where a port was expected")


def _env(container: Doc) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _config() -> dict[str, str]:
    data = _one("ConfigMap", "screwops-stack")["data"]
    assert isinstance(data, dict)
    return {str(k): str(v) for k, v in data.items()}


def _examples() -> dict[str, dict[str, str]]:
    """Each generated Secret's keys and example values, from its ``.env.example`` file."""
    secrets = {}
    for generator in _kustomization().get("secretGenerator", []):
        values: dict[str, str] = {}
        for env_file in generator["envs"]:
            example = BASE / f"{env_file}.example"
            assert example.is_file(), f"{env_file} has no {example.name} to start from"
            for line in example.read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    key, _, value = line.partition("=")
                    values[key] = value
        secrets[generator["name"]] = values
    return secrets


def _versions() -> dict[str, str]:
    pairs = (line.partition("=") for line in VERSIONS.read_text().splitlines())
    return {k.strip(): v.strip() for k, _, v in pairs if k.strip() and not k.startswith("#")}


@cache
def _compose() -> Doc:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _tag(image: str) -> str:
    return image.rsplit("/", 1)[-1].partition(":")[2]


def _host(address: str) -> str | None:
    return urlsplit(address if "://" in address else f"//{address}").hostname


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
            if isinstance(value, str):
                try:
                    port_of(value)
                except ValueError:
                    continue
                yield f"SCREWOPS_{section_name.upper()}__{field_name.upper()}", value


@pytest.fixture
def defaults(clean_environment: pytest.MonkeyPatch) -> StackSettings:
    return StackSettings()


@pytest.fixture
def cluster_env(clean_environment: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The variables a service's pod gets: the shared ConfigMap and the example credentials."""
    for name, value in _config().items():
        clean_environment.setenv(name, value)
    for values in _examples().values():
        for name, value in values.items():
            clean_environment.setenv(name, value)
    return clean_environment


# --- schema validation -----------------------------------------------------------------------


def _schemas() -> Path:
    return Layout(StackSettings().home).opt / "k8s-schemas"


def _kubeconform() -> Path:
    """The installed validator, or a skip saying how to install it; fails on a stale install."""
    opt = Layout(StackSettings().home).opt
    binary = opt / "bin" / "kubeconform"
    marker = opt / ".k8s"
    if not binary.is_file() or not marker.is_file():
        pytest.skip("kubeconform and its schemas are not installed: deploy/local/install.sh k8s")
    versions = _versions()
    expected = (
        f"{versions['KUBECONFORM_VERSION']} k8s-{versions['K8S_SCHEMA_VERSION']} "
        f"kv-{versions['KUBERNETES_VALIDATE_VERSION']} strimzi-{versions['STRIMZI_API_VERSION']}"
        # The schemas of KafkaUser joined those of the other Strimzi kinds.
        "+KafkaUser"
    )
    assert marker.read_text() == expected, "stale schemas: run deploy/local/install.sh k8s"
    return binary


def _validate(*paths: Path) -> Doc:
    """kubeconform's JSON report on ``paths``: strict, offline, a missing schema an error."""
    schemas = _schemas()
    kinds = "{{ .ResourceKind }}{{ .KindSuffix }}.json"
    custom = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
    result = subprocess.run(
        [
            str(_kubeconform()),
            "-strict",
            "-summary",
            "-output",
            "json",
            "-ignore-filename-pattern",
            r"kustomization\.yaml$",
            "-schema-location",
            f"{schemas}/kubernetes/{kinds}",
            "-schema-location",
            f"{schemas}/crds/{custom}",
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report: Doc = json.loads(result.stdout)
    report["returncode"] = result.returncode
    return report


def _problems(report: Doc) -> list[str]:
    return [
        f"{r['filename']}: {r['kind']} {r['name']}: {r['msg']}"
        for r in report.get("resources") or []
        if r["status"] != "statusValid"
    ]


def test_every_manifest_is_valid_against_the_schemas() -> None:
    report = _validate(BASE)
    assert _problems(report) == []
    assert report["returncode"] == 0
    assert report["summary"]["valid"] == len(_documents())
    assert report["summary"]["skipped"] == 0


def test_the_kustomization_renders_to_valid_resources(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (the files themselves are validated above)")
    _kubeconform()
    work = tmp_path / "base"
    shutil.copytree(BASE, work)
    for example in work.glob("*.env.example"):
        shutil.copy(example, example.with_suffix(""))
    rendered = subprocess.run(
        [kubectl, "kustomize", str(work)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    (tmp_path / "rendered.yaml").write_text(rendered)
    report = _validate(tmp_path / "rendered.yaml")
    assert _problems(report) == []
    secrets = len(_kustomization()["secretGenerator"])
    assert report["summary"]["valid"] == len(_documents()) + secrets


def test_the_validator_refuses_what_a_cluster_would(tmp_path: Path) -> None:
    """Unknown fields and wrong types fail, in Kubernetes' kinds and in Strimzi's alike."""
    deployment = _one("Deployment", "gateway")
    broken_deployment = json.loads(json.dumps(deployment))
    broken_deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    kafka = json.loads(json.dumps(_one("Kafka", "screwops")))
    kafka["spec"]["kafka"]["listeners"][0]["port"] = "9092"
    topic = json.loads(json.dumps(_all("KafkaTopic")[0]))
    topic["spec"]["partition"] = 3
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all([broken_deployment, kafka, topic]))
    report = _validate(path)
    assert report["returncode"] != 0
    assert report["summary"]["invalid"] == 3, _problems(report)


def test_the_schema_tool_makes_crd_schemas_strict() -> None:
    spec = importlib.util.spec_from_file_location("k8s_schemas", SCHEMA_TOOL)
    assert spec is not None
    assert spec.loader is not None
    tool = ModuleType(spec.name)
    spec.loader.exec_module(tool)
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {"port": {"x-kubernetes-int-or-string": True}},
            },
            "free": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {},
            },
            "map": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    strict = tool.strict(schema)
    assert strict["additionalProperties"] is False
    assert strict["properties"]["spec"]["additionalProperties"] is False
    assert strict["properties"]["spec"]["properties"]["port"]["anyOf"] == [
        {"type": "string"},
        {"type": "integer"},
    ]
    assert "additionalProperties" not in strict["properties"]["free"]
    assert strict["properties"]["map"]["additionalProperties"] == {"type": "string"}
    ref = {"$id": "https://kubernetes.io/api/x", "$ref": "/api/_definitions.json#/$defs/y"}
    assert tool.local_refs(ref) == {"$ref": "_definitions.json#/$defs/y"}


# --- the kustomization --------------------------------------------------------------------------


def test_the_kustomization_lists_every_manifest() -> None:
    files = {str(p.relative_to(BASE)) for p in BASE.rglob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(_kustomization()["resources"]) == sorted(files)


def test_every_resource_names_the_namespace() -> None:
    namespace = _kustomization()["namespace"]
    assert _one("Namespace", namespace)
    for name, doc in _documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, f"{name}: {doc['kind']}"


def test_credentials_come_from_ignored_files_with_examples() -> None:
    ignored = (BASE / ".gitignore").read_text().split()
    assert "*.env" in ignored
    secrets = _examples()
    referenced: set[tuple[str, str | None]] = set()
    for workload in _workloads():
        for container in _pod(workload)["containers"]:
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    referenced.add((source["secretRef"]["name"], None))
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    referenced.add((ref["name"], ref["key"]))
    # Strimzi's User Operator makes a Secret per KafkaUser, holding its password.
    made_by_strimzi = {(user["metadata"]["name"], "password") for user in _all("KafkaUser")}
    for secret, key in referenced - made_by_strimzi:
        assert secret in secrets, f"{secret} is not generated"
        assert key is None or key in secrets[secret], f"{secret} has no {key}"
    assert {secret for secret, _ in referenced - made_by_strimzi} == set(secrets)


def test_each_pod_gets_only_its_own_api_tokens() -> None:
    expected = {
        "gateway": {"SCREWOPS_GATEWAY_AUTH_TOKENS"},
        "ingestion": {"SCREWOPS_INGESTION_AUTH_TOKENS"},
        "labeling": {"SCREWOPS_LABELING_AUTH_TOKENS"},
        "registry": {"SCREWOPS_REGISTRY_AUTH_TOKENS"},
        "console": {
            f"SCREWOPS_CONSOLE_{api}_TOKEN"
            for api in ("GATEWAY", "INGESTION", "LABELING", "REGISTRY")
        },
        "monitor": {"SCREWOPS_MONITOR_REGISTRY_TOKEN"},
    }
    given: dict[str, set[str]] = {}
    for workload in _workloads():
        for container in _pod(workload)["containers"]:
            assert {"secretRef": {"name": "api-tokens"}} not in container.get("envFrom", [])
            keys = {
                ref["key"]
                for entry in container.get("env", [])
                if (ref := entry.get("valueFrom", {}).get("secretKeyRef", {})).get("name")
                == "api-tokens"
            }
            if keys:
                given[workload["metadata"]["name"]] = keys
    assert given == expected


def test_the_example_credentials_satisfy_production_settings(
    cluster_env: pytest.MonkeyPatch,
) -> None:
    from screwops_console.config import ConsoleSettings
    from screwops_gateway.config import GatewaySettings
    from screwops_ingestion.config import IngestionSettings
    from screwops_labeling.config import LabelingSettings
    from screwops_registry.config import RegistrySettings

    settings = StackSettings()
    assert settings.environment == "production"  # which refuses development credentials, and
    # refuses an API without tokens: loading each API's settings is the check.
    apis = {
        "gateway": GatewaySettings(),
        "ingestion": IngestionSettings(),
        "labeling": LabelingSettings(),
        "registry": RegistrySettings(),
    }
    console = ConsoleSettings()
    # The console's own principal, with the least role its pages need on each API.
    needs = {
        "gateway": Role.LINE,
        "ingestion": Role.VIEWER,
        "labeling": Role.LABELER,
        "registry": Role.OPERATOR,
    }
    for name, api in apis.items():
        table = {t.token.get_secret_value(): (t.principal, t.role) for t in api.auth_tokens}
        sent = getattr(console, f"{name}_token").get_secret_value()
        assert table.get(sent) == ("console", needs[name]), name
        assert ("ops-alice", Role.OPERATOR) in table.values(), name
    mongo = _examples()["mongo-credentials"]
    uri = urlsplit(settings.mongo.uri.get_secret_value())
    assert uri.username == mongo["MONGO_INITDB_ROOT_USERNAME"]
    assert uri.password == mongo["MONGO_INITDB_ROOT_PASSWORD"]


def test_every_image_is_pinned_to_a_tag() -> None:
    for workload in _workloads():
        for container in _pod(workload)["containers"]:
            tag = _tag(container["image"])
            assert tag not in ("", "latest"), (
                f"{workload['metadata']['name']}: {container['image']}"
            )


# --- the shared settings ------------------------------------------------------------------------


def _service_ports() -> dict[str, set[int]]:
    """Each Service's ports, and the Kafka bootstrap Service Strimzi makes from its listeners."""
    ports = {
        s["metadata"]["name"]: {int(p["port"]) for p in s["spec"]["ports"]} for s in _all("Service")
    }
    for kafka in _all("Kafka"):
        listeners = {int(listener["port"]) for listener in kafka["spec"]["kafka"]["listeners"]}
        ports[f"{kafka['metadata']['name']}-kafka-bootstrap"] = listeners
    return ports


def test_the_config_names_every_endpoint_of_the_settings(defaults: StackSettings) -> None:
    # The MongoDB URI holds the password, so it comes from the Secret every service gets.
    shared = set(_config()) | set(_examples()["screwops-stack-credentials"])
    assert {name for name, _ in _endpoints(defaults)} <= shared


def test_every_endpoint_is_a_service_on_the_settings_port(
    defaults: StackSettings, cluster_env: pytest.MonkeyPatch
) -> None:
    inside = dict(_endpoints(StackSettings()))
    services = _service_ports()
    for name, value in _endpoints(defaults):
        port = port_of(inside[name])
        assert port == port_of(value), name
        host = _host(inside[name])
        assert host in services, f"{name}: no Service {host}"
        assert port in services[host], f"{name}: Service {host} has no port {port}"


# --- the services --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [entry.name for entry in SERVICES])
def test_every_service_has_a_deployment_of_its_own_image(name: str) -> None:
    deployment = _one("Deployment", name)
    container = _container(deployment)
    image, _, _ = container["image"].partition(":")
    assert image == f"screwops/{name}"
    assert dockerfile_path(name).is_file(), "the image has no Dockerfile"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert labels["app.kubernetes.io/component"] == "service"
    sources = container["envFrom"]
    assert {"configMapRef": {"name": "screwops-stack"}} in sources
    assert {"secretRef": {"name": "screwops-stack-credentials"}} in sources


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_service_listens_and_is_scraped_on_its_settings_ports(spec: Service) -> None:
    deployment = _one("Deployment", spec.name)
    container = _container(deployment)
    assert set(_ports(container).values()) == spec.ports
    assert _ports(container)["metrics"] == spec.metrics_port
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == spec.metrics_port
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_service_is_probed_where_it_answers(spec: Service) -> None:
    container = _container(_one("Deployment", spec.name))
    if spec.grpc_port is not None:
        expected: tuple[str, int, str | None] = ("grpc-tls", spec.grpc_port, None)
    elif spec.http_port is not None:
        expected = ("httpGet", spec.http_port, "/healthz")
    else:
        expected = ("httpGet", spec.metrics_port, "/metrics")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert _probe_target(container, container[probe]) == expected, probe
    # A slow start is the startup probe's to wait for, not the liveness probe's to punish.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_api_has_a_service_on_its_port(spec: Service) -> None:
    api_ports = spec.ports - {spec.metrics_port}
    if not api_ports:
        assert not [s for s in _all("Service") if s["metadata"]["name"] == spec.name]
        return
    service = _one("Service", spec.name)
    assert {int(p["port"]) for p in service["spec"]["ports"]} == api_ports
    container = _container(_one("Deployment", spec.name))
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert (_ports(container)[target] if isinstance(target, str) else target) == port["port"]
    pod_labels = _one("Deployment", spec.name)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


@pytest.mark.parametrize("name", [entry.name for entry in SERVICES])
def test_every_service_runs_as_the_images_non_root_user(name: str) -> None:
    pod = _pod(_one("Deployment", name))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == UID
    container = _container(_one("Deployment", name))
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # Enough for the bus' graceful_timeout (60 s) and the gRPC drain (10 s).
    assert pod["terminationGracePeriodSeconds"] >= 70


def test_every_container_has_resource_requests_and_limits() -> None:
    def quantity(value: str | int) -> float:
        text = str(value)
        units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
        for suffix, factor in units.items():
            if text.endswith(suffix):
                return float(text.removesuffix(suffix)) * factor
        return float(text)

    for workload in _workloads():
        for container in _pod(workload)["containers"]:
            where = f"{workload['metadata']['name']}/{container['name']}"
            resources = container.get("resources", {})
            for resource in ("cpu", "memory"):
                request = resources.get("requests", {}).get(resource)
                limit = resources.get("limits", {}).get(resource)
                assert request is not None, f"{where}: {resource} request"
                assert limit is not None, f"{where}: {resource} limit"
                assert quantity(request) <= quantity(limit), f"{where}: {resource}"


@pytest.mark.parametrize("name", sorted(SINGLETONS))
def test_singletons_run_once_and_are_replaced_not_rolled(name: str) -> None:
    deployment = _one("Deployment", name)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.parametrize("name", sorted(CONSUMERS_ONLY))
def test_consumer_replicas_do_not_outnumber_partitions(name: str, defaults: StackSettings) -> None:
    assert _one("Deployment", name)["spec"]["replicas"] <= defaults.kafka.partitions


def test_the_gateway_is_scaled_by_its_autoscaler() -> None:
    deployment = _one("Deployment", "gateway")
    assert "replicas" not in deployment["spec"], "applying the file would fight the autoscaler"
    (hpa,) = [h for h in _all("HorizontalPodAutoscaler") if h["metadata"]["name"] == "gateway"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # Utilization is measured against the request, so there must be one.
    assert _container(deployment)["resources"]["requests"]["cpu"]


def test_line_clients_can_balance_calls_over_every_gateway_pod() -> None:
    """The ClusterIP Service balances connections, so a headless twin gives clients every pod's
    address to balance calls over, and the gateway closes old connections so that clients
    resolve it again and reach pods the autoscaler added."""
    from screwops_gateway.config import GatewaySettings

    cluster_ip, headless = _one("Service", "gateway"), _one("Service", "gateway-headless")
    assert "clusterIP" not in cluster_ip["spec"]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == cluster_ip["spec"]["selector"]
    assert headless["spec"]["ports"] == cluster_ip["spec"]["ports"]
    env = _env(_container(_one("Deployment", "gateway")))
    age = GatewaySettings.model_validate(
        {"max_connection_age_s": env["SCREWOPS_GATEWAY_MAX_CONNECTION_AGE_S"]}
    ).max_connection_age_s
    # Long enough that reconnecting costs nothing, short enough that new pods fill in minutes.
    assert age is not None
    assert 60 <= age <= 900


# --- Triton ----------------------------------------------------------------------------------


def _mounts(container: Doc) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}


def _claims(workload: Doc) -> dict[str, str]:
    return {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in _pod(workload).get("volumes", [])
        if "persistentVolumeClaim" in v
    }


def test_triton_runs_several_replicas_on_one_shared_repository() -> None:
    triton = _one("Deployment", "triton")
    assert triton["spec"]["replicas"] >= 3
    server = _container(triton)
    args = server["args"]
    assert "--model-control-mode=explicit" in args
    repository = next(a for a in args if a.startswith("--model-repository=")).partition("=")[2]
    volume = next(v for v, path in _mounts(server).items() if path == repository)
    claim = _one("PersistentVolumeClaim", _claims(triton)[volume])
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    sync = _container(triton, "model-sync")
    assert sync["command"][:3] == ["python", "-m", "screwops_serving.sync"]
    assert f"--repository={_mounts(sync)[volume]}" in sync["command"]
    assert f"--triton=127.0.0.1:{_ports(server)['grpc']}" in sync["command"]
    assert "readinessProbe" in sync, "a replica must not serve before it caught up"


def test_triton_model_control_is_closed_to_all_but_the_key_holders() -> None:
    triton = _one("Deployment", "triton")
    server = _container(triton)
    # The image's restricted.sh reads the key from the Secret's file and starts tritonserver.
    script, key_file, command = server["args"][:3]
    assert (script, command) == ("/opt/screwops/restricted.sh", "tritonserver")
    (volume,) = [v for v in _pod(triton)["volumes"] if v["name"] == "model-control"]
    assert volume["secret"]["secretName"] == "triton-model-control"
    (item,) = volume["secret"]["items"]
    assert f"{_mounts(server)['model-control']}/{item['path']}" == key_file
    # Who else holds the key: those that load and unload models, by the settings' variable.
    holders = set()
    for workload in _workloads():
        for container in _pod(workload)["containers"]:
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef", {})
                if ref.get("name") == "triton-model-control":
                    assert entry["name"] == ref["key"] == item["key"]
                    holders.add(f"{workload['metadata']['name']}/{container['name']}")
    assert holders == {"registry/registry", "evaluator/evaluator", "triton/model-sync"}
    assert list(_examples()["triton-model-control"]) == ["SCREWOPS_TRITON__MODEL_CONTROL_KEY"]


@pytest.mark.parametrize("name", ["registry", "evaluator"])
def test_model_writers_share_tritons_repository(name: str) -> None:
    triton = _one("Deployment", "triton")
    writer = _one("Deployment", name)
    (volume,) = _claims(writer)
    assert _claims(writer)[volume] == _claims(triton)["models"]
    path = _mounts(_container(writer))[volume]
    assert _env(_container(writer))[f"SCREWOPS_{name.upper()}_TRITON_REPOSITORY"] == path


def test_triton_serves_the_settings_ports_and_the_compose_image(defaults: StackSettings) -> None:
    server = _container(_one("Deployment", "triton"))
    assert set(_ports(server).values()) == {
        port_of(defaults.triton.http_url),
        port_of(defaults.triton.grpc_url),
        port_of(defaults.triton.metrics_url),
    }
    assert _tag(server["image"]) == _tag(_compose()["services"]["triton"]["image"])


# --- Kafka -----------------------------------------------------------------------------------


def test_kafka_runs_the_native_version_in_kraft_mode() -> None:
    (kafka,) = _all("Kafka")
    assert kafka["spec"]["kafka"]["version"] == _versions()["KAFKA_VERSION"]
    annotations = kafka["metadata"]["annotations"]
    assert annotations["strimzi.io/kraft"] == "enabled"
    assert annotations["strimzi.io/node-pools"] == "enabled"
    assert "zookeeper" not in kafka["spec"]
    pools = [p for p in _all("KafkaNodePool")]
    assert all(
        p["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"] for p in pools
    )
    roles = {role for pool in pools for role in pool["spec"]["roles"]}
    assert roles == {"controller", "broker"}
    assert kafka["spec"]["kafka"]["config"]["auto.create.topics.enable"] is False


def test_the_bootstrap_address_is_the_scram_listener(cluster_env: pytest.MonkeyPatch) -> None:
    (kafka,) = _all("Kafka")
    (listener,) = [x for x in kafka["spec"]["kafka"]["listeners"] if x["type"] == "internal"]
    assert listener["tls"] is True  # the services' settings speak SASL_SSL
    assert StackSettings().kafka.security_protocol == "SASL_SSL"
    expected = f"{kafka['metadata']['name']}-kafka-bootstrap:{listener['port']}"
    assert StackSettings().kafka.bootstrap_servers == expected


def test_the_topics_are_the_catalogues_with_the_settings_partitions(
    defaults: StackSettings,
) -> None:
    (kafka,) = _all("Kafka")
    brokers = sum(p["spec"]["replicas"] for p in _all("KafkaNodePool"))
    topics = _all("KafkaTopic")
    names = [t["spec"]["topicName"] for t in topics]
    assert sorted(names) == sorted(all_topics())
    assert int(_config()["SCREWOPS_KAFKA__PARTITIONS"]) == defaults.kafka.partitions
    assert kafka["spec"]["kafka"]["config"]["num.partitions"] == defaults.kafka.partitions
    for topic in topics:
        spec = topic["spec"]
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert spec["partitions"] == defaults.kafka.partitions, spec["topicName"]
        assert 1 < spec["replicas"] <= brokers
        assert int(spec["config"]["min.insync.replicas"]) < spec["replicas"]


def test_dead_letters_are_kept_at_least_as_long_as_events() -> None:
    retention = {
        t["spec"]["topicName"]: int(t["spec"]["config"]["retention.ms"]) for t in _all("KafkaTopic")
    }
    for topic, kept in retention.items():
        if topic.endswith(DLQ_SUFFIX):
            assert kept >= retention[topic.removesuffix(DLQ_SUFFIX)], topic


# --- MinIO, MongoDB, Jaeger, Prometheus -------------------------------------------------------


def test_minio_notifies_kafka_as_the_native_stack_does(cluster_env: pytest.MonkeyPatch) -> None:
    minio = _container(_one("StatefulSet", "minio"))
    env = _env(minio)
    queue_dir = next(v for k, v in env.items() if k.startswith("MINIO_NOTIFY_KAFKA_QUEUE_DIR"))
    assert {k: env[k] for k in minio_notify_env(StackSettings(), queue_dir=queue_dir)} == (
        minio_notify_env(StackSettings(), queue_dir=queue_dir)
    )
    assert queue_dir in _mounts(minio).values()


def _secret_ref(container: Doc, name: str) -> dict[str, str]:
    (entry,) = [e for e in container.get("env", []) if e["name"] == name]
    ref = entry["valueFrom"]["secretKeyRef"]
    assert isinstance(ref, dict)
    return ref


def test_minio_root_has_the_generated_password_of_minio_users() -> None:
    minio = _container(_one("StatefulSet", "minio"))
    assert _env(minio)["MINIO_ROOT_USER"] == minio_security.ROOT
    assert _secret_ref(minio, "MINIO_ROOT_PASSWORD") == {
        "name": "minio-users",
        "key": minio_security.ROOT,
    }
    assert set(_examples()["minio-users"]) == set(minio_security.principals())


def test_minio_init_provisions_every_user_as_the_root() -> None:
    job = _one("Job", "minio-init")
    container = _container(job, "provision")
    assert container["command"] == ["python", "-m", "screwops_stack.compose", "minio"]
    env = _env(container)
    assert env["SCREWOPS_MINIO__ACCESS_KEY"] == minio_security.ROOT
    # Every secret, where the stack home keeps them, read-only.
    home = Path(env["SCREWOPS_HOME"])
    assert _mounts(container)["minio-users"] == str(minio_secret_file(home, "x").parent)
    (volume,) = [v for v in _pod(job)["volumes"] if v["name"] == "minio-users"]
    assert volume["secret"]["secretName"] == "minio-users"


@pytest.mark.parametrize("name", sorted({s.name for s in SERVICES}))
def test_each_service_is_its_own_minio_user(name: str) -> None:
    assert name in bucket_access()
    container = _container(_one("Deployment", name))
    assert _env(container)["SCREWOPS_MINIO__ACCESS_KEY"] == name
    assert _secret_ref(container, "SCREWOPS_MINIO__SECRET_KEY") == {
        "name": "minio-users",
        "key": name,
    }
    given = {
        ref["key"]
        for e in container.get("env", [])
        if (ref := e.get("valueFrom", {}).get("secretKeyRef", {})).get("name") == "minio-users"
    }
    assert given == {name}


def test_minio_and_mongo_listen_on_the_settings_ports(defaults: StackSettings) -> None:
    minio = _container(_one("StatefulSet", "minio"))
    assert set(_ports(minio).values()) == {
        port_of(defaults.minio.endpoint),
        defaults.minio.console_port,
    }
    mongo = _container(_one("StatefulSet", "mongo"))
    assert set(_ports(mongo).values()) == {port_of(defaults.mongo.uri.get_secret_value())}


@pytest.mark.parametrize(
    ("workload", "kind", "compose_service"),
    [
        ("minio", "StatefulSet", "minio"),
        ("minio-init", "Job", "minio-init"),
        ("mongo", "StatefulSet", "mongo"),
        ("jaeger", "Deployment", "jaeger"),
        ("prometheus", "Deployment", "prometheus"),
    ],
)
def test_servers_run_the_compose_images(workload: str, kind: str, compose_service: str) -> None:
    (container, *_) = _pod(_one(kind, workload))["containers"]
    assert container["image"] == _compose()["services"][compose_service]["image"]


def test_jaeger_runs_the_shared_configuration_on_the_settings_ports(
    defaults: StackSettings,
) -> None:
    shared = (ROOT / "deploy" / "jaeger" / "config.yaml").read_text()
    assert _one("ConfigMap", "jaeger-config")["data"]["config.yaml"] == shared
    env = _env(_container(_one("Deployment", "jaeger")))
    telemetry = defaults.telemetry
    assert int(env["JAEGER_QUERY_PORT"]) == port_of(telemetry.jaeger_query_url)
    assert int(env["JAEGER_OTLP_GRPC_PORT"]) == port_of(telemetry.otlp_grpc_endpoint)
    assert int(env["JAEGER_OTLP_HTTP_PORT"]) == port_of(telemetry.otlp_http_endpoint)


def test_prometheus_has_the_other_stacks_jobs_and_finds_the_services() -> None:
    config = yaml.safe_load(_one("ConfigMap", "prometheus-config")["data"]["prometheus.yml"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    compose = yaml.safe_load(
        (ROOT / "deploy" / "prometheus" / "prometheus-compose.yml").read_text()
    )
    assert set(jobs) == {job["job_name"] for job in compose["scrape_configs"]}
    assert config["rule_files"] == compose["rule_files"]
    services = jobs["screwops-services"]
    (sd,) = services["kubernetes_sd_configs"]
    assert sd["selectors"] == [{"role": "pod", "label": "app.kubernetes.io/component=service"}]
    # The alerting rules group by `service`, as docker-compose's targets are labelled.
    assert any(r.get("target_label") == "service" for r in services["relabel_configs"])
    rules_mount = _mounts(_container(_one("Deployment", "prometheus")))["rules"]
    assert config["rule_files"] == [f"{rules_mount}/*.yml"]


# --- Kafka's principals ----------------------------------------------------------------------


def _acls(user: Doc) -> set[tuple[str, str, str, str]]:
    return {
        (
            acl["resource"]["type"],
            acl["resource"]["name"],
            acl["resource"]["patternType"],
            operation,
        )
        for acl in user["spec"]["authorization"]["acls"]
        for operation in acl["operations"]
    }


def test_every_kafka_principal_is_a_scram_user_with_the_catalogues_acls() -> None:
    users = {user["metadata"]["name"]: user for user in _all("KafkaUser")}
    rights = access_rights()
    assert set(users) == set(rights)
    for name, user in users.items():
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}, name
        expected = (
            {("topic", topic, "literal", "Write") for topic in rights[name].write}
            | {("topic", topic, "literal", "Read") for topic in rights[name].read}
            | {("group", group, "literal", "Read") for group in rights[name].groups}
            | {("group", prefix, "prefix", "Read") for prefix in rights[name].group_prefixes}
        )
        assert _acls(user) == expected, name


def test_kafka_takes_scram_over_tls_only_and_authorizes_every_request() -> None:
    spec = _one("Kafka", "screwops")["spec"]
    for listener in spec["kafka"]["listeners"]:
        assert listener["tls"] is True, listener["name"]
        assert listener["authentication"] == {"type": "scram-sha-512"}, listener["name"]
    assert spec["kafka"]["authorization"]["type"] == "simple"
    assert "userOperator" in spec["entityOperator"]


@pytest.mark.parametrize(
    "name", sorted({r.principal for r in access_rights().values()} & {s.name for s in SERVICES})
)
def test_each_service_logs_in_to_kafka_as_its_own_user(name: str) -> None:
    container = _container(_one("Deployment", name))
    assert _env(container)["SCREWOPS_KAFKA__USERNAME"] == name
    (password,) = [e for e in container["env"] if e["name"] == "SCREWOPS_KAFKA__PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"] == {"name": name, "key": "password"}
    ca_file = Path(_config()["SCREWOPS_KAFKA__CA_FILE"])
    assert _mounts(container)["kafka-ca"] == str(ca_file.parent)
    (volume,) = [v for v in _pod(_one("Deployment", name))["volumes"] if v["name"] == "kafka-ca"]
    assert volume["secret"]["secretName"] == "screwops-cluster-ca-cert"
    assert volume["secret"]["items"] == [{"key": "ca.crt", "path": ca_file.name}]


def test_minio_logs_in_to_kafka_as_the_native_stack_does() -> None:
    container = _container(_one("StatefulSet", "minio"))
    native = minio_notify_security_env(StackSettings(), password="")
    password = next(name for name in native if "SASL_PASSWORD" in name)
    assert {k: _env(container)[k] for k in native if k != password} == {
        k: v for k, v in native.items() if k != password
    }
    (secret,) = [e for e in container["env"] if e["name"] == password]
    assert secret["valueFrom"]["secretKeyRef"] == {"name": MINIO_PRINCIPAL, "key": "password"}


@pytest.mark.parametrize(
    "spec", [s for s in SPECS if s.grpc_port is not None], ids=lambda s: s.name
)
def test_every_api_serves_tls_with_the_certificate_secret(spec: Service) -> None:
    config = _config()
    files = {config[f"SCREWOPS_GRPC__{name}"] for name in ("CA_FILE", "CERT_FILE", "KEY_FILE")}
    (directory,) = {str(Path(path).parent) for path in files}
    container = _container(_one("Deployment", spec.name))
    assert _mounts(container)["grpc-tls"] == directory
    (volume,) = [
        v for v in _pod(_one("Deployment", spec.name))["volumes"] if v["name"] == "grpc-tls"
    ]
    assert volume["secret"]["secretName"] == "screwops-grpc-tls"
    assert "items" not in volume["secret"], "the API needs its key and certificate"


@pytest.mark.parametrize("name", ["console", "monitor"])
def test_the_apis_clients_trust_their_ca_and_hold_no_key(name: str) -> None:
    (volume,) = [v for v in _pod(_one("Deployment", name))["volumes"] if v["name"] == "grpc-tls"]
    assert volume["secret"] == {
        "secretName": "screwops-grpc-tls",
        "items": [{"key": "ca.crt", "path": Path(_config()["SCREWOPS_GRPC__CA_FILE"]).name}],
    }
    assert _mounts(_container(_one("Deployment", name)))["grpc-tls"] == str(
        Path(_config()["SCREWOPS_GRPC__CA_FILE"]).parent
    )


def test_the_grpc_certificate_names_every_service_an_api_is_reached_by() -> None:
    ports = {spec.grpc_port for spec in SPECS if spec.grpc_port is not None}
    names = {
        service["metadata"]["name"]
        for service in _all("Service")
        if {port["port"] for port in service["spec"]["ports"]} & ports
    }
    assert names <= set(GRPC_HOSTS)


# --- network policies ----------------------------------------------------------------------------

# Strimzi's pods, which no manifest here describes: (labels, ports) as the operator makes them.
KAFKA_POD = {"strimzi.io/cluster": "screwops", "strimzi.io/kind": "Kafka"}
STRIMZI_PODS: dict[str, tuple[dict[str, str], set[int]]] = {
    # Controllers (9090), replication (9091), the SCRAM listener, the broker agent (8443).
    "kafka": ({**KAFKA_POD, "strimzi.io/name": "screwops-kafka"}, {9090, 9091, 9092, 8443}),
    "entity-operator": ({**KAFKA_POD, "strimzi.io/name": "screwops-entity-operator"}, set()),
    "cluster-operator": (
        {"name": "strimzi-cluster-operator", "strimzi.io/kind": "cluster-operator"},
        set(),
    ),
}
# Reached from outside the namespace: the line's clients and people, through a LoadBalancer or an
# ingress (each call still needs TLS and a token or a login).
PUBLIC = {("gateway", 50051), ("console", 8080)}
# Who may reach the Kubernetes API (ports only: its address is the cluster's own).
KUBERNETES_API = {443, 6443}
WATCH_THE_API = {"prometheus", "entity-operator", "cluster-operator"}
# Stack settings a service's own code reads beyond what every service does (the bus, storage,
# MongoDB and traces): the setting as the code names it, and its SCREWOPS_* variable.
CODE_ENDPOINTS = {
    "triton.grpc_url": "SCREWOPS_TRITON__GRPC_URL",
    "telemetry.prometheus_url": "SCREWOPS_TELEMETRY__PROMETHEUS_URL",
}
EVERY_SERVICE_ENDPOINTS = [
    "SCREWOPS_KAFKA__BOOTSTRAP_SERVERS",
    "SCREWOPS_MINIO__ENDPOINT",
    "SCREWOPS_MONGO__URI",
    "SCREWOPS_TELEMETRY__OTLP_GRPC_ENDPOINT",
]

Flow = tuple[str, str, int]


def _pods() -> dict[str, tuple[dict[str, str], set[int]]]:
    """Each pod's name (its app.kubernetes.io/name), labels and every port it listens on."""
    pods = dict(STRIMZI_PODS)
    for workload in _workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        ports = {p for c in _pod(workload)["containers"] for p in _ports(c).values()}
        pods[labels["app.kubernetes.io/name"]] = (labels, ports)
    return pods


def _selects(selector: Doc, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are modelled"
    return bool(selector.get("matchLabels", {}).items() <= labels.items())


def _policies_of(labels: dict[str, str], direction: str) -> list[Doc]:
    return [
        p["spec"]
        for p in _all("NetworkPolicy")
        if _selects(p["spec"]["podSelector"], labels) and direction in p["spec"]["policyTypes"]
    ]


def _rule_allows(rule: Doc, peers_key: str, peer: dict[str, str] | None, port: int) -> bool:
    """Whether one rule lets ``port`` through to or from ``peer``, a pod of the namespace by its
    labels (None: anything outside the namespace)."""
    ports = rule.get("ports")
    if ports is not None and not any(p.get("port") == port for p in ports):
        return False
    if peers_key not in rule:
        return True
    for entry in rule[peers_key]:
        if "ipBlock" in entry:
            continue
        if "namespaceSelector" in entry:
            # Only kube-system's DNS is named by namespace; no pod of this namespace is it.
            continue
        if peer is not None and _selects(entry["podSelector"], peer):
            return True
    return False


def _allowed(direction: str, pod: dict[str, str], peer: dict[str, str] | None, port: int) -> bool:
    key = "from" if direction == "Ingress" else "to"
    rules_key = "ingress" if direction == "Ingress" else "egress"
    return any(
        _rule_allows(rule, key, peer, port)
        for spec in _policies_of(pod, direction)
        for rule in spec.get(rules_key, [])
    )


def _flow_allowed(source: str, target: str, port: int) -> bool:
    pods = _pods()
    src, dst = pods[source][0], pods[target][0]
    return _allowed("Egress", src, dst, port) and _allowed("Ingress", dst, src, port)


def _pod_behind(host: str) -> str:
    """The pod a Service's host name reaches (Strimzi's bootstrap Service: the brokers)."""
    if host.endswith("-kafka-bootstrap"):
        return "kafka"
    selector = _one("Service", host)["spec"]["selector"]
    return str(selector["app.kubernetes.io/name"])


def _reads(service: str, setting: str) -> bool:
    source = ROOT / "services" / service / "src"
    return any(setting in path.read_text() for path in source.rglob("*.py"))


def _named_flows() -> set[Flow]:
    """Every flow the configuration and the code name: the shared settings every service uses,
    the stack settings a service's code reads, each service's own *_ADDRESS, MinIO's bucket
    notifications, the minio-init Job, Prometheus's scrapes and Strimzi's own traffic."""
    shared = _config() | _examples()["screwops-stack-credentials"]

    def target(address: str) -> tuple[str, int]:
        address = address.rsplit("@", 1)[-1] if "://" in address else address
        host = _host(address)
        assert host is not None, address
        return _pod_behind(host), port_of(address)

    flows: set[Flow] = set()
    for spec in SERVICES:
        for name in EVERY_SERVICE_ENDPOINTS:
            flows.add((spec.name, *target(shared[name])))
        for setting, name in CODE_ENDPOINTS.items():
            if _reads(spec.name, setting):
                flows.add((spec.name, *target(shared[name])))
        for name, value in _env(_container(_one("Deployment", spec.name))).items():
            if name.startswith(spec.env_prefix) and name.endswith("_ADDRESS"):
                flows.add((spec.name, *target(value)))
    minio = _env(_container(_one("StatefulSet", "minio")))
    flows.add(("minio", *target(minio["MINIO_NOTIFY_KAFKA_BROKERS_SCREWOPS"])))
    flows.add(("minio-init", *target(shared["SCREWOPS_MINIO__ENDPOINT"])))
    for workload in _workloads():
        template = workload["spec"]["template"]["metadata"]
        scraped = template.get("annotations", {}).get("prometheus.io/port")
        name = template["labels"]["app.kubernetes.io/name"]
        if scraped is not None and name != "prometheus":  # itself, over loopback
            flows.add(("prometheus", name, int(scraped)))
    flows |= {("kafka", "kafka", 9090), ("kafka", "kafka", 9091)}
    flows.add(("entity-operator", "kafka", 9091))
    flows |= {("cluster-operator", "kafka", port) for port in (9090, 9091, 8443)}
    return flows


def test_the_namespace_denies_what_no_policy_allows() -> None:
    deny = _one("NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_every_pod_is_selected_by_a_policy_of_its_own() -> None:
    namespace_wide = {"default-deny", "dns"}
    for name, (labels, _) in _pods().items():
        own = [
            p["metadata"]["name"]
            for p in _all("NetworkPolicy")
            if p["metadata"]["name"] not in namespace_wide
            and _selects(p["spec"]["podSelector"], labels)
        ]
        assert own, f"{name}: no policy selects it"


def test_every_pod_may_ask_the_clusters_dns() -> None:
    (rule,) = _one("NetworkPolicy", "dns")["spec"]["egress"]
    (peer,) = rule["to"]
    assert peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kube-system"
    }
    assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert {(p["protocol"], p["port"]) for p in rule["ports"]} == {("UDP", 53), ("TCP", 53)}


def test_the_named_flows_include_what_the_brief_of_each_component_says() -> None:
    """The derivation above finds the flows we know the system has (a guard on the test)."""
    flows = _named_flows()
    assert {
        ("gateway", "triton", 8001),
        ("registry", "triton", 8001),
        ("evaluator", "triton", 8001),
        ("console", "prometheus", 9090),
        ("monitor", "prometheus", 9090),
        ("console", "registry", 50054),
        ("monitor", "registry", 50054),
        ("console", "gateway", 50051),
        ("console", "labeling", 50053),
        ("console", "ingestion", 50052),
        ("ingestion", "kafka", 9092),
        ("trainer", "mongo", 27017),
        ("validation", "jaeger", 4317),
        ("validation", "minio", 9000),
        ("minio", "kafka", 9092),
        ("prometheus", "triton", 8002),
        ("prometheus", "gateway", 9107),
    } <= flows
    assert ("gateway", "triton", 8000) not in flows, "model control over HTTP is nobody's"


def test_every_flow_the_config_names_is_allowed() -> None:
    refused = [flow for flow in sorted(_named_flows()) if not _flow_allowed(*flow)]
    assert refused == []


def test_no_other_port_is_open_between_pods() -> None:
    named = _named_flows()
    pods = _pods()
    extra = [
        (source, target, port)
        for source in pods
        for target, (_, ports) in pods.items()
        for port in sorted(ports)
        if (source, target, port) not in named
        and (target, port) not in PUBLIC
        and _flow_allowed(source, target, port)
    ]
    assert extra == []


def test_only_the_public_ports_take_callers_from_outside() -> None:
    for name, (labels, ports) in _pods().items():
        open_outside = {port for port in ports if _allowed("Ingress", labels, None, port)}
        assert open_outside == {port for pod, port in PUBLIC if pod == name}, name


def test_only_what_watches_the_api_may_leave_the_namespace() -> None:
    """Egress to any address is only to the Kubernetes API's ports, for what watches it."""
    for name, (labels, _) in _pods().items():
        anywhere = {
            p["port"]
            for spec in _policies_of(labels, "Egress")
            for rule in spec.get("egress", [])
            if "to" not in rule
            for p in rule["ports"]
        }
        assert anywhere == (KUBERNETES_API if name in WATCH_THE_API else set()), name


def test_the_gateway_reaches_triton_only_where_model_control_needs_the_key() -> None:
    """Triton's HTTP port serves model control without gRPC's restricted protocol: no pod may
    reach it; its gRPC port asks for the key only the registry and the evaluator hold."""
    assert not any(_flow_allowed(source, "triton", 8000) for source in _pods())
    assert _flow_allowed("gateway", "triton", 8001)
    assert not _flow_allowed("gateway", "triton", 8002)


def test_strimzis_listener_policy_names_the_same_peers() -> None:
    (listener,) = _one("Kafka", "screwops")["spec"]["kafka"]["listeners"]
    peers = [entry["podSelector"]["matchLabels"] for entry in listener["networkPolicyPeers"]]
    kafka = _one("NetworkPolicy", "kafka")["spec"]
    (clients,) = [
        rule
        for rule in kafka["ingress"]
        if rule["ports"] == [{"protocol": "TCP", "port": listener["port"]}]
    ]
    assert peers == [entry["podSelector"]["matchLabels"] for entry in clients["from"]]
