"""Every call a server answers, counted with the status it ended in and how long it took.

Traces are sampled (see ``screwops_telemetry.sampler``), so a failed or slow call may leave no
span; the count and the duration of every call go to ``record`` instead, which turns them into
metrics. The interceptor sits first in the chain, so calls refused by authentication count too.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from screwops_rpc.auth import _same_kind

Record = Callable[[str, str, float], None]
"""Told ``(method, status, seconds)`` of each call: its full gRPC method name, the name of the
status it ended with, the time from its arrival to its end."""

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class CallMetrics(grpc.aio.ServerInterceptor):
    """Tells ``record`` how each call of a known method ended (see the module docstring)."""

    def __init__(self, record: Record) -> None:
        self._record = record

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        began = time.monotonic()
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        behaviour: Any = (
            handler.unary_unary
            or handler.unary_stream
            or handler.stream_unary
            or handler.stream_stream
        )

        def done(context: grpc.aio.ServicerContext[Any, Any], raised: BaseException | None) -> None:
            self._record(method, _status(context, raised), time.monotonic() - began)

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                answer = await behaviour(request, context)
            except BaseException as error:
                done(context, error)
                raise
            done(context, None)
            return answer

        async def stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                answer = behaviour(request, context)
                if inspect.isasyncgen(answer):
                    async for item in answer:
                        yield item
                else:
                    await answer
            except BaseException as error:
                done(context, error)
                raise
            done(context, None)

        return _same_kind(handler, stream if handler.response_streaming else unary)


def _status(context: grpc.aio.ServicerContext[Any, Any], raised: BaseException | None) -> str:
    """The status a call ended with: the one its handler set or aborted with,
    DEADLINE_EXCEEDED or CANCELLED when its deadline passed or the client went away, UNKNOWN
    for an exception gRPC reports as such."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(raised, asyncio.CancelledError):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED.name
        return grpc.StatusCode.CANCELLED.name
    if raised is not None and not isinstance(raised, grpc.aio.AbortError):
        return grpc.StatusCode.UNKNOWN.name
    return grpc.StatusCode.OK.name
