"""Micro-batching on a fake Triton: concurrent frames share a request, a lone frame goes at once,
answers go back to their own callers, and deadlines, versions, cancellation and a failing batch
are each a frame's own business."""

from __future__ import annotations

import asyncio
import contextvars
import time
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest
from screwops_errors import DeadlineExceededError, FailedPreconditionError, UnavailableError
from screwops_gateway.batcher import Batcher
from screwops_gateway.service import Inspection
from screwops_serving import Scores

from tests.support import FRAME_SIZE, eventually
from tests.unit.gateway.fakes import MODEL, POLICY, CountingMetrics, FakeTriton, harness, png

LONG_WAIT_S = 60.0  # max_wait that never fires in a test unless it says so


def shaded(shade: int, size: int = FRAME_SIZE) -> npt.NDArray[np.uint8]:
    """A batch of one frame of uniform grey ``shade``, which the fake scores shade / 255."""
    return np.full((1, size, size, 1), shade, dtype=np.uint8)


def batcher(
    triton: FakeTriton, *, max_size: int = 32, max_wait_s: float = LONG_WAIT_S
) -> tuple[Batcher, CountingMetrics]:
    metrics = CountingMetrics()
    return Batcher(
        triton.infer, metrics, max_size=max_size, max_wait_s=max_wait_s, timeout_s=2.0
    ), metrics


def gated_triton(*versions: int) -> FakeTriton:
    """A fake Triton that holds every answer until its gate is set, scoring frames by shade."""
    return FakeTriton(
        loaded={(MODEL, v): 0.0 for v in versions or (1,)}, gate=asyncio.Event(), by_shade=True
    )


async def settle() -> None:
    """Let every ready task run up to its next wait (enqueueing its frame)."""
    for _ in range(10):
        await asyncio.sleep(0)


def sizes(triton: FakeTriton) -> list[int]:
    return [shape[0] for _, _, shape, _ in triton.calls]


async def test_a_lone_frame_is_sent_at_once_alone() -> None:
    triton = FakeTriton(loaded={(MODEL, 1): 0.3})
    batch, metrics = batcher(triton)

    began = time.monotonic()
    scores = await batch.infer(MODEL, 1, shaded(0), None)

    assert time.monotonic() - began < 1  # not held for max_wait (60 s)
    assert sizes(triton) == [1]
    assert scores.probability.tolist() == [pytest.approx(0.3)]
    assert metrics.batches == [1]
    assert metrics.queue_waits[0] < 0.1


async def test_frames_arriving_while_triton_is_busy_ride_the_next_request_with_own_answers() -> (
    None
):
    triton = gated_triton()
    batch, metrics = batcher(triton)
    first = asyncio.create_task(batch.infer(MODEL, 1, shaded(10), None))
    await settle()
    shades = [20, 40, 60, 80, 100]
    queued = [asyncio.create_task(batch.infer(MODEL, 1, shaded(s), None)) for s in shades]
    await settle()
    assert sizes(triton) == [1]  # the rest wait for the call in flight

    triton.gate.set()  # type: ignore[union-attr]
    answers = await asyncio.gather(first, *queued)

    assert sizes(triton) == [1, 5]
    assert [float(a.probability[0]) for a in answers] == [
        pytest.approx(s / 255) for s in [10, *shades]
    ]
    assert metrics.batches == [1, 5]
    assert len(metrics.queue_waits) == 6


async def test_a_full_batch_goes_at_once_beside_the_request_in_flight() -> None:
    triton = gated_triton()
    batch, _ = batcher(triton, max_size=2)
    tasks = [asyncio.create_task(batch.infer(MODEL, 1, shaded(s), None)) for s in range(6)]
    await settle()
    assert sizes(triton) == [1, 2, 2]  # the sixth frame waits for a request to return

    triton.gate.set()  # type: ignore[union-attr]
    await asyncio.gather(*tasks)
    assert sorted(sizes(triton)) == [1, 1, 2, 2]


