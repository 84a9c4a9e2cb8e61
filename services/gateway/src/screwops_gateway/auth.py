"""Bearer-token authentication for the gateway's gRPC API.

A client presents ``authorization: Bearer <token>`` metadata; a call without one, or with a token
that is not configured, ends UNAUTHENTICATED before the servicer runs. Health checking and
reflection stay open, so load balancers and ``grpcurl`` work without a token. Tokens are compared
in constant time, against every configured token, so timing reveals neither a token nor which one
nearly matched.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection
from pydantic import SecretStr

from screwops_gateway.metrics import GatewayMetrics

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


class BearerAuth(grpc.aio.ServerInterceptor):
    """Refuses inspection calls without a configured bearer token (see the module docstring)."""

    def __init__(self, tokens: Sequence[SecretStr], metrics: GatewayMetrics) -> None:
        if not tokens:
            raise ValueError("BearerAuth needs at least one token")
        self._tokens = [token.get_secret_value().encode() for token in tokens]
        self._metrics = metrics

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
        self._metrics.finished(grpc.StatusCode.UNAUTHENTICATED.name, time.monotonic() - began)
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
