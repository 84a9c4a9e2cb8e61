"""Settings come from prefixed environment variables, and production refuses dev credentials."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict
from screwops_settings import (
    DEVELOPMENT_MINIO_SECRET,
    ApiSettings,
    ServiceSettings,
    StackSettings,
    minio_secret_file,
    triton_model_control_key,
    triton_model_control_key_file,
)
from screwops_stack.certificates import write_private

from tests.support import use_production_credentials


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SCREWOPS_GATEWAY_")

    service_name: str = "gateway"
    metrics_port: int = 9464
    max_image_bytes: int = 4 * 1024 * 1024


class MonitorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SCREWOPS_MONITOR_")

    service_name: str = "monitor"
    metrics_port: int = 9470


class RegistrySettings(ApiSettings):
    model_config = SettingsConfigDict(env_prefix="SCREWOPS_REGISTRY_")

    service_name: str = "registry"
    metrics_port: int = 9472
    grpc_port: int = 50054


TOKENS = '[{"principal": "ops-alice", "role": "operator", "token": "a-token-of-16-chars"}]'

pytestmark = pytest.mark.usefixtures("clean_environment")


def test_the_prefix_and_nested_variables_override_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCREWOPS_MINIO__ENDPOINT", "minio:9000")
    monkeypatch.setenv("SCREWOPS_KAFKA__PARTITIONS", "6")
    monkeypatch.setenv("SCREWOPS_TELEMETRY__OTLP_GRPC_ENDPOINT", "http://jaeger:4317")

    settings = StackSettings()

    assert settings.minio.endpoint == "minio:9000"
    assert settings.minio.access_key == "operator"
    assert settings.kafka.partitions == 6
    assert settings.telemetry.otlp_grpc_endpoint == "http://jaeger:4317"
    assert settings.environment == "development"


def test_the_minio_secret_is_the_principals_own_from_the_stack_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SCREWOPS_HOME", str(tmp_path))
    assert StackSettings().minio.secret_key is None, "no default secret"
    for principal in ("operator", "admin"):
        write_private(minio_secret_file(tmp_path, principal), f"{principal}-secret\n")

    assert StackSettings().minio.secret_key == SecretStr("operator-secret")
    monkeypatch.setenv("SCREWOPS_MINIO__ACCESS_KEY", "admin")
    assert StackSettings().minio.secret_key == SecretStr("admin-secret")


def test_a_service_is_its_own_minio_user_unless_one_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SCREWOPS_HOME", str(tmp_path))
    for principal in ("operator", "gateway", "admin"):
        write_private(minio_secret_file(tmp_path, principal), f"{principal}-secret")

    gateway = GatewaySettings().stack.minio
    assert (gateway.access_key, gateway.secret_key) == ("gateway", SecretStr("gateway-secret"))
    monkeypatch.setenv("SCREWOPS_MINIO__ACCESS_KEY", "admin")
    named = GatewaySettings().stack.minio
    assert (named.access_key, named.secret_key) == ("admin", SecretStr("admin-secret"))


def test_production_with_development_credentials_names_each_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCREWOPS_ENVIRONMENT", "production")
    monkeypatch.setenv("SCREWOPS_MINIO__SECRET_KEY", DEVELOPMENT_MINIO_SECRET)

    with pytest.raises(ValidationError) as refused:
        StackSettings()

    message = str(refused.value)
    for name in ["minio.secret_key", "mongo.uri"]:
        assert name in message
    assert "SCREWOPS_MINIO__SECRET_KEY" in message
    assert "screwops-dev-secret" not in message


def test_production_refusal_never_prints_the_real_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_production_credentials(monkeypatch)
    monkeypatch.setenv("SCREWOPS_MONGO__URI", "mongodb://mongo:27017/?appname=m0ngo-pass")

    with pytest.raises(ValidationError) as refused:
        StackSettings()

    message = str(refused.value)
    assert "mongo.uri" in message
    assert "minio.secret_key" not in message
    assert "kJ8#real-minio-secret" not in message
    assert "m0ngo-pass" not in message


def test_production_with_real_credentials_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    use_production_credentials(monkeypatch)

    settings = StackSettings()

    assert settings.environment == "production"
    assert settings.minio.access_key == "line-7-ops"


def test_production_accepts_a_mongo_uri_authenticated_by_certificate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_production_credentials(monkeypatch)
    monkeypatch.setenv("SCREWOPS_MONGO__URI", "mongodb://mongo:27017/?authMechanism=MONGODB-X509")

    assert StackSettings().environment == "production"


def test_a_service_reads_its_own_prefix_and_the_shared_stack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCREWOPS_GATEWAY_METRICS_PORT", "9500")
    monkeypatch.setenv("SCREWOPS_GATEWAY_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("SCREWOPS_GATEWAY_MAX_IMAGE_BYTES", "1024")
    monkeypatch.setenv("SCREWOPS_MONITOR_METRICS_PORT", "9999")
    monkeypatch.setenv("SCREWOPS_MINIO__ENDPOINT", "minio:9000")

    gateway = GatewaySettings()
    monitor = MonitorSettings()

    assert (gateway.service_name, gateway.metrics_port, gateway.log_level) == (
        "gateway",
        9500,
        "DEBUG",
    )
    assert gateway.max_image_bytes == 1024
    assert gateway.metrics_host == "127.0.0.1"
    assert (monitor.service_name, monitor.metrics_port, monitor.log_level) == (
        "monitor",
        9999,
        "INFO",
    )
    assert gateway.stack.minio.endpoint == monitor.stack.minio.endpoint == "minio:9000"


def test_a_service_refuses_an_unknown_log_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREWOPS_MONITOR_LOG_LEVEL", "LOUD")
    with pytest.raises(ValidationError, match="log_level"):
        MonitorSettings()


def test_a_service_in_production_inherits_the_credential_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCREWOPS_ENVIRONMENT", "production")
    monkeypatch.setenv("SCREWOPS_MINIO__SECRET_KEY", DEVELOPMENT_MINIO_SECRET)
    with pytest.raises(ValidationError, match=r"minio\.secret_key"):
        GatewaySettings()


def test_production_refuses_plaintext_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    use_production_credentials(monkeypatch)
    monkeypatch.setenv("SCREWOPS_KAFKA__SECURITY_PROTOCOL", "PLAINTEXT")

    with pytest.raises(ValidationError, match="SCREWOPS_KAFKA__SECURITY_PROTOCOL"):
        StackSettings()
    monkeypatch.setenv("SCREWOPS_ENVIRONMENT", "development")
    assert StackSettings().kafka.security_protocol == "PLAINTEXT", "the security tests' client"


@pytest.mark.parametrize("missing", ["SCREWOPS_GRPC__CERT_FILE", "SCREWOPS_GRPC__KEY_FILE"])
def test_production_refuses_an_api_without_its_certificate_and_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, missing: str
) -> None:
    monkeypatch.setenv("SCREWOPS_HOME", str(tmp_path))
    use_production_credentials(monkeypatch)
    monkeypatch.setenv("SCREWOPS_REGISTRY_AUTH_TOKENS", TOKENS)
    assert RegistrySettings().stack.grpc.cert_file is not None
    monkeypatch.delenv(missing)

    with pytest.raises(ValidationError, match=rf"TLS only; set {missing} \["):
        RegistrySettings()
    monkeypatch.setenv("SCREWOPS_ENVIRONMENT", "development")
    assert RegistrySettings().stack.environment == "development", "the server says it at bind"


def test_production_refuses_client_certificates_without_a_ca_to_check_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SCREWOPS_HOME", str(tmp_path))
    monkeypatch.delenv("SCREWOPS_GRPC__CA_FILE", raising=False)
    use_production_credentials(monkeypatch)
    monkeypatch.setenv("SCREWOPS_REGISTRY_AUTH_TOKENS", TOKENS)
    monkeypatch.setenv("SCREWOPS_REGISTRY_REQUIRE_CLIENT_CERT", "true")

    with pytest.raises(ValidationError, match=r"TLS only; set SCREWOPS_GRPC__CA_FILE \["):
        RegistrySettings()
    monkeypatch.setenv("SCREWOPS_GRPC__CA_FILE", "/etc/screwops/grpc/ca.crt")
    assert RegistrySettings().require_client_cert


def test_a_client_needs_no_server_certificate_in_production(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Only an API serves: a service without one (and the CLI) checks servers against the CA."""
    monkeypatch.setenv("SCREWOPS_HOME", str(tmp_path))
    use_production_credentials(monkeypatch)
    monkeypatch.delenv("SCREWOPS_GRPC__CERT_FILE")
    monkeypatch.delenv("SCREWOPS_GRPC__KEY_FILE")

    assert MonitorSettings().stack.environment == "production"


def test_the_triton_key_is_read_from_the_stack_home_by_whoever_asks_for_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SCREWOPS_HOME", str(tmp_path))
    assert triton_model_control_key(StackSettings()) is None
    key_file = triton_model_control_key_file(tmp_path)
    assert key_file == tmp_path / "secrets" / "triton" / "model-control"
    key_file.parent.mkdir(parents=True)
    key_file.write_text("key-from-the-home\n")
    settings = StackSettings()
    # Read only by the function the registry and the evaluator call, never into the settings,
    # which every service (the gateway too) builds and may print.
    assert settings.triton.model_control_key is None
    assert triton_model_control_key(settings) == "key-from-the-home"
    assert "key-from-the-home" not in repr(settings)


def test_a_triton_key_set_in_the_environment_wins_and_stays_masked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SCREWOPS_HOME", str(tmp_path))
    monkeypatch.setenv("SCREWOPS_TRITON__MODEL_CONTROL_KEY", "key-from-a-k8s-secret")
    settings = StackSettings()
    assert triton_model_control_key(settings) == "key-from-a-k8s-secret"
    assert "key-from-a-k8s-secret" not in repr(settings)
    assert "key-from-a-k8s-secret" not in settings.model_dump_json()
