"""The one source of ScrewOps' endpoints, ports and credentials.

The native stack (``make up``) binds its servers to the ports named here, docker-compose publishes
the same ports, and every service reads its connections from here, so a port changes in one place.
Values come from ``SCREWOPS_*`` environment variables (nested with ``__``, for example
``SCREWOPS_KAFKA__BOOTSTRAP_SERVERS=kafka:9092``) over the defaults below.
"""

from __future__ import annotations

import ssl
from enum import StrEnum
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DEFAULT_HOME",
    "DEVELOPMENT_MINIO_SECRET",
    "MIN_TOKEN_CHARS",
    "PRINCIPAL_PATTERN",
    "ApiSettings",
    "ApiToken",
    "ClaimSettings",
    "GrpcTlsSettings",
    "KafkaSettings",
    "MinioSettings",
    "MongoSettings",
    "Role",
    "ServiceSettings",
    "StackSettings",
    "TelemetrySettings",
    "TritonSettings",
    "grpc_certificate_files",
    "kafka_ca_file",
    "kafka_client_options",
    "kafka_password_file",
    "minio_secret_file",
    "port_of",
    "triton_model_control_key",
    "triton_model_control_key_file",
    "triton_model_repository",
]

DEFAULT_HOME = Path.home() / ".cache" / "screwops"
"""``SCREWOPS_HOME`` unless set: the native stack's installs, data, logs and pid files."""
DEVELOPMENT_MINIO_SECRET = "screwops-dev-secret"
"""The MinIO root password every stack had before each generated its own; it is in this repo's
history, so production refuses it wherever it is set."""


def triton_model_repository(home: Path = DEFAULT_HOME) -> Path:
    """The directory the native stack's tritonserver serves models from, under ``home``.

    Named once here because the stack starts Triton on it and the registry and the evaluator,
    which may not import the stack, write the versions they load into it.
    """
    return home / "data" / "triton" / "models"


def triton_model_control_key_file(home: Path) -> Path:
    """The native stack's Triton model-control key (owner-only, 0600), made at ``make up``.

    Named here because the stack starts Triton requiring it and the registry and the evaluator,
    which may not import the stack, read it to load and unload models.
    """
    return home / "secrets" / "triton" / "model-control"


def port_of(address: str) -> int:
    """Port of ``host:port`` or a URL, so settings can hold addresses the way clients want them."""
    parsed = urlsplit(address if "://" in address else f"//{address}")
    if parsed.port is None:
        raise ValueError(f"address {address!r} names no port")
    return parsed.port


def kafka_password_file(home: Path, principal: str) -> Path:
    """The file the native stack keeps ``principal``'s Kafka password in (owner-only, 0600).

    Named here because the stack writes it at ``make up`` and every client of the native stack
    (services, CLI, tests) reads its own principal's from it when no password is set.
    """
    return home / "secrets" / "kafka" / principal


def minio_secret_file(home: Path, principal: str) -> Path:
    """The file the native stack keeps ``principal``'s MinIO secret key in (owner-only, 0600):
    a service's, the CLI's (``operator``) or the root's (``admin``).

    Named here because the stack writes it at ``make up`` and every client of the native stack
    reads its own principal's from it when no secret key is set.
    """
    return home / "secrets" / "minio" / principal


def console_secrets_dir(home: Path) -> Path:
    """Where the console keeps its accounts, its session secret and the first admin's password
    (owner-only files) unless told otherwise.

    Named here because the console writes them and the stack says where the admin's password is
    after ``make up``.
    """
    return home / "secrets" / "console"


def console_admin_password_file(home: Path) -> Path:
    """The generated password of the console's first account, ``admin`` (see
    :func:`console_secrets_dir`)."""
    return console_secrets_dir(home) / "admin-password"


def kafka_ca_file(home: Path) -> Path:
    """The native stack's CA certificate, which signs the broker's certificate and the gRPC
    APIs' (one CA, so a client trusts one file)."""
    return home / "tls" / "ca.crt"


