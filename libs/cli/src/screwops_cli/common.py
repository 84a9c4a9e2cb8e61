"""What every command shares: the consoles, exit codes, error reporting, JSON and addresses.

Exit codes mean the same for every command:

====  ==========================================================================================
0     done
1     failed (the message says why), or some items of a batch failed
2     bad usage: a wrong option or argument, or a request the service refused as malformed
3     a service or server could not be reached (or did not answer in time)
4     not found: the named run, version, dataset, topic or event does not exist
5     refused in the current state (e.g. promoting a version that cannot be served)
6     not allowed: missing or wrong credentials
130   interrupted (Ctrl-C)
====  ==========================================================================================
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import grpc
import typer
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from pydantic_settings import BaseSettings, SettingsConfigDict
from rich.console import Console
from rich.text import Text
from screwops_errors import ScrewOpsError
from screwops_settings import ApiSettings, services

console = Console()
errors = Console(stderr=True)


class ExitCode(IntEnum):
    """The process exit codes (see the module docstring)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    UNREACHABLE = 3
    NOT_FOUND = 4
    REFUSED = 5
    DENIED = 6
    INTERRUPTED = 130


_BY_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: ExitCode.USAGE,
    grpc.StatusCode.OUT_OF_RANGE: ExitCode.USAGE,
    grpc.StatusCode.UNAVAILABLE: ExitCode.UNREACHABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: ExitCode.UNREACHABLE,
    grpc.StatusCode.NOT_FOUND: ExitCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION: ExitCode.REFUSED,
    grpc.StatusCode.ALREADY_EXISTS: ExitCode.REFUSED,
    grpc.StatusCode.ABORTED: ExitCode.REFUSED,
    grpc.StatusCode.UNAUTHENTICATED: ExitCode.DENIED,
    grpc.StatusCode.PERMISSION_DENIED: ExitCode.DENIED,
}

Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def token_option(service: str, *names: str) -> Any:
    """The ``--token`` option (or ``names``) of a command that calls ``service`` over gRPC.

    Read from ``SCREWOPS_<SERVICE>_TOKEN`` as well, so a token need not appear in the shell's
    history or the process list.
    """
    return typer.Option(
        *(names or ("--token",)),
        envvar=f"SCREWOPS_{service.upper()}_TOKEN",
        help=f"Bearer token, when {service} requires one (an entry of its "
        f"SCREWOPS_{service.upper()}_AUTH_TOKENS: the principal and role you act as).",
        show_default=False,
    )


GatewayToken = Annotated[str | None, token_option("gateway")]

CaFile = Annotated[
    Path | None,
    typer.Option(
        "--ca-file",
        help="PEM CA the services' certificates are checked against (default: "
        "SCREWOPS_GRPC__CA_FILE, else the native stack's CA).",
        show_default=False,
    ),
]
ClientCert = Annotated[
    Path | None,
    typer.Option(
        "--cert",
        help="PEM client certificate, for a gateway requiring one (mTLS; `screwops stack "
        "issue-client-cert` makes one). Default: SCREWOPS_GRPC__CLIENT_CERT_FILE.",
        show_default=False,
    ),
]
ClientKey = Annotated[
    Path | None,
    typer.Option(
        "--key",
        help="The client certificate's PEM key (default: SCREWOPS_GRPC__CLIENT_KEY_FILE).",
        show_default=False,
    ),
]
_TLS_VARIABLES = (
    "SCREWOPS_GRPC__CA_FILE",
    "SCREWOPS_GRPC__CLIENT_CERT_FILE",
    "SCREWOPS_GRPC__CLIENT_KEY_FILE",
)


def use_tls_options(
    ctx: typer.Context, ca_file: Path | None, cert: Path | None, key: Path | None
) -> None:
    """Make the TLS options given the settings of every gRPC channel this command opens: the
    channels take their TLS from ``SCREWOPS_GRPC__*`` unless told otherwise, so the options are
    set there for the command's duration (and restored after, for the next command of a test)."""
    if (cert is None) != (key is None):
        raise typer.BadParameter("--cert and --key go together")
    saved = {name: os.environ.get(name) for name in _TLS_VARIABLES}
    for name, value in zip(_TLS_VARIABLES, (ca_file, cert, key), strict=True):
        if value is not None:
            os.environ[name] = str(value.resolve())

    def restore() -> None:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    ctx.call_on_close(restore)


