"""The inspection gRPC API: a thin adapter over :class:`GatewayService`.

It turns proto messages into the core's types and back, hands the client's deadline to the core
(``context.time_remaining()``), and lets :func:`screwops_rpc.map_errors` give each typed error its
status: INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, UNAVAILABLE or DEADLINE_EXCEEDED
(UNAUTHENTICATED comes from :mod:`screwops_rpc.auth`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from screwops.v1 import inspection_pb2, inspection_pb2_grpc
from screwops_rpc import ServedApi, client_identity, map_errors, method_roles
from screwops_settings import Role

from screwops_gateway.service import GatewayService, Inspection, InspectionResult, Verdict

Context = grpc.aio.ServicerContext[Any, Any]

SERVICE_NAME = inspection_pb2.DESCRIPTOR.services_by_name["InspectionService"].full_name
ROLES = method_roles(
    SERVICE_NAME,
    # A production line's cameras hold the line role, which may inspect and nothing else.
    {"Inspect": Role.LINE, "InspectStream": Role.LINE},
)
_VERDICTS = {
    Verdict.GOOD: inspection_pb2.VERDICT_GOOD,
    Verdict.DEFECT: inspection_pb2.VERDICT_DEFECT,
}


class InspectionApi(inspection_pb2_grpc.InspectionServiceServicer):
    """Converts, delegates to the core, and renders its results."""

    def __init__(self, service: GatewayService) -> None:
        self._service = service

    @map_errors
    async def Inspect(  # noqa: N802 (the proto's method name)
        self, request: inspection_pb2.InspectRequest, context: Context
    ) -> inspection_pb2.InspectResponse:
        result = await self._service.inspect(
            _inspection(request, client_identity(context)), deadline=_deadline(context)
        )
        return _response(result)

    @map_errors
    async def InspectStream(  # noqa: N802
        self, request_iterator: AsyncIterator[inspection_pb2.InspectRequest], context: Context
    ) -> AsyncIterator[inspection_pb2.InspectResponse]:
        identity = client_identity(context)
        frames = (_inspection(request, identity) async for request in request_iterator)
        async for result in self._service.inspect_stream(frames, deadline=_deadline(context)):
            yield _response(result)


server = ServedApi(
    name=SERVICE_NAME,
    add=inspection_pb2_grpc.add_InspectionServiceServicer_to_server,
    servicer=InspectionApi,
).server
"""The gRPC server of the inspection API; the runtime starts the service before it opens and
stops it after in-flight calls drained (``serve(background=[service])`` in ``__main__``)."""


def _deadline(context: Context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _inspection(request: inspection_pb2.InspectRequest, identity: str | None) -> Inspection:
    return Inspection(
        image=request.image,
        line_id=request.line_id,
        camera_id=request.camera_id,
        request_id=request.request_id,
        model_version=request.model_version if request.HasField("model_version") else None,
        frame_id=request.frame_id,
        client_identity=identity,
    )


def _response(result: InspectionResult) -> inspection_pb2.InspectResponse:
    timings = result.timings
    return inspection_pb2.InspectResponse(
        verdict=_VERDICTS[result.verdict],
        defect_probability=result.defect_probability,
        threshold=result.threshold,
        model_name=result.model_name,
        model_version=result.model_version,
        request_id=result.request_id,
        timings=inspection_pb2.Timings(
            decode_ms=timings.decode_ms,
            preprocess_ms=timings.preprocess_ms,
            inference_ms=timings.inference_ms,
            total_ms=timings.total_ms,
        ),
        trace_id=result.trace_id,
        frame_id=result.frame_id,
        inspection_id=result.inspection_id,
    )
