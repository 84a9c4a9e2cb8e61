"""Bearer-token authentication for every ScrewOps gRPC API, on both ends of the channel.

A client presents ``authorization: Bearer <token>`` metadata; a call without one, or with a token
that is not configured, ends UNAUTHENTICATED before the servicer runs. Health checking and
reflection stay open, so load balancers, probes and ``grpcurl`` work without a token. Tokens are
compared in constant time, against every configured token, so timing reveals neither a token nor
which one nearly matched.

Clients (the CLI, the console, the demo) open their channels with :func:`open_channel` or
:func:`open_aio_channel`, which add the token to every call, so no call site can forget it.
"""

from __future__ import annotations

import collections
import hmac
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection
from pydantic import SecretStr

AUTHORIZATION = "authorization"
_SCHEME = "bearer "
_OPEN_SERVICES = (
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection.SERVICE_NAME,
    "grpc.reflection.v1.ServerReflection",
)
_OPEN_PREFIXES = tuple(f"/{service}/" for service in _OPEN_SERVICES)
MISSING = "missing bearer token: send 'authorization: Bearer <token>' metadata"
INVALID = "invalid bearer token"

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def bearer_auth(
    tokens: Sequence[SecretStr], on_refused: Callable[[float], None] | None = None
) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors a server needs for ``tokens``: none when no token is configured (the
    settings refuse that in production), so a development stack stays open."""
    return [BearerAuth(tokens, on_refused)] if tokens else []


class BearerAuth(grpc.aio.ServerInterceptor):
    """Refuses API calls without a configured bearer token (see the module docstring).

    ``on_refused`` is told how long each refused call took, for servers that count calls by
    status (the gateway's request metrics).
    """

    def __init__(
        self, tokens: Sequence[SecretStr], on_refused: Callable[[float], None] | None = None
    ) -> None:
        if not tokens:
            raise ValueError("BearerAuth needs at least one token")
        self._tokens = [token.get_secret_value().encode() for token in tokens]
        self._on_refused = on_refused

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        """Pass authenticated and open calls on; answer the rest UNAUTHENTICATED."""
        began = time.monotonic()
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_OPEN_PREFIXES):
            return handler
        refusal = self.refusal(handler_call_details.invocation_metadata)
        if refusal is None:
            return handler
        if self._on_refused is not None:
            self._on_refused(time.monotonic() - began)
        return _refusing(handler, refusal)

    def refusal(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
        """Why the call's metadata does not authenticate it; None when it does."""
        presented = [value for key, value in metadata or () if key.lower() == AUTHORIZATION]
        if not presented:
            return MISSING
        value = presented[0]
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        if not text.lower().startswith(_SCHEME):
            return MISSING
        given = text[len(_SCHEME) :].strip().encode()
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(token, given)
        return None if matched else INVALID


def _refusing(
    handler: grpc.RpcMethodHandler[Req, Resp], reason: str
) -> grpc.RpcMethodHandler[Req, Resp]:
    """A handler of the same kind as ``handler`` that only refuses the call."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _bearer(token: str) -> tuple[str, str]:
    return (AUTHORIZATION, f"Bearer {token}")


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _SendToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, token: str) -> None:
        self._pair = _bearer(token)

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), self._pair],
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class _AioToken:
    def __init__(self, token: str) -> None:
        self._pair = _bearer(token)

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*(details.metadata or ()), self._pair),
            details.credentials,
            details.wait_for_ready,
        )


# grpc.aio files an interceptor under the first kind of call it implements only, so each kind
# needs an object of its own.
class _AioUnaryUnary(_AioToken, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AioUnaryStream(_AioToken, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AioStreamUnary(_AioToken, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _AioStreamStream(_AioToken, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def open_channel(
    target: str, token: str | None = None, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    """A blocking channel to ``target`` that presents ``token`` on every call (none when empty),
    so a command cannot forget the token on one of its calls."""
    opened = grpc.insecure_channel(target, options=list(options))
    return grpc.intercept_channel(opened, _SendToken(token)) if token else opened


def open_aio_channel(
    target: str, token: str | None = None, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """The asyncio twin of :func:`open_channel`."""
    kinds = (_AioUnaryUnary, _AioUnaryStream, _AioStreamUnary, _AioStreamStream)
    interceptors = [kind(token) for kind in kinds] if token else None
    return grpc.aio.insecure_channel(target, options=list(options), interceptors=interceptors)
