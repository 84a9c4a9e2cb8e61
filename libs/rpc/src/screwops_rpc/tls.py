"""TLS for every ScrewOps gRPC API and client, built in one place from
:class:`~screwops_settings.GrpcTlsSettings`.

A server listens with TLS only (there is no plaintext port to fall back to): its certificate
is the stack's (``make up`` issues one for every name the APIs are reached by). Where an API
requires client certificates (``require_client_cert``, a production line's cameras), the
handshake refuses a client without one signed by the stack's CA, and the servicer reads who the
client is from :func:`client_identity`. A client checks the server against the stack's CA and
presents its own certificate where it has one.

Settings left out are read from :class:`~screwops_settings.StackSettings` (the native stack's
home, or ``SCREWOPS_GRPC__*``), so no caller can connect or listen without TLS by omission.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from screwops_settings import GrpcTlsSettings, StackSettings

COMMON_NAME = "x509_common_name"
"""The key of a verified client certificate's subject CN in a call's auth context."""


class TlsSetupError(Exception):
    """The TLS files a server or client needs are missing or unreadable; the message says which
    setting names them and how the native stack makes them."""


def stack_tls() -> GrpcTlsSettings:
    """The gRPC TLS settings of this process's environment (the stack home's files unless
    ``SCREWOPS_GRPC__*`` names others)."""
    return StackSettings().grpc


def _read(path: Path | None, setting: str) -> bytes:
    if path is None:
        raise TlsSetupError(
            f"no {setting}: run `make up` (the native stack issues its gRPC certificate under "
            f"its home's tls/), or set SCREWOPS_GRPC__{setting.upper()}"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsSetupError(f"cannot read {setting} {path}: {exc.strerror}") from exc


def server_credentials(
    tls: GrpcTlsSettings | None = None, *, require_client_cert: bool = False
) -> grpc.ServerCredentials:
    """A server's TLS credentials: its certificate and key, and, when ``require_client_cert``,
    the CA a client's certificate must be signed by (a client without one is refused in the
    handshake, before any call)."""
    tls = tls or stack_tls()
    pair = (_read(tls.key_file, "key_file"), _read(tls.cert_file, "cert_file"))
    if not require_client_cert:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair], root_certificates=_read(tls.ca_file, "ca_file"), require_client_auth=True
    )


def channel_credentials(tls: GrpcTlsSettings | None = None) -> grpc.ChannelCredentials:
    """A client's TLS credentials: the CA the server's certificate is checked against (the
    system's roots when none is set) and the client's own certificate, when it has one."""
    tls = tls or stack_tls()
    ca = tls.ca_file.read_bytes() if tls.ca_file is not None else None
    if tls.client_cert_file is None:
        return grpc.ssl_channel_credentials(ca)
    return grpc.ssl_channel_credentials(
        ca,
        private_key=_read(tls.client_key_file, "client_key_file"),
        certificate_chain=_read(tls.client_cert_file, "client_cert_file"),
    )


def client_identity(context: Any) -> str | None:
    """The subject CN of the client certificate the server verified on this call's connection;
    None for a client that presented none (an API not requiring them)."""
    names = context.auth_context().get(COMMON_NAME) or []
    return names[0].decode(errors="replace") if names else None