def exit_code(status: grpc.StatusCode) -> ExitCode:
    """The exit code of a call that ended with ``status``."""
    return _BY_STATUS.get(status, ExitCode.FAILED)


def fail(message: str, code: ExitCode = ExitCode.FAILED) -> NoReturn:
    """Print ``message`` on stderr and exit with ``code``."""
    errors.print(Text(message, style="red"), soft_wrap=True)
    raise typer.Exit(int(code))


def _hint(service: str, code: ExitCode, address: str | None) -> str:
    if code != ExitCode.UNREACHABLE:
        return ""
    where = f" at {address}" if address else ""
    return f" (is {service} running{where}? `screwops stack services status` shows)"


def rpc_failure(service: str, exc: grpc.RpcError, address: str | None = None) -> NoReturn:
    """Report a failed gRPC call and exit with its code."""
    code = exit_code(exc.code())
    fail(f"{service}: {exc.code().name}: {exc.details()}{_hint(service, code, address)}", code)


@contextmanager
def calling(service: str, address: str | None = None) -> Iterator[None]:
    """Turn a failed call into a one-line message on stderr and a meaningful exit code.

    Covers gRPC statuses, ScrewOps' typed errors (a database or broker that did not answer) and
    Ctrl-C.
    """
    try:
        yield
    except grpc.RpcError as exc:
        rpc_failure(service, exc, address)
    except ScrewOpsError as exc:
        code = exit_code(exc.status)
        fail(f"{service}: {exc.status.name}: {exc.message}{_hint(service, code, address)}", code)
    except KeyboardInterrupt:
        fail("interrupted", ExitCode.INTERRUPTED)


def message_dict(message: Message) -> dict[str, Any]:
    """A proto message as JSON-ready data, field names as in the .proto."""
    return MessageToDict(message, preserving_proto_field_name=True)


def emit(data: Message | Any) -> None:
    """Print ``data`` (a proto message or JSON-ready data) as JSON."""
    value = message_dict(data) if isinstance(data, Message) else data
    console.print_json(json.dumps(value, default=str))


def emit_line(data: Any) -> None:
    """Print ``data`` as one compact JSON line, flushed at once (for streams)."""
    sys.stdout.write(json.dumps(data, default=str, separators=(",", ":")) + "\n")
    sys.stdout.flush()


_WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


def service_address(service: str) -> str:
    """``host:port`` of a service's gRPC API, from the table of services and its variables.

    Like the stack's supervisor, this reads the port where the service does (the default in its
    entry of ``screwops_settings.services``, its ``SCREWOPS_<SERVICE>_GRPC_HOST`` / ``_GRPC_PORT``
    variables), so the CLI and the service agree without importing the service; only those two
    settings are read, so the service's other settings (and their checks, such as the gateway's
    tokens in production) do not matter here. A wildcard bind host is reached on 127.0.0.1.
    """
    try:
        entry = services.service(service)
    except KeyError:
        entry = None
    if entry is None or entry.grpc_port is None:
        fail(
            f"no service {service!r} with a gRPC API is known, so its address is unknown: pass "
            f"--address or set SCREWOPS_{service.upper()}_ADDRESS",
            ExitCode.USAGE,
        )
    prefix, port = entry.env_prefix, entry.grpc_port

    class Endpoint(BaseSettings):
        model_config = SettingsConfigDict(env_prefix=prefix, extra="ignore")

        grpc_host: str = ApiSettings.model_fields["grpc_host"].default
        grpc_port: int = port

    endpoint = Endpoint()
    host = "127.0.0.1" if endpoint.grpc_host in _WILDCARDS else endpoint.grpc_host
    return f"{host}:{endpoint.grpc_port}"


def address_option(service: str, *names: str) -> Any:
    """The ``--address`` option (or ``names``) of a command that calls ``service`` over gRPC."""
    return typer.Option(
        *names,
        envvar=f"SCREWOPS_{service.upper()}_ADDRESS",
        help=f"{service.capitalize()}'s gRPC address (default: from its settings).",
        show_default=False,
    )


def resolve(service: str, address: str | None) -> str:
    """The address given, or the service's own."""
    return address or service_address(service)