def grpc_certificate_files(home: Path) -> tuple[Path, Path]:
    """The native stack's server certificate of every gRPC API and its key (owner-only), one
    pair for all: the stack issues it at ``make up`` for the names the APIs are reached by."""
    return home / "tls" / "grpc.crt", home / "tls" / "grpc.key"


class KafkaSettings(BaseModel):
    """Where the Kafka broker listens, who a client is to it, and how new topics are laid out.

    The broker takes SASL/SCRAM-SHA-512 over TLS only, and each principal may write and read just
    the topics the event catalogue gives it. Natively, a password or CA file left unset is read
    from the stack home (see :func:`kafka_password_file`), so the CLI and the tests need no
    setup; compose and k8s set ``SCREWOPS_KAFKA__PASSWORD`` and ``SCREWOPS_KAFKA__CA_FILE``.
    """

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Broker address for clients.", examples=["kafka:9092"]
    )
    controller_port: int = Field(9093, description="KRaft controller listener (native stack).")
    partitions: int = Field(
        3,
        description="Partitions per topic: enough for two instances of a consumer group to share.",
    )
    max_request_bytes: int = Field(
        1024 * 1024,
        gt=0,
        description="The largest record a service's producer sends (aiokafka's max_request_size; "
        "keep it at or below the topics' max.message.bytes). A dead letter that would be larger "
        "keeps its body in minio.dead_letter_bucket instead.",
    )
    security_protocol: Literal["SASL_SSL", "PLAINTEXT"] = Field(
        "SASL_SSL",
        description="SASL_SSL everywhere; PLAINTEXT only reaches a broker without security, "
        "which no ScrewOps stack runs (the security tests use it to be refused).",
    )
    sasl_mechanism: Literal["SCRAM-SHA-512"] = "SCRAM-SHA-512"
    username: str = Field(
        "operator",
        description="The principal this client is: a service's own name (the stack's "
        "supervisor sets it), `operator` for the CLI, `admin` for the stack manager and tests.",
    )
    password: SecretStr | None = Field(
        None, description="The principal's SCRAM password; unset: read from the stack home."
    )
    ca_file: Path | None = Field(
        None,
        description="PEM CA bundle the broker's certificate is checked against; unset: "
        "the native stack's CA.",
    )


class GrpcTlsSettings(BaseModel):
    """TLS of every gRPC API: a server presents ``cert_file``; a client checks it against
    ``ca_file`` and, where the API requires client certificates (mTLS, a production line's
    cameras), presents ``client_cert_file``. There is no plaintext port to fall back to.

    Natively, the CA and the server's pair left unset are the stack home's (made at ``make up``,
    see :func:`grpc_certificate_files`), so the CLI, the services and the tests need no setup;
    compose and k8s mount them and set ``SCREWOPS_GRPC__*``.
    """

    ca_file: Path | None = Field(
        None,
        description="PEM CA bundle a client checks the server's certificate against, and a server "
        "requiring client certificates checks theirs against; unset: the native stack's CA.",
    )
    cert_file: Path | None = Field(
        None, description="A server's PEM certificate chain; unset: the native stack's."
    )
    key_file: Path | None = Field(
        None, description="A server's PEM private key; unset: the native stack's."
    )
    client_cert_file: Path | None = Field(
        None, description="A client's PEM certificate, for an API that requires one (mTLS)."
    )
    client_key_file: Path | None = Field(None, description="The client certificate's key.")

    @model_validator(mode="after")
    def _client_pair(self) -> Self:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("grpc.client_cert_file and grpc.client_key_file go together")
        return self


class MinioSettings(BaseModel):
    """The S3 endpoint for artifacts, and who a client is to it.

    Each principal is a MinIO user whose policy opens only its own buckets (the catalogue in
    ``screwops_contracts.minio``). Natively, a secret key left unset is read from the stack home
    (see :func:`minio_secret_file`), so the CLI and the tests need no setup; compose mounts the
    file, k8s sets ``SCREWOPS_MINIO__SECRET_KEY``.
    """

    endpoint: str = Field("127.0.0.1:9000", examples=["minio:9000"])
    console_port: int = 9001
    access_key: str = Field(
        "operator",
        description="The principal this client is: a service's own name (set for it unless "
        "named here), `operator` for the CLI, `admin` (the root) for the stack manager and tests.",
    )
    secret_key: SecretStr | None = Field(
        None, description="The principal's secret key; unset: read from the stack home."
    )
    secure: bool = False
    dead_letter_bucket: str = Field(
        "dead-letters",
        description="Where the bus keeps the bodies of dead letters too large for Kafka; "
        "`dlq replay` reads them back from here.",
    )


