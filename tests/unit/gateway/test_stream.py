"""InspectStream in the core: answers in order, a bounded window of frames in flight, and flow
control instead of queueing when the camera is faster than the model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from screwops_errors import NotFoundError
from screwops_gateway.service import Inspection, InspectionResult

from tests.support import eventually
from tests.unit.gateway.fakes import POLICY, harness, png

IMAGE = png()


class Camera:
    """Frames on demand, remembering how many the gateway has pulled."""

    def __init__(self, count: int, **fields: object) -> None:
        self.count = count
        self.pulled = 0
        self.fields = fields

    async def frames(self) -> AsyncIterator[Inspection]:
        for i in range(self.count):
            self.pulled += 1
            yield Inspection(
                image=IMAGE,
                line_id="line-1",
                camera_id="cam-a",
                frame_id=str(i),
                **self.fields,  # type: ignore[arg-type]
            )


async def test_a_slow_model_stops_the_gateway_reading_frames_beyond_the_window() -> None:
    h = harness(policy=replace(POLICY, stream_window=3))
    await h.service.refresh()
    h.triton.gate = asyncio.Event()  # Triton holds every answer
    camera = Camera(50)
    answered: list[InspectionResult] = []

    async def consume() -> None:
        async for result in h.service.inspect_stream(camera.frames()):
            answered.append(result)

    def in_triton() -> int:  # frames, however the batcher grouped them into requests
        return sum(shape[0] for _, _, shape, _ in h.triton.calls)

    async def window_full() -> bool | None:
        return in_triton() >= 3 or None

    consumer = asyncio.create_task(consume())
    # Polled every 50 ms: a gateway that reads beyond the window has read on by the time it is seen.
    await eventually(window_full, within=5, what="3 frames in Triton", interval=0.05)
    pulled_while_blocked = camera.pulled
    frames_in_triton = in_triton()
    h.triton.gate.set()
    await asyncio.wait_for(consumer, 5)

    assert (pulled_while_blocked, frames_in_triton) == (3, 3)
    assert [r.frame_id for r in answered] == [str(i) for i in range(50)]


async def test_answers_keep_the_frames_order_when_later_frames_finish_first() -> None:
    h = harness(policy=replace(POLICY, stream_window=8))
    await h.service.refresh()
    h.triton.delays = {1: 0.03, 2: 0.0}

    async def frames() -> AsyncIterator[Inspection]:
        for i in range(16):
            yield Inspection(
                image=IMAGE, line_id="l", camera_id="c", frame_id=str(i), model_version=1 + i % 2
            )

    answered = [r async for r in h.service.inspect_stream(frames())]

    assert [r.frame_id for r in answered] == [str(i) for i in range(16)]


async def test_a_failed_frame_ends_the_stream_and_abandons_the_frames_behind_it() -> None:
    h = harness(policy=replace(POLICY, stream_window=4))
    await h.service.refresh()
    h.triton.delays = {9: 0.05, 2: 0.5}  # the failing frame fails while others are in Triton

    async def frames() -> AsyncIterator[Inspection]:
        yield Inspection(image=IMAGE, line_id="l", camera_id="c", frame_id="a", model_version=9)
        for _ in range(10):
            yield Inspection(image=IMAGE, line_id="l", camera_id="c", model_version=2)

    async def collect() -> list[InspectionResult]:
        return [r async for r in h.service.inspect_stream(frames())]

    with pytest.raises(NotFoundError, match=r"^frame 'a': model_version 9 of"):
        await collect()

    async def all_answered() -> bool | None:
        return len(h.metrics.statuses) >= 4 or None

    await eventually(all_answered, within=5, what="a status for each frame", interval=0.001)
    assert h.metrics.statuses == ["NOT_FOUND", "CANCELLED", "CANCELLED", "CANCELLED"]
