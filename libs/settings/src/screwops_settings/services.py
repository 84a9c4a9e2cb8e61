"""The one table of ScrewOps' services: each one's name, package, env prefix and default ports.

Each service's ``config.py`` takes its port defaults and env prefix from its entry here, and the
stack's supervisor, the Dockerfiles, the deployment tests and the CLI read this table instead of
importing the services (a lib never imports a service), so a port is written once and every
reader agrees with the service by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "CONSOLE",
    "EVALUATOR",
    "GATEWAY",
    "INGESTION",
    "LABELING",
    "MONITOR",
    "REGISTRY",
    "SERVICES",
    "TRAINER",
    "VALIDATION",
    "ApiService",
    "Service",
    "WebService",
    "service",
]


@dataclass(frozen=True)
class Service:
    """One service and the ports it listens on by default."""

    name: str
    metrics_port: int
    grpc_port: int | None = None
    """The gRPC API's port; None for a service without one."""
    http_port: int | None = None
    """The web app's port, for a service that serves HTTP (the console)."""

    @property
    def module(self) -> str:
        """The service's package, which ``python -m`` runs."""
        return f"screwops_{self.name}"

    @property
    def env_prefix(self) -> str:
        """The prefix of every variable of the service's settings."""
        return f"SCREWOPS_{self.name.upper()}_"

    @property
    def ports(self) -> set[int]:
        """Every port the service listens on."""
        return {p for p in (self.metrics_port, self.grpc_port, self.http_port) if p is not None}

    def configured(self) -> Service:
        """This entry with the ports an operator set in the service's variables (for example
        ``SCREWOPS_REGISTRY_GRPC_PORT``), read as the service's own settings read them, so a
        process that runs or probes the service finds it where it listens."""
        overrides = _Ports(_env_prefix=self.env_prefix)
        return replace(
            self,
            **{
                name: value
                for name, value in overrides.model_dump().items()
                if value is not None and getattr(self, name) is not None
            },
        )


@dataclass(frozen=True)
class ApiService(Service):
    """A service with a gRPC API, so its settings' ``grpc_port`` default is an int."""

    grpc_port: int


@dataclass(frozen=True, kw_only=True)
class WebService(Service):
    """A service that serves a web app, so its settings' ``http_port`` default is an int."""

    http_port: int


class _Ports(BaseSettings):
    """The port variables of one service (the prefix is given at construction); unset ones stay
    None, and ``Service.configured`` ignores one for a port the service does not have, as the
    service's own settings (``extra="ignore"``) do."""

    model_config = SettingsConfigDict(extra="ignore", hide_input_in_errors=True)

    metrics_port: int | None = Field(None, ge=1, le=65535)
    grpc_port: int | None = Field(None, ge=1, le=65535)
    http_port: int | None = Field(None, ge=1, le=65535)


INGESTION = ApiService("ingestion", metrics_port=9101, grpc_port=50052)
LABELING = ApiService("labeling", metrics_port=9102, grpc_port=50053)
VALIDATION = Service("validation", metrics_port=9103)
TRAINER = Service("trainer", metrics_port=9104)
EVALUATOR = Service("evaluator", metrics_port=9105)
REGISTRY = ApiService("registry", metrics_port=9106, grpc_port=50054)
GATEWAY = ApiService("gateway", metrics_port=9107, grpc_port=50051)
MONITOR = Service("monitor", metrics_port=9108)
CONSOLE = WebService("console", metrics_port=9109, http_port=8080)

# Start order: producers after their consumers' topics exist (all topics exist after `up`), so
# the order only matters for a readable log.
SERVICES = (
    INGESTION,
    LABELING,
    VALIDATION,
    TRAINER,
    EVALUATOR,
    REGISTRY,
    GATEWAY,
    MONITOR,
    CONSOLE,
)

_BY_NAME = {entry.name: entry for entry in SERVICES}


def service(name: str) -> Service:
    """The entry of the service called ``name``; KeyError names the known ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no service {name!r}; the services are {', '.join(_BY_NAME)}") from None