class MongoSettings(BaseModel):
    """The MongoDB-wire server for metadata (FerretDB natively, MongoDB in docker-compose)."""

    uri: SecretStr = Field(
        SecretStr("mongodb://127.0.0.1:27017/"), examples=["mongodb://mongo:27017/"]
    )
    database: str = "screwops"


class TritonSettings(BaseModel):
    """Triton Inference Server's three endpoints, and the key of its model-control API."""

    http_url: str = Field("127.0.0.1:8000", examples=["triton:8000"])
    grpc_url: str = Field("127.0.0.1:8001", examples=["triton:8001"])
    metrics_url: str = Field("127.0.0.1:8002", examples=["triton:8002"])
    model_control_key: SecretStr | None = Field(
        None,
        description="The value Triton requires in the model-control header "
        "(screwops_contracts.models.MODEL_CONTROL_HEADER) to load, unload or list models; only "
        "the registry and the evaluator are given it (k8s: the triton-model-control Secret). "
        "Unset: read from the stack home by those two (triton_model_control_key).",
    )


class TelemetrySettings(BaseModel):
    """Where traces go (OTLP into Jaeger), where they are read back, and Prometheus."""

    otlp_grpc_endpoint: str = Field("http://127.0.0.1:4317", examples=["http://jaeger:4317"])
    otlp_http_endpoint: str = Field("http://127.0.0.1:4318", examples=["http://jaeger:4318"])
    jaeger_query_url: str = Field("http://127.0.0.1:16686", examples=["http://jaeger:16686"])
    prometheus_url: str = Field("http://127.0.0.1:9090", examples=["http://prometheus:9090"])
    trace_sample_ratio: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of the traces a service starts itself that are kept (sampled by trace "
        "id, so every service keeps or drops the same ones); a trace started by a caller follows "
        "the caller's decision whatever this says. 1.0 keeps every trace (the demo and the "
        "end-to-end tests need them all); at production rates 0.01-0.05 (docs/observability.md). "
        "Errors and latency are counted in metrics either way.",
    )


