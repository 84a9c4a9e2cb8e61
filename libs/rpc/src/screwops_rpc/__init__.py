"""The gRPC server every ScrewOps API runs on.

One way to serve, so every API behaves alike for its clients: standard health checking and server
reflection (``grpcurl`` works without proto files), TLS only, with client certificates where
required (:mod:`screwops_rpc.tls`), bearer tokens and roles where configured
(:mod:`screwops_rpc.auth`), typed errors turned into their one status (:func:`map_errors`),
graceful shutdown that lets in-flight calls finish, and one reading of offset page tokens
(:func:`offset_page`).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import grpc
from grpc_health.v1 import health as grpc_health  # not ``health``: our submodule takes that name
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from screwops_errors import InvalidInputError, grpc_status
from screwops_settings import GrpcTlsSettings

from screwops_rpc.auth import (
    AUTHORIZATION,
    Balancing,
    BearerAuth,
    Principal,
    bearer_auth,
    channel_options,
    current_principal,
    method_roles,
    on_behalf_of,
    open_aio_channel,
    open_channel,
)
from screwops_rpc.calls import CallMetrics, Record
from screwops_rpc.tls import (
    TlsSetupError,
    channel_credentials,
    client_identity,
    server_credentials,
    stack_tls,
)

__all__ = [
    "AUTHORIZATION",
    "DEFAULT_MESSAGE_BYTES",
    "Api",
    "Balancing",
    "BearerAuth",
    "CallMetrics",
    "Principal",
    "Record",
    "ServedApi",
    "Server",
    "TlsSetupError",
    "bearer_auth",
    "channel_credentials",
    "channel_options",
    "client_identity",
    "current_principal",
    "map_errors",
    "method_roles",
    "offset_page",
    "on_behalf_of",
    "open_aio_channel",
    "open_channel",
    "server_credentials",
    "stack_tls",
]

log = logging.getLogger("screwops.rpc")

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S")

DEFAULT_MESSAGE_BYTES = 16 * 1024 * 1024
"""The largest message a :class:`Server` receives or sends unless told otherwise."""


def map_errors(method: F) -> F:
    """Let a servicer method raise typed errors; the client gets each one's status and message.

    Works for unary handlers (coroutines) and streaming ones (async generators). Anything that is
    not a typed error is logged with its traceback and answered ``INTERNAL`` with a generic
    message, so internals never reach a client.
    """
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[type-arg]
            try:
                async for item in method(self, request, context):
                    yield item
            except Exception as exc:
                await _abort(context, exc, method.__name__)

        return cast(F, stream)

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[type-arg]
        try:
            return await method(self, request, context)
        except Exception as exc:
            await _abort(context, exc, method.__name__)

    return cast(F, unary)


async def _abort(context: grpc.aio.ServicerContext, error: Exception, name: str) -> None:  # type: ignore[type-arg]
    if isinstance(error, grpc.aio.AbortError):
        raise error
    code, message = grpc_status(error)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("%s failed", name, exc_info=error)
    await context.abort(code, message)


def offset_page(page_size: int, page_token: str, *, default: int, most: int) -> tuple[int, int]:
    """The (offset, limit) a list request asks for, where a page token is the offset of the page
    (``str(offset + limit)`` of the page before; empty for the first) and a page holds
    ``page_size`` items (``default`` when 0), never more than ``most``.

    Raises:
        InvalidInputError: a negative page size, or a token that is not an offset.
    """
    if page_size < 0:
        raise InvalidInputError("page_size must not be negative")
    try:
        offset = int(page_token or "0")
    except ValueError:
        raise InvalidInputError(f"bad page_token {page_token!r}") from None
    if offset < 0:
        raise InvalidInputError(f"bad page_token {page_token!r}")
    return offset, min(page_size or default, most)


@dataclass(frozen=True)
class Api:
    """One proto service to serve: its full name, the generated ``add_*`` function, the servicer."""

    name: str
    add: Callable[[Any, grpc.aio.Server], None]
    servicer: object


class Server:
    """A grpc.aio server with health checking and reflection for ``apis``.

    The grpc.aio server is built in :meth:`start`, inside the event loop that will run it (an
    aio server made outside a loop is bound to the wrong one). ``port`` is the bound port once
    started, so ``port=0`` picks a free one.

    ``max_concurrent_rpcs`` bounds the calls the server runs at once (a call past it is refused
    with RESOURCE_EXHAUSTED before any handler runs), ``max_concurrent_streams`` the calls one
    connection may have open (HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS: the client holds back
    the rest); None leaves gRPC's own (no limit, and 100 streams per connection).

    ``max_connection_age_s`` closes a client's connection that old (GOAWAY: calls in flight
    finish, streams too, and the client connects again for the next call), so a client that
    balances over a resolved name resolves it again and reaches instances started since; None
    keeps connections for ever.

    The server listens with TLS only, with ``tls`` (the stack's settings when None); with
    ``require_client_cert`` a client must present a certificate signed by its CA (mTLS).
    """

    def __init__(
        self,
        apis: Sequence[Api],
        *,
        host: str,
        port: int,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        max_message_bytes: int = DEFAULT_MESSAGE_BYTES,
        max_concurrent_rpcs: int | None = None,
        max_concurrent_streams: int | None = None,
        max_connection_age_s: float | None = None,
        tls: GrpcTlsSettings | None = None,
        require_client_cert: bool = False,
    ) -> None:
        self._apis = list(apis)
        self._address = f"{host}:{port}"
        self._interceptors = list(interceptors)
        self._max_message_bytes = max_message_bytes
        self._max_concurrent_rpcs = max_concurrent_rpcs
        self._max_concurrent_streams = max_concurrent_streams
        self._max_connection_age_s = max_connection_age_s
        # Read now, so a missing certificate stops the service before it starts anything else.
        self._credentials = server_credentials(tls, require_client_cert=require_client_cert)
        self._server: grpc.aio.Server | None = None
        self._health = grpc_health.aio.HealthServicer()
        self.port = port

    def count_calls(self, record: Record) -> None:
        """Tell ``record`` how every call ended and how long it took (:class:`CallMetrics`),
        refused ones included; before :meth:`start`."""
        self._interceptors.insert(0, CallMetrics(record))

    async def start(self) -> None:
        """Start serving and report every API as SERVING to health checks."""
        options: list[tuple[str, int]] = [
            ("grpc.max_receive_message_length", self._max_message_bytes),
            ("grpc.max_send_message_length", self._max_message_bytes),
        ]
        if self._max_concurrent_streams is not None:
            options.append(("grpc.max_concurrent_streams", self._max_concurrent_streams))
        if self._max_connection_age_s is not None:
            options.append(("grpc.max_connection_age_ms", round(self._max_connection_age_s * 1000)))
        server = grpc.aio.server(
            interceptors=self._interceptors,
            options=options,
            maximum_concurrent_rpcs=self._max_concurrent_rpcs,
        )
        for api in self._apis:
            api.add(api.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = [api.name for api in self._apis]
        reflection.enable_server_reflection(
            [
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        self.port = server.add_secure_port(self._address, self._credentials)
        await server.start()
        self._server = server
        for name in ["", *names]:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = 10.0) -> None:
        """Report NOT_SERVING (so load balancers drain), then let in-flight calls finish."""
        if self._server is None:
            return
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)


@dataclass(frozen=True)
class ServedApi(Generic[S]):
    """One proto service served over a domain service ``S``: its full name, the generated
    ``add_*`` function and the servicer class built from ``S``.

    A service's ``grpc_api`` says only that and exports ``server = ServedApi(...).server``, so
    every ``__main__`` and test builds its :class:`Server` the one way written here.
    """

    name: str
    add: Callable[[Any, grpc.aio.Server], None]
    servicer: Callable[[S], object]

    def server(
        self,
        service: S,
        *,
        host: str,
        port: int,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        max_message_bytes: int = DEFAULT_MESSAGE_BYTES,
        max_concurrent_rpcs: int | None = None,
        max_concurrent_streams: int | None = None,
        max_connection_age_s: float | None = None,
        tls: GrpcTlsSettings | None = None,
        require_client_cert: bool = False,
    ) -> Server:
        """The :class:`Server` of this API over ``service``."""
        return Server(
            [Api(name=self.name, add=self.add, servicer=self.servicer(service))],
            host=host,
            port=port,
            interceptors=interceptors,
            max_message_bytes=max_message_bytes,
            max_concurrent_rpcs=max_concurrent_rpcs,
            max_concurrent_streams=max_concurrent_streams,
            max_connection_age_s=max_connection_age_s,
            tls=tls,
            require_client_cert=require_client_cert,
        )
