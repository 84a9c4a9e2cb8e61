"""Runtime.serve on FastStream's in-memory broker: a service that cannot open its API stops what it
already started and fails, instead of hanging with its background work still running."""

from __future__ import annotations

import asyncio
import socket
from types import SimpleNamespace
from typing import Any, cast

import pytest
from faststream.kafka import TestKafkaBroker
from motor.motor_asyncio import AsyncIOMotorDatabase
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from screwops_rpc import Server
from screwops_runtime import Runtime, Task
from screwops_settings import ServiceSettings
from screwops_storage import ObjectStore
from screwops_telemetry import Telemetry

from tests.fakes import FakeObjects, memory_bus


async def test_an_api_whose_port_is_taken_stops_the_background_work_and_raises() -> None:
    closed: list[str] = []
    objects = FakeObjects()
    bus = memory_bus("runtime")
    runtime = Runtime(
        settings=ServiceSettings(service_name="runtime", metrics_port=9464),
        telemetry=Telemetry(tracer_provider=TracerProvider(), meter_provider=MeterProvider()),
        db=cast(
            AsyncIOMotorDatabase[Any],
            SimpleNamespace(client=SimpleNamespace(close=lambda: closed.append("db"))),
        ),
        objects=cast(ObjectStore, objects),
        bus=bus,
    )
    cancelled = asyncio.Event()

    async def watch() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        api = Server([], host="127.0.0.1", port=taken.getsockname()[1])
        async with TestKafkaBroker(bus.broker):
            with pytest.raises(RuntimeError, match="Failed to bind"):
                await asyncio.wait_for(
                    runtime.serve(api=api, background=[Task(watch, name="watch")]), timeout=10
                )

    assert cancelled.is_set()
    assert closed == ["db"]
    # Started before the consumers: any of them may have to keep a dead letter's body there.
    assert objects.buckets == {"dead-letters"}