async def test_a_queued_frame_waits_no_longer_than_max_wait_for_the_request_in_flight() -> None:
    triton = gated_triton()
    batch, metrics = batcher(triton, max_wait_s=0.05)
    tasks = [asyncio.create_task(batch.infer(MODEL, 1, shaded(s), None)) for s in (1, 2)]

    async def both_sent() -> bool | None:
        return len(triton.calls) == 2 or None

    await eventually(both_sent, within=5, what="the second frame sent", interval=0.01)
    triton.gate.set()  # type: ignore[union-attr]
    await asyncio.gather(*tasks)
    assert sizes(triton) == [1, 1]
    assert max(metrics.queue_waits) >= 0.05


async def test_versions_and_frame_sizes_are_batched_separately() -> None:
    triton = gated_triton(1, 2)
    batch, _ = batcher(triton)
    tasks = [
        asyncio.create_task(batch.infer(MODEL, 1, shaded(1), None)),
        asyncio.create_task(batch.infer(MODEL, 1, shaded(2), None)),
        asyncio.create_task(batch.infer(MODEL, 2, shaded(3), None)),
        asyncio.create_task(batch.infer(MODEL, 1, shaded(4, size=32), None)),
        asyncio.create_task(batch.infer(MODEL, 2, shaded(5), None)),
    ]
    await settle()
    # Each lane's first frame goes at once; the second frames of v1 and v2 wait for their own.
    assert [(version, shape[0], shape[1]) for _, version, shape, _ in triton.calls] == [
        (1, 1, FRAME_SIZE),
        (2, 1, FRAME_SIZE),
        (1, 1, 32),
    ]

    triton.gate.set()  # type: ignore[union-attr]
    answers = await asyncio.gather(*tasks)
    assert [float(a.probability[0]) for a in answers] == [
        pytest.approx(s / 255) for s in (1, 2, 3, 4, 5)
    ]
    assert sorted((version, shape[0]) for _, version, shape, _ in triton.calls) == [
        (1, 1),
        (1, 1),
        (1, 1),
        (2, 1),
        (2, 1),
    ]


async def test_a_deadline_passing_while_queued_is_answered_and_the_frame_never_sent() -> None:
    triton = gated_triton()
    batch, _ = batcher(triton)
    first = asyncio.create_task(batch.infer(MODEL, 1, shaded(1), None))
    await settle()

    with pytest.raises(DeadlineExceededError, match="while queued for Triton"):
        await batch.infer(MODEL, 1, shaded(2), time.monotonic() + 0.05)
    triton.gate.set()  # type: ignore[union-attr]
    await first
    await settle()

    assert sizes(triton) == [1]


async def test_a_deadline_passing_in_flight_ends_that_caller_only() -> None:
    triton = FakeTriton(loaded={(MODEL, 1): 0.0}, by_shade=True, delay_s=0.4)
    batch, _ = batcher(triton)
    first = asyncio.create_task(batch.infer(MODEL, 1, shaded(1), None))
    await settle()
    # Both ride the second request, sent at 0.4 s and answered at 0.8 s.
    patient = asyncio.create_task(batch.infer(MODEL, 1, shaded(2), None))
    hasty = asyncio.create_task(batch.infer(MODEL, 1, shaded(3), time.monotonic() + 0.6))

    with pytest.raises(DeadlineExceededError, match="waiting for Triton"):
        await hasty
    assert float((await patient).probability[0]) == pytest.approx(2 / 255)
    await first
    assert sizes(triton) == [1, 2]
    assert triton.calls[1][3] == pytest.approx(2.0, abs=0.1)  # the patient caller's timeout


