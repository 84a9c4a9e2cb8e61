"""The gateway on the real stack: a real gRPC server in front of the real Triton, switching
versions on events from Kafka, logging every inspection to Kafka.

The service's pieces run in-process, wired as ``__main__`` wires them, except that its bus uses
this test's own topics and database and the model name is unique, so nothing here meets another
test's events, documents or Triton models. The two versions are tiny Keras models with random
weights; what matters is that the gateway answers what Triton answers for the image it was sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.trace import TracerProvider
from pydantic import SecretStr
from screwops.v1 import inspection_pb2, inspection_pb2_grpc
from screwops_contracts import InspectionCompleted, Topic
from screwops_contracts.datasets import Bucket
from screwops_gateway import grpc_api, handlers
from screwops_gateway.config import LogPolicy, Policy
from screwops_gateway.metrics import GatewayMetrics
from screwops_gateway.prediction_log import PredictionLog
from screwops_gateway.service import GatewayService
from screwops_gateway.store import MongoServingStateStore
from screwops_imaging import decode, fit_frame
from screwops_rpc import BearerAuth, open_aio_channel
from screwops_serving import TritonModels
from screwops_settings import ApiToken, Role, StackSettings
from screwops_storage import ObjectStore, database

from tests.frames_model import expected_scores
from tests.integration.routing import RoutedBus, routed_topics, service_bus
from tests.integration.test_serving import FRAME_SIZE, SCALES, Served, two_versions_served
from tests.support import eventually, model_deployed, png, screw_png, unique

TOKEN = "line-7-camera-token-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
MAX_IMAGE_BYTES = 512 * 1024


@dataclass
class Gateway:
    """The running gateway, a client for it, and what it logged."""

    model: str
    bus: RoutedBus
    stub: inspection_pb2_grpc.InspectionServiceAsyncStub
    channel: grpc.aio.Channel
    logged: list[InspectionCompleted] = field(default_factory=list)

    async def inspect(self, image: bytes, **fields: Any) -> inspection_pb2.InspectResponse:
        request = inspection_pb2.InspectRequest(
            image=image, line_id="line-7", camera_id="cam-1", **fields
        )
        return await self.stub.Inspect(request, metadata=AUTH, timeout=10)

    async def deploy(self, version: int, *, threshold: float = 0.5) -> None:
        """The registry's announcement that ``version``, deciding at ``threshold``, replaced the
        one before."""
        event = model_deployed(self.model, version, frame_size=FRAME_SIZE)
        payload = event.payload.model_copy(update={"threshold": threshold})
        await self.bus.publish(event.model_copy(update={"payload": payload}))

    def expected(self, image: bytes, version: int) -> float:
        """What ``version`` answers for ``image``, fitted to its frame as the gateway does."""
        frames = fit_frame(decode(image).image, FRAME_SIZE)[np.newaxis]
        probability, _ = expected_scores(frames, scale=SCALES[version])
        return float(probability[0])


@pytest.fixture
async def routes(settings: StackSettings) -> AsyncIterator[dict[str, str]]:
    # Every topic the gateway consumes or produces: the routed bus refuses one it has no route for.
    used = (
        Topic.MODEL_DEPLOYED,
        Topic.MODEL_ROLLED_BACK,
        Topic.MODEL_ROLLOUT_CHANGED,
        Topic.INSPECTION_COMPLETED,
    )
    async for routes in routed_topics(settings, used, "it-gateway"):
        yield routes


@pytest.fixture(scope="module")
async def served(
    settings: StackSettings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    scratch = tmp_path_factory.mktemp("gateway-models")
    async with two_versions_served(settings, scratch, unique("it-gateway-model")) as served:
        yield served


@pytest.fixture
async def gateway(
    settings: StackSettings,
    mongo_db: AsyncIOMotorDatabase[Any],
    routes: dict[str, str],
    served: Served,
) -> AsyncIterator[Gateway]:
    """A fresh gateway (nothing deployed) in front of the served model."""
    model, triton = served.name, served.triton
    db = database(settings.mongo, mongo_db.name, appname="it-gateway")
    objects = ObjectStore.from_settings(settings.minio)
    await objects.ensure_buckets(Bucket.INSPECTIONS)
    bus = service_bus(settings, "gateway", db, routes)
    metrics = GatewayMetrics()
    tracer_provider = TracerProvider()
    service = GatewayService(
        triton,
        MongoServingStateStore(db),
        PredictionLog(bus.publish, objects, metrics, LogPolicy(image_sample_rate=0.0)),
        metrics,
        Policy(model_name=model, max_image_bytes=MAX_IMAGE_BYTES),
        tracer_provider=tracer_provider,
    )
    handlers.register(bus, service)
    api = grpc_api.server(
        service,
        host="127.0.0.1",
        port=0,
        # The request's span is the transport's, as setup_telemetry(instrument_grpc=True)
        # gives every server in a service.
        interceptors=[
            aio_server_interceptor(tracer_provider=tracer_provider),  # type: ignore[no-untyped-call]
            BearerAuth(
                [ApiToken(principal="line-1", role=Role.LINE, token=SecretStr(TOKEN))],
                grpc_api.ROLES,
                metrics.refused,
            ),
        ],
        max_message_bytes=2 * MAX_IMAGE_BYTES,
    )
    logged: list[InspectionCompleted] = []

    @bus.broker.subscriber(routes[Topic.INSPECTION_COMPLETED], group_id=unique("it-reader"))
    async def on_inspection(event: InspectionCompleted) -> None:
        logged.append(event)

    await bus.broker.start()
    await service.start()
    await api.start()
    channel = open_aio_channel(f"127.0.0.1:{api.port}")
    try:
        yield Gateway(
            model=model,
            bus=bus,
            stub=inspection_pb2_grpc.InspectionServiceStub(channel),
            channel=channel,
            logged=logged,
        )
    finally:
        await channel.close()
        await api.stop(grace=1)
        await service.stop()
        await bus.broker.stop()
        db.client.close()


async def test_a_pinned_version_answers_what_triton_answers_and_is_logged(
    gateway: Gateway,
) -> None:
    image = screw_png(1)
    answer = await gateway.inspect(image, model_version=2, request_id="req-1")
    assert answer.model_name == gateway.model
    assert answer.model_version == 2
    assert answer.request_id == "req-1"
    assert answer.defect_probability == pytest.approx(gateway.expected(image, 2), abs=1e-4)
    wanted = (
        inspection_pb2.VERDICT_DEFECT
        if answer.defect_probability >= answer.threshold
        else inspection_pb2.VERDICT_GOOD
    )
    assert answer.verdict == wanted
    assert len(answer.trace_id) == 32
    assert answer.timings.total_ms >= answer.timings.inference_ms > 0

    async def logged() -> InspectionCompleted | None:
        return next((e for e in gateway.logged if e.payload.request_id == "req-1"), None)

    event = await eventually(logged, within=30, what="inspection.completed for req-1")
    assert str(event.event_id) == answer.inspection_id
    assert event.payload.model_version == 2
    assert event.payload.trace_id == answer.trace_id


async def test_bad_requests_get_their_documented_status(gateway: Gateway) -> None:
    cases = [
        (b"", {}, grpc.StatusCode.INVALID_ARGUMENT),
        (b"not an image at all", {}, grpc.StatusCode.INVALID_ARGUMENT),
        (screw_png(2)[:200], {}, grpc.StatusCode.INVALID_ARGUMENT),
        (png(16), {}, grpc.StatusCode.INVALID_ARGUMENT),
        (b"\x89PNG" + bytes(MAX_IMAGE_BYTES), {}, grpc.StatusCode.INVALID_ARGUMENT),
        (screw_png(2), {"model_version": 99}, grpc.StatusCode.NOT_FOUND),
        (screw_png(2), {}, grpc.StatusCode.FAILED_PRECONDITION),  # nothing deployed yet
    ]
    for image, fields, status in cases:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await gateway.inspect(image, **fields)
        assert raised.value.code() == status, (len(image), fields, raised.value.details())
        assert raised.value.details()


async def test_a_camera_stream_is_answered_in_order(gateway: Gateway) -> None:
    frames = [screw_png(10 + n) for n in range(12)]

    async def camera() -> AsyncIterator[inspection_pb2.InspectRequest]:
        for n, image in enumerate(frames):
            yield inspection_pb2.InspectRequest(
                image=image, line_id="line-7", camera_id="cam-2", frame_id=f"f{n}", model_version=1
            )

    answers = [a async for a in gateway.stub.InspectStream(camera(), metadata=AUTH, timeout=30)]
    assert [a.frame_id for a in answers] == [f"f{n}" for n in range(len(frames))]
    for image, answer in zip(frames, answers, strict=True):
        assert answer.defect_probability == pytest.approx(gateway.expected(image, 1), abs=1e-4)


async def test_a_deployment_switches_versions_under_load_without_a_failed_request(
    gateway: Gateway,
) -> None:
    await gateway.deploy(1)

    async def on_version_one() -> bool | None:
        try:
            answer = await gateway.inspect(screw_png(4))
        except grpc.aio.AioRpcError:
            return None
        return True if answer.model_version == 1 else None

    await eventually(on_version_one, within=60, what="production version 1 serving")

    image = screw_png(5)
    versions: list[int] = []
    failures: list[str] = []
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            try:
                versions.append((await gateway.inspect(image)).model_version)
            except grpc.aio.AioRpcError as error:
                failures.append(f"{error.code().name}: {error.details()}")

    load = [asyncio.create_task(client()) for _ in range(4)]
    began = time.monotonic()
    await gateway.deploy(2, threshold=0.3)

    async def switched() -> bool | None:
        return True if versions[-8:] == [2] * 8 else None

    try:
        await eventually(switched, within=60, what="every client answered by version 2")
    finally:
        stop.set()
        await asyncio.gather(*load)
    assert failures == []
    assert versions[0] == 1
    first_two = versions.index(2)
    assert all(v == 2 for v in versions[first_two:]), "a request went back to version 1"
    print(f"switched after {time.monotonic() - began:.2f}s, {len(versions)} requests, 0 failed")
    answer = await gateway.inspect(image)
    assert answer.threshold == pytest.approx(0.3), "version 2 decides at its own threshold"
    wanted = (
        inspection_pb2.VERDICT_DEFECT
        if answer.defect_probability >= 0.3
        else inspection_pb2.VERDICT_GOOD
    )
    assert answer.verdict == wanted


async def test_an_unreachable_triton_answers_unavailable_within_the_deadline(
    settings: StackSettings, mongo_db: AsyncIOMotorDatabase[Any]
) -> None:
    metrics = GatewayMetrics()
    published: list[InspectionCompleted] = []

    async def publish(event: InspectionCompleted) -> None:
        published.append(event)

    objects = ObjectStore.from_settings(settings.minio)
    service = GatewayService(
        TritonModels("127.0.0.1:1"),
        MongoServingStateStore(mongo_db),
        PredictionLog(publish, objects, metrics, LogPolicy()),
        metrics,
        Policy(
            model_name=unique("it-gateway-down"),
            max_image_bytes=MAX_IMAGE_BYTES,
            triton_timeout_s=1.0,
        ),
    )
    api = grpc_api.server(service, host="127.0.0.1", port=0, max_message_bytes=1 << 20)
    await service.start()
    await api.start()
    try:
        async with open_aio_channel(f"127.0.0.1:{api.port}") as channel:
            stub: inspection_pb2_grpc.InspectionServiceAsyncStub
            stub = inspection_pb2_grpc.InspectionServiceStub(channel)
            request = inspection_pb2.InspectRequest(
                image=screw_png(6), line_id="line-7", camera_id="cam-1", model_version=1
            )
            began = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Inspect(request, timeout=5)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - began < 5
    finally:
        await api.stop(grace=1)
        await service.stop()
    assert published == []