class StackSettings(BaseSettings):
    """Connections to every server of the stack, shared by the stack manager and the services."""

    model_config = SettingsConfigDict(
        env_prefix="SCREWOPS_",
        env_nested_delimiter="__",
        extra="ignore",
        # Validation errors would otherwise quote the raw input, secrets included, into logs.
        hide_input_in_errors=True,
    )

    environment: Literal["development", "production"] = "development"
    home: Path = Field(
        DEFAULT_HOME,
        description="Native stack only: installed servers, their data, logs and pid files.",
    )
    kafka: KafkaSettings = KafkaSettings()
    grpc: GrpcTlsSettings = GrpcTlsSettings()
    minio: MinioSettings = MinioSettings()
    mongo: MongoSettings = MongoSettings()
    triton: TritonSettings = TritonSettings()
    telemetry: TelemetrySettings = TelemetrySettings()

    @model_validator(mode="after")
    def _kafka_credentials_from_home(self) -> StackSettings:
        """Fill the Kafka password and CA file the native stack generated, where unset: the
        password of the principal named by ``kafka.username``, so each client reads only its own
        (a missing file leaves it unset, and the broker refuses the client)."""
        kafka = self.kafka
        if kafka.password is None:
            secret = kafka_password_file(self.home, kafka.username)
            if secret.is_file():
                kafka.password = SecretStr(secret.read_text().strip())
        if kafka.ca_file is None and (ca := kafka_ca_file(self.home)).is_file():
            kafka.ca_file = ca
        return self

    @model_validator(mode="after")
    def _grpc_tls_from_home(self) -> StackSettings:
        """Fill the CA and the server certificate the native stack issued, where unset."""
        tls = self.grpc
        cert, key = grpc_certificate_files(self.home)
        if tls.ca_file is None and (ca := kafka_ca_file(self.home)).is_file():
            tls.ca_file = ca
        if tls.cert_file is None and tls.key_file is None and cert.is_file() and key.is_file():
            tls.cert_file, tls.key_file = cert, key
        return self

    @model_validator(mode="after")
    def _minio_credentials_from_home(self) -> StackSettings:
        """Fill the MinIO secret key the native stack generated for ``minio.access_key``, where
        unset (a missing file leaves it unset, and MinIO refuses the client)."""
        minio = self.minio
        if minio.secret_key is None:
            secret = minio_secret_file(self.home, minio.access_key)
            if secret.is_file():
                minio.secret_key = SecretStr(secret.read_text().strip())
        return self

    @model_validator(mode="after")
    def _no_development_credentials_in_production(self) -> StackSettings:
        """Refuse to start production with the credentials every checkout of this repo knows.

        The error names the settings, never their values, since it ends up in logs.
        """
        if self.environment == "production" and (offending := self._development_credentials()):
            raise ValueError(
                "production refuses development credentials; set "
                + ", ".join(
                    f"{name} (SCREWOPS_{name.upper().replace('.', '__')})" for name in offending
                )
            )
        return self

    def _development_credentials(self) -> list[str]:
        offending = []
        if self.minio.secret_key == SecretStr(DEVELOPMENT_MINIO_SECRET):
            offending.append("minio.secret_key")
        if self.kafka.security_protocol != "SASL_SSL":
            offending.append("kafka.security_protocol")
        mongo_uri = urlsplit(self.mongo.uri.get_secret_value())
        if mongo_uri.username is None and "authMechanism=" not in mongo_uri.query:
            offending.append("mongo.uri")
        return offending


def triton_model_control_key(stack: StackSettings) -> str | None:
    """The key a client that loads and unloads models (the registry, the evaluator) sends to
    Triton: ``triton.model_control_key``, else the native stack's file
    (:func:`triton_model_control_key_file`, mounted there by compose), else None.

    A function the model-control clients call rather than a default every settings object fills,
    so the gateway and the other services never read the key.
    """
    if stack.triton.model_control_key is not None:
        return stack.triton.model_control_key.get_secret_value()
    try:
        key = triton_model_control_key_file(stack.home).read_text().strip()
    except FileNotFoundError:
        return None
    return key or None


def kafka_client_options(kafka: KafkaSettings) -> dict[str, object]:
    """The connection options of an aiokafka client (producer, consumer, admin) for ``kafka``:
    every Kafka client of ScrewOps takes them from here, so none connects differently.

    The bus hands the same values to FastStream as its ``SASLScram512`` security; kafka-python
    (the stack's ACL admin) takes them too, but for the SSL context, as ``ssl_cafile``.
    """
    options: dict[str, object] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol == "SASL_SSL":
        password = kafka.password.get_secret_value() if kafka.password else ""
        options |= {
            "sasl_mechanism": kafka.sasl_mechanism,
            "sasl_plain_username": kafka.username,
            "sasl_plain_password": password,
            "ssl_context": ssl.create_default_context(
                cafile=str(kafka.ca_file) if kafka.ca_file else None
            ),
        }
    return options


class ClaimSettings(BaseModel):
    """The settings of a service whose work is claimed attempt by attempt and whose attempts
    that lost are swept (``screwops_storage.claims``): validation, the trainer, the evaluator.
    Mixed into its settings beside :class:`ServiceSettings`, so the variables keep its prefix
    (``SCREWOPS_<SERVICE>_CLAIM_HEARTBEAT_S``); how long an attempt may run stays each service's
    own ``max_run_s``, since its work decides it."""

    claim_heartbeat_s: float = Field(
        10.0,
        gt=0,
        description="How often a running attempt renews its claim; one not renewed for three "
        "heartbeats (its worker is gone) is taken over.",
    )
    attempt_sweep_interval_s: float = Field(
        3600.0, gt=0, description="How often the objects of attempts that lost are swept."
    )
    attempt_sweep_min_age_s: float = Field(
        3600.0,
        ge=0,
        description="Objects of attempts that lost are swept only once they are this old.",
    )


