"""The services the console talks to, over their gRPC APIs only.

One ``grpc.aio`` channel per service, opened inside the web app's event loop (an aio channel is
bound to the loop it was made in) and closed when the app stops. A failed call becomes a
:class:`BackendError` naming the service, the status and the service's own message, which the
pages show as they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from screwops.v1 import (
    ingestion_pb2_grpc,
    inspection_pb2_grpc,
    labeling_pb2_grpc,
    registry_pb2_grpc,
)
from screwops_rpc import open_aio_channel

from screwops_console.config import ConsoleSettings

T = TypeVar("T")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Labeling answers with images (a review page holds several), so allow large messages."""


class BackendError(Exception):
    """A call to one of the services failed; ``str()`` is the line a page shows."""

    def __init__(self, service: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{service}: {code.name}: {details}")
        self.service = service
        self.code = code
        self.details = details


async def call(service: str, pending: Awaitable[T]) -> T:
    """Await one gRPC call to ``service``, its failure turned into a :class:`BackendError`."""
    try:
        return await pending
    except grpc.aio.AioRpcError as exc:
        raise BackendError(service, exc.code(), exc.details() or "") from exc


@dataclass
class Backends:
    """The stubs of the four APIs, and the channels under them."""

    gateway: inspection_pb2_grpc.InspectionServiceAsyncStub
    ingestion: ingestion_pb2_grpc.IngestionServiceAsyncStub
    labeling: labeling_pb2_grpc.LabelingServiceAsyncStub
    registry: registry_pb2_grpc.RegistryServiceAsyncStub
    channels: dict[str, grpc.aio.Channel]

    @classmethod
    def connect(cls, settings: ConsoleSettings) -> Backends:
        """Channels to each service's address (connected lazily, on the first call), each
        presenting that service's token on every call when one is set."""
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        addresses = {
            "gateway": settings.gateway_address,
            "ingestion": settings.ingestion_address,
            "labeling": settings.labeling_address,
            "registry": settings.registry_address,
        }
        tokens = {
            "gateway": settings.gateway_token,
            "ingestion": settings.ingestion_token,
            "labeling": settings.labeling_token,
            "registry": settings.registry_token,
        }
        channels = {
            name: open_aio_channel(
                address, tokens[name].get_secret_value(), options, tls=settings.stack.grpc
            )
            for name, address in addresses.items()
        }
        return cls(
            gateway=inspection_pb2_grpc.InspectionServiceStub(channels["gateway"]),
            ingestion=ingestion_pb2_grpc.IngestionServiceStub(channels["ingestion"]),
            labeling=labeling_pb2_grpc.LabelingServiceStub(channels["labeling"]),
            registry=registry_pb2_grpc.RegistryServiceStub(channels["registry"]),
            channels=channels,
        )

    async def health(self, deadline_s: float = 2.0) -> dict[str, str]:
        """Each service's standard gRPC health status (``SERVING``, or why not)."""

        async def one(channel: grpc.aio.Channel) -> str:
            stub: Any = health_pb2_grpc.HealthStub(channel)  # its stubs omit the methods
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=deadline_s)
            except grpc.aio.AioRpcError as exc:
                return exc.code().name
            return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)

        names = list(self.channels)
        statuses = await asyncio.gather(*(one(self.channels[name]) for name in names))
        return dict(zip(names, statuses, strict=True))

    async def close(self) -> None:
        """Close every channel (in-flight calls are cancelled)."""
        await asyncio.gather(*(channel.close() for channel in self.channels.values()))
