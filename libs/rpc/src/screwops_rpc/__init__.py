"""The gRPC server every ScrewOps API runs on.

One way to serve, so every API behaves alike for its clients: standard health checking and server
reflection (``grpcurl`` works without proto files), typed errors turned into their one status
(:func:`map_errors`), and graceful shutdown that lets in-flight calls finish.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from screwops_errors import grpc_status

__all__ = ["Api", "Server", "map_errors"]

log = logging.getLogger("screwops.rpc")

F = TypeVar("F", bound=Callable[..., Any])


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


@dataclass(frozen=True)
class Api:
    """One proto service to serve: its full name, the generated ``add_*`` function, the servicer."""

    name: str
    add: Callable[[Any, grpc.aio.Server], None]
    servicer: object


class Server:
    """A grpc.aio server with health checking and reflection for ``apis``."""

    def __init__(
        self,
        apis: Sequence[Api],
        *,
        host: str,
        port: int,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        max_message_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._apis = list(apis)
        self._server = grpc.aio.server(
            interceptors=list(interceptors),
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self._health = health.aio.HealthServicer()
        for api in self._apis:
            api.add(api.servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        names = [api.name for api in self._apis]
        reflection.enable_server_reflection(
            [
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self._server,
        )
        self.port = self._server.add_insecure_port(f"{host}:{port}")

    async def start(self) -> None:
        """Start serving and report every API as SERVING to health checks."""
        await self._server.start()
        for name in ["", *(api.name for api in self._apis)]:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = 10.0) -> None:
        """Report NOT_SERVING (so load balancers drain), then let in-flight calls finish."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)

    async def wait(self) -> None:
        """Block until the server stops."""
        await self._server.wait_for_termination()