class ServiceSettings(BaseSettings):
    """What every service configures the same way: its name, metrics endpoint and log level.

    Each service subclasses this in its ``config.py`` with its own defaults and one env prefix,
    so its variables never collide with another service's or with the stack's ``SCREWOPS_*``::

        class GatewaySettings(ServiceSettings):
            model_config = SettingsConfigDict(env_prefix="SCREWOPS_GATEWAY_")

            service_name: str = "gateway"
            metrics_port: int = 9464
            max_image_bytes: int = 4 * 1024 * 1024

    ``SCREWOPS_GATEWAY_METRICS_PORT=9500`` then sets the gateway's port only. ``stack`` is read
    from the shared ``SCREWOPS_*`` variables, so every service sees the same servers.
    """

    model_config = SettingsConfigDict(
        env_nested_delimiter="__", extra="ignore", hide_input_in_errors=True
    )

    service_name: str
    metrics_port: int = Field(ge=1, le=65535, description="Prometheus scrape endpoint's port.")
    metrics_host: str = Field(
        "127.0.0.1", description="Interface of the metrics endpoint; 0.0.0.0 in containers."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    outbox_interval_s: float = Field(
        1.0,
        gt=0,
        description="How often the outbox relay of a service that writes, then announces, looks "
        "for announcements Kafka has not acknowledged yet (after a failure it backs off instead).",
    )
    stack: StackSettings = Field(default_factory=StackSettings)

    @model_validator(mode="after")
    def _kafka_principal_is_the_service(self) -> Self:
        """Unless ``SCREWOPS_KAFKA__USERNAME`` names one, a service logs in to Kafka as itself
        (with its own password from the stack home), also when started by hand: the default
        principal, the CLI's, may not join a service's consumer group."""
        kafka = self.stack.kafka
        if "username" in kafka.model_fields_set:
            return self
        inherited = kafka_password_file(self.stack.home, kafka.username)
        read_from_home = inherited.is_file() and kafka.password == SecretStr(
            inherited.read_text().strip()
        )
        kafka.username = self.service_name
        if kafka.password is None or read_from_home:
            own = kafka_password_file(self.stack.home, self.service_name)
            kafka.password = SecretStr(own.read_text().strip()) if own.is_file() else None
        return self

    @model_validator(mode="after")
    def _minio_principal_is_the_service(self) -> Self:
        """Unless ``SCREWOPS_MINIO__ACCESS_KEY`` names one, a service is its own MinIO user
        (with its own secret from the stack home), whose policy opens only its buckets."""
        minio = self.stack.minio
        if "access_key" in minio.model_fields_set:
            return self
        inherited = minio_secret_file(self.stack.home, minio.access_key)
        read_from_home = inherited.is_file() and minio.secret_key == SecretStr(
            inherited.read_text().strip()
        )
        minio.access_key = self.service_name
        if minio.secret_key is None or read_from_home:
            own = minio_secret_file(self.stack.home, self.service_name)
            minio.secret_key = SecretStr(own.read_text().strip()) if own.is_file() else None
        return self


MIN_TOKEN_CHARS = 16
PRINCIPAL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"


class Role(StrEnum):
    """What a principal may do on an API, each role allowing all that the ones before it allow.

    ``line`` is a production line's client (a camera): it may inspect images and nothing else,
    and is below ``labeler`` so that people who may label can also send an image to inspect.
    """

    VIEWER = "viewer"
    LINE = "line"
    LABELER = "labeler"
    OPERATOR = "operator"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        """Whether this role may call a method that needs ``needed``."""
        order = list(Role)
        return order.index(self) >= order.index(needed)


class ApiToken(BaseModel):
    """One bearer token an API accepts, and the principal and role a call presenting it acts as.

    The principal is what the API records as the actor of what the call changes (the registry's
    promotions and rollbacks), so a caller cannot name someone else.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    principal: str = Field(
        pattern=PRINCIPAL_PATTERN, description="Who presents the token, e.g. ops-alice or console."
    )
    role: Role = Field(description="The most the principal may do on this API.")
    token: SecretStr = Field(description=f"The secret itself, {MIN_TOKEN_CHARS}+ characters.")
    delegates: bool = Field(
        False,
        description="Whether the principal may act on behalf of its own users (the console, "
        "which logs its users in): its calls may name the user, who is then recorded as "
        "'<user> (via <principal>)' with the lesser of both roles. Any other principal naming "
        "a user is refused.",
    )

    @model_validator(mode="before")
    @classmethod
    def _named(cls, value: object) -> object:
        """A bare token (this setting's shape before principals) names no one, so it is refused
        rather than given a role by default; the message says the shape to write instead."""
        if isinstance(value, str):
            raise ValueError(
                "a bare token names no principal: write each token as "
                '{"principal": "<name>", "role": "<viewer|line|labeler|operator|admin>", '
                '"token": "<token>"}'
            )
        return value


class ApiSettings(ServiceSettings):
    """What every service with a gRPC API configures the same way: where it listens and who may
    call it.

    Each subclass sets its own ``grpc_port`` default; its env prefix names the variables, e.g.
    ``SCREWOPS_REGISTRY_AUTH_TOKENS='[{"principal": "ops-alice", "role": "operator",
    "token": "<token>"}]'``. Production (or ``require_auth``) refuses to start without tokens,
    since an API open to anyone on the network could promote models or import data.
    """

    grpc_host: str = Field(
        "127.0.0.1", description="Interface of the gRPC API; 0.0.0.0 in containers."
    )
    grpc_port: int = Field(ge=1, le=65535, description="Port of the gRPC API.")
    auth_tokens: list[ApiToken] = Field(
        default_factory=list,
        description="The token table (JSON list of {principal, role, token}). When any is set, "
        "every call but health checking and reflection must carry one, and the method's role.",
    )
    require_auth: bool = Field(
        False, description="Refuse to start without auth_tokens (always so in production)."
    )
    require_client_cert: bool = Field(
        False,
        description="Mutual TLS: refuse a connection without a client certificate signed by "
        "stack.grpc.ca_file (a production line's cameras; `screwops stack issue-client-cert`).",
    )

    @model_validator(mode="after")
    def _authentication_where_required(self) -> Self:
        """The error names the setting, never a token, since it ends up in logs."""
        required = self.require_auth or self.stack.environment == "production"
        if required and not self.auth_tokens:
            variable = f"{self.model_config.get('env_prefix', '')}AUTH_TOKENS"
            raise ValueError(
                f"authentication is required: set {variable} (a JSON list of "
                '{"principal": "<name>", "role": "<role>", "token": "<token>"})'
            )
        secrets = [entry.token.get_secret_value() for entry in self.auth_tokens]
        if any(len(secret) < MIN_TOKEN_CHARS for secret in secrets):
            raise ValueError(f"every auth token must have at least {MIN_TOKEN_CHARS} characters")
        if len(set(secrets)) < len(secrets):
            raise ValueError("two entries of auth_tokens share a token: each names one principal")
        return self

    @model_validator(mode="after")
    def _tls_material_in_production(self) -> Self:
        """Production refuses at start, naming the variables, an API that has no certificate
        and key to serve (or, requiring client certificates, no CA to check them against),
        rather than leaving it to the first bind to find out; there is no plaintext port."""
        if self.stack.environment != "production":
            return self
        tls = self.stack.grpc
        needed = ["cert_file", "key_file"] + (["ca_file"] if self.require_client_cert else [])
        if missing := [name for name in needed if getattr(tls, name) is None]:
            raise ValueError(
                "production serves gRPC over TLS only; set "
                + ", ".join(f"SCREWOPS_GRPC__{name.upper()}" for name in missing)
            )
        return self