async def test_a_caller_cancelled_while_queued_takes_its_frame_out() -> None:
    triton = gated_triton()
    batch, _ = batcher(triton)
    first = asyncio.create_task(batch.infer(MODEL, 1, shaded(1), None))
    await settle()
    leaving = asyncio.create_task(batch.infer(MODEL, 1, shaded(2), None))
    staying = asyncio.create_task(batch.infer(MODEL, 1, shaded(3), None))
    await settle()

    leaving.cancel()
    await settle()
    triton.gate.set()  # type: ignore[union-attr]
    await asyncio.gather(first, staying)

    assert sizes(triton) == [1, 1]
    assert [int(frames.max()) for frames in triton.frames] == [1, 3]


async def test_a_batch_the_model_fails_is_retried_frame_by_frame_so_only_the_bad_frame_fails() -> (
    None
):
    triton = gated_triton()
    triton.poison_shade = 66
    batch, _ = batcher(triton)
    first = asyncio.create_task(batch.infer(MODEL, 1, shaded(1), None))
    await settle()
    queued = [asyncio.create_task(batch.infer(MODEL, 1, shaded(s), None)) for s in (2, 66, 4)]
    await settle()
    triton.gate.set()  # type: ignore[union-attr]
    answers = await asyncio.gather(first, *queued, return_exceptions=True)

    good = [a for a in answers if isinstance(a, Scores)]
    assert [float(a.probability[0]) for a in good] == [pytest.approx(s / 255) for s in (1, 2, 4)]
    assert isinstance(answers[2], FailedPreconditionError)
    assert "model failed" in answers[2].message
    assert sizes(triton) == [1, 3, 1, 1, 1]


async def test_triton_down_fails_the_whole_batch_at_once_without_retries() -> None:
    triton = gated_triton()
    batch, _ = batcher(triton)
    first = asyncio.create_task(batch.infer(MODEL, 1, shaded(1), None))
    await settle()
    queued = [asyncio.create_task(batch.infer(MODEL, 1, shaded(s), None)) for s in (2, 3)]
    await settle()
    triton.down = True
    triton.gate.set()  # type: ignore[union-attr]

    await first
    for task in queued:
        with pytest.raises(UnavailableError):
            await task
    assert sizes(triton) == [1, 2]


async def test_concurrent_inspections_share_requests_and_each_gets_its_own_verdict() -> None:
    triton = FakeTriton(loaded={(MODEL, 1): 0.0}, by_shade=True, delay_s=0.2)
    h = harness(triton=triton, policy=replace(POLICY, batch_max_wait_s=LONG_WAIT_S))
    await h.service.refresh()
    shades = [30, 60, 90, 120, 150, 180, 210, 240]

    results = await asyncio.gather(
        *(
            h.service.inspect(
                Inspection(image=png(shade=s), line_id="l", camera_id="c", request_id=str(s))
            )
            for s in shades
        )
    )

    assert [r.request_id for r in results] == [str(s) for s in shades]
    assert [r.defect_probability for r in results] == [pytest.approx(s / 255) for s in shades]
    assert sum(sizes(triton)) == len(shades)
    assert len(triton.calls) < len(shades)
    assert h.metrics.batches == sizes(triton)


async def test_a_request_is_sent_in_the_context_of_its_longest_waiting_caller() -> None:
    caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller")
    triton = gated_triton()
    sent_for: list[str] = []

    async def infer(
        name: str, version: int | None, frames: npt.NDArray[np.uint8], *, timeout_s: float
    ) -> Scores:
        sent_for.append(caller.get())  # the trace context travels the same way
        return await triton.infer(name, version, frames, timeout_s=timeout_s)

    batch = Batcher(infer, CountingMetrics(), max_size=32, max_wait_s=LONG_WAIT_S, timeout_s=2.0)

    async def call(name: str, shade: int) -> Scores:
        caller.set(name)
        return await batch.infer(MODEL, 1, shaded(shade), None)

    tasks = [asyncio.create_task(call("first", 1))]
    await settle()
    tasks += [asyncio.create_task(call(name, s)) for name, s in (("second", 2), ("third", 3))]
    await settle()
    triton.gate.set()  # type: ignore[union-attr]
    await asyncio.gather(*tasks)

    assert sent_for == ["first", "second"]
