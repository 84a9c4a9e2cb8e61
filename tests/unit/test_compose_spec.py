"""docker-compose.yml would start: it is valid Compose, its secrets exist once
``make compose-secrets`` ran, every service's settings accept what it is given in production
mode, and the volumes non-root containers write are theirs first.

No Docker engine and no network: the file is validated against the Compose specification's JSON
Schema vendored in ``deploy/compose/compose-spec`` (what ``docker compose`` validates with), after
interpolating ``${VAR}`` as compose does from the ``.env`` that
``screwops_stack.compose_secrets`` writes.
"""

from __future__ import annotations

import json
import os
import re
import stat
from functools import cache
from importlib import import_module
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from screwops_settings import ApiSettings, ServiceSettings
from screwops_settings.services import Service
from screwops_stack import compose_secrets
from screwops_stack.dockerfiles import TRITON_DOCKERFILE, UID, locked_versions
from screwops_stack.supervisor import available

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "deploy" / "compose" / "compose-spec" / "compose-spec.json"
JAEGER_UID = 10001
"""The jaeger image's user."""
SECRETS_VOLUME = "stack-secrets"
"""Made and handed out file by file by the stack-secrets job, not by volumes-init."""

# `$$`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`.
VARIABLE = re.compile(
    r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


def _interpolate(node: Any, env: dict[str, str], missing: set[str]) -> Any:
    """``node`` with every string interpolated as compose does; unset required variables are
    added to ``missing``."""
    if isinstance(node, dict):
        return {k: _interpolate(v, env, missing) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, env, missing) for v in node]
    if not isinstance(node, str):
        return node

    def resolve(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        present = env.get(name) if op is None or not op.startswith(":") else env.get(name) or None
        if present is not None:
            return present
        if op is not None and op.endswith("?"):
            missing.add(name)
            return ""
        return arg or ""

    return VARIABLE.sub(resolve, node)


def _raw() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@cache
def _dotenv() -> dict[str, str]:
    return compose_secrets.variables({})


def _compose() -> dict[str, Any]:
    """The file as compose runs it once ``make compose-secrets`` made ``.env``."""
    missing: set[str] = set()
    interpolated = _interpolate(_raw(), _dotenv(), missing)
    assert not missing, f"make compose-secrets does not make {sorted(missing)}"
    assert isinstance(interpolated, dict)
    return interpolated


def _service(name: str) -> dict[str, Any]:
    service = _compose()["services"][name]
    assert isinstance(service, dict)
    return service


def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _settings_class(spec: Service) -> type[ServiceSettings]:
    cls: object = getattr(
        import_module(f"{spec.module}.config"), f"{spec.name.capitalize()}Settings"
    )
    assert isinstance(cls, type)
    assert issubclass(cls, ServiceSettings)
    return cls


def _named_mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(named volume, container path, read-only) of each of ``service``'s volume mounts."""
    found = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            if entry.get("type", "volume") == "volume":
                found.append((entry["source"], entry["target"], bool(entry.get("read_only"))))
            continue
        source, target, *mode = str(entry).split(":")
        if not source.startswith((".", "/")):
            found.append((source, target, mode == ["ro"]))
    return found


# --- the Compose specification -------------------------------------------------------------


def test_the_file_is_valid_against_the_compose_specification() -> None:
    errors = sorted(_validator().iter_errors(_compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def test_the_schema_refuses_what_compose_would() -> None:
    # The check is real: a misspelt key and a condition compose does not know both fail it.
    broken = _compose()
    broken["services"]["gateway"]["depends_onn"] = {}
    broken["services"]["registry"]["depends_on"]["triton"]["condition"] = "service_started_ok"
    paths = {tuple(e.absolute_path) for e in _validator().iter_errors(broken)}
    assert ("services", "gateway") in paths
    assert any(p[:3] == ("services", "registry", "depends_on") for p in paths)


def test_every_completed_dependency_is_a_one_shot_job() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            if spec["condition"] == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", f"{name} -> {dependency}"


# --- secrets and production mode -------------------------------------------------------------


def test_without_dotenv_compose_refuses_to_start_and_names_the_make_target() -> None:
    missing: set[str] = set()
    _interpolate(_raw(), {}, missing)
    assert missing == {
        name
        for name in _dotenv()
        if re.search(rf"\$\{{{name}:\?run make compose-secrets\}}", COMPOSE.read_text())
    }
    assert {f"SCREWOPS_{api.upper()}_AUTH_TOKENS" for api in compose_secrets.API_CALLERS} <= missing
    assert set(compose_secrets.PASSWORD_VARIABLES) <= missing


def test_no_secret_has_a_default_in_the_file() -> None:
    defaults = re.findall(r"\$\{([A-Za-z0-9_]+):?-", COMPOSE.read_text())
    assert not [n for n in defaults if re.search("PASSWORD|TOKEN|SECRET|KEY", n)], defaults


@pytest.mark.parametrize("spec", available(), ids=lambda s: s.name)
def test_every_service_starts_in_production_mode(
    spec: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the service's settings read: its compose environment alone (the image adds only
    # hosts and PATH), so a missing token table or a development credential fails here.
    for name in [n for n in os.environ if n.startswith("SCREWOPS_")]:
        monkeypatch.delenv(name)
    for name, value in _service(spec.name)["environment"].items():
        monkeypatch.setenv(str(name), str(value))
    settings = _settings_class(spec)()
    stack = settings.stack
    assert stack.environment == "production"
    assert stack.mongo.uri.get_secret_value().startswith("mongodb://screwops:")
    if isinstance(settings, ApiSettings):
        assert settings.auth_tokens


def test_each_caller_holds_a_token_of_its_role_on_the_api_it_calls() -> None:
    dotenv = _dotenv()
    for api, callers in compose_secrets.API_CALLERS.items():
        table = json.loads(_service(api)["environment"][f"SCREWOPS_{api.upper()}_AUTH_TOKENS"])
        entries = {entry["token"]: entry for entry in table}
        for caller in callers:
            entry = entries[dotenv[caller.token_variable]]
            assert (entry["principal"], entry["role"]) == (caller.principal, caller.role)
            assert entry.get("delegates", False) is caller.delegates
            # A service presents its token from its own environment; the operator's is the CLI's.
            if caller.principal in _compose()["services"]:
                env = _service(caller.principal)["environment"]
                assert env[caller.token_variable] == dotenv[caller.token_variable]


def test_the_monitor_asks_the_registry_where_compose_runs_it() -> None:
    env = _service("monitor")["environment"]
    port = next(s.grpc_port for s in available() if s.name == "registry")
    assert env["SCREWOPS_MONITOR_REGISTRY_ADDRESS"] == f"registry:{port}"


def test_the_mongo_root_user_is_the_one_the_services_log_in_as() -> None:
    env = _service("mongo")["environment"]
    uri = _compose()["x-screwops-env"]["SCREWOPS_MONGO__URI"]
    user = env["MONGO_INITDB_ROOT_USERNAME"]
    assert uri.startswith(f"mongodb://{user}:{env['MONGO_INITDB_ROOT_PASSWORD']}@mongo:")
    assert "authSource=admin" in uri


def test_compose_secrets_are_made_once_owner_only_and_kept(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    assert compose_secrets.main(["--out", str(dotenv)]) == 0
    assert stat.S_IMODE(dotenv.stat().st_mode) == 0o600
    first = compose_secrets.read_env_file(dotenv)
    assert set(first) == set(_dotenv())
    # A line's camera added to the gateway's table, by hand, stays; nothing else changes.
    table = json.loads(first["SCREWOPS_GATEWAY_AUTH_TOKENS"])
    table.append({"principal": "line-1", "role": "line", "token": "c" * 32})
    text = dotenv.read_text().replace(first["SCREWOPS_GATEWAY_AUTH_TOKENS"], json.dumps(table))
    dotenv.write_text(text)
    assert compose_secrets.write_env_file(dotenv) == []
    second = compose_secrets.read_env_file(dotenv)
    assert second == {**first, "SCREWOPS_GATEWAY_AUTH_TOKENS": json.dumps(table)}
    # A missing value alone is made anew.
    dotenv.write_text(
        "\n".join(line for line in text.splitlines() if not line.startswith("SCREWOPS_MONGO_ROOT"))
    )
    assert compose_secrets.write_env_file(dotenv) == ["SCREWOPS_MONGO_ROOT_PASSWORD"]
    third = compose_secrets.read_env_file(dotenv)
    assert third["SCREWOPS_MONGO_ROOT_PASSWORD"] != first["SCREWOPS_MONGO_ROOT_PASSWORD"]


def test_dotenv_is_never_committed() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


# --- volumes -----------------------------------------------------------------------------------


def _volumes_init() -> dict[str, int]:
    """{named volume: uid} volumes-init hands over, read from its chown."""
    init = _service("volumes-init")
    assert init["user"] == "0:0"
    assert init["entrypoint"] == ["chown", "-R"]
    owner, *paths = init["command"]
    uid, _, gid = owner.partition(":")
    assert uid == gid
    mounts = {target: source for source, target, _ in _named_mounts(init)}
    return {mounts[path]: int(uid) for path in paths}


def _waits_for_volumes_init(name: str) -> bool:
    dependency = _service(name).get("depends_on", {}).get("volumes-init", {})
    return bool(dependency.get("condition") == "service_completed_successfully")


@pytest.mark.parametrize("spec", available(), ids=lambda s: s.name)
def test_a_volume_a_service_writes_is_its_uids_before_it_starts(spec: Service) -> None:
    # The services' images run as UID; a new named volume is root's.
    handed = _volumes_init()
    for volume, _, read_only in _named_mounts(_service(spec.name)):
        if read_only or volume == SECRETS_VOLUME:
            continue
        assert handed.get(volume) == UID, f"{spec.name} writes {volume}"
        assert _waits_for_volumes_init(spec.name), spec.name


def test_jaegers_badger_directory_is_its_uids_before_it_starts() -> None:
    jaeger = _service("jaeger")
    data = jaeger["environment"]["JAEGER_DATA_DIR"]
    volume = next(source for source, target, _ in _named_mounts(jaeger) if target == data)
    assert _volumes_init()[volume] == JAEGER_UID
    assert _waits_for_volumes_init("jaeger")


def test_tritons_image_is_tagged_with_its_base_and_the_locked_tensorflow() -> None:
    # Compose's, the k8s manifest's and the documented build's tag: a new lock, a new image.
    tensorflow = locked_versions(ROOT / "uv.lock")["tensorflow-cpu"]
    base = re.search(r"^FROM \S+:(\S+)$", TRITON_DOCKERFILE.read_text(), re.M)
    assert base is not None
    expected = f"triton:{base.group(1)}-tf{tensorflow}"
    assert _service("triton")["image"].endswith(expected)
    for path in (ROOT / "deploy" / "k8s" / "base" / "triton.yaml", ROOT / "docs" / "operations.md"):
        tags = re.findall(r"triton:\S*-tf[0-9][^\s\"']*", path.read_text())
        assert tags, path
        assert set(tags) == {expected}, path
