"""Micro-batching: concurrent inspections share one Triton request.

Triton's Python backend costs about 4 ms of CPU per request whatever its batch, and a gateway
that calls it once per inspection leaves its dynamic batcher little to merge (1.7 frames per
execution in ``make bench-gateway``, against 4 to 10 behind a client that calls it directly).
So the gateway merges them itself, adaptively, per *lane* (one Triton model, version and frame
shape: requests pinning another version or fitted to another size never share a request):

- a frame arriving at an idle lane (no Triton call in flight) is sent at once, alone: batching
  adds no latency when the line is quiet;
- frames arriving while a call is in flight queue, and go together as the next request when
  that call returns, at most ``max_size`` per request (Triton's ``max_batch_size`` bounds it);
- a queued frame waits at most ``max_wait_s`` for the call in flight: past it, or once
  ``max_size`` frames queue, they go in a request of their own beside it, so a slow call does
  not hold the whole line.

Each caller keeps its own deadline: one that passes while its frame is queued is answered
DEADLINE_EXCEEDED and the frame is never sent; one that passes while the request is in flight is
answered DEADLINE_EXCEEDED at that moment while the others wait on. The request's timeout is the
latest of its callers' (at most ``timeout_s``), so an impatient caller never cuts the others' call
short. A caller cancelled while queued takes its frame out of the queue.

One bad frame fails only itself. Decode errors are answered before a frame is queued; frames in a
lane are fitted to one shape, so Triton refuses a batch only when the model fails on it (its
``execute`` answers every request of an execution with the error) or when it exceeds the model's
``max_batch_size`` (a misconfigured ``max_size``). Either way the batch is retried one frame at a
time, one request after another (concurrent ones would be merged by Triton's own batcher into one
execution again and fail together), so each frame gets its own answer or error: costly, but only
when the model fails, which is rare and bounded by the callers' deadlines. Triton being down, slow
or the version missing is not any frame's fault: every caller gets that error at once, and no
retry adds load to a Triton already in trouble.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt
from screwops_errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidInputError,
    ScrewOpsError,
    UnavailableError,
)
from screwops_serving import Scores

from screwops_gateway.metrics import GatewayMetrics

log = logging.getLogger("screwops.gateway")

_QUEUED = "the deadline passed while queued for Triton"
_IN_FLIGHT = "the deadline passed waiting for Triton"
# (Triton model, version, frame shape): frames that may share a request.
_LaneKey = tuple[str, int, tuple[int, ...]]


class Infer(Protocol):
    """``screwops_serving.TritonModels.infer``."""

    async def __call__(
        self,
        name: str,
        version: int | None,
        frames: npt.NDArray[np.uint8],
        /,
        *,
        timeout_s: float,
    ) -> Scores: ...


@dataclass(eq=False)
class _Item:
    frame: npt.NDArray[np.uint8]
    deadline: float | None
    queued_at: float
    answer: asyncio.Future[Scores]
    # The caller's context (its trace among it): the request carrying this frame first is
    # sent in it, so the Triton call shows in the trace of the request that waited longest.
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    sent: bool = False


@dataclass(eq=False)
class _Lane:
    queue: deque[_Item] = field(default_factory=deque)
    in_flight: int = 0
    timer: asyncio.TimerHandle | None = None


class Batcher:
    """Gathers the frames of concurrent callers into Triton requests (see the module
    docstring)."""

    def __init__(
        self,
        infer: Infer,
        metrics: GatewayMetrics,
        *,
        max_size: int,
        max_wait_s: float,
        timeout_s: float,
    ) -> None:
        self._infer = infer
        self._metrics = metrics
        self._max_size = max_size
        self._max_wait_s = max_wait_s
        self._timeout_s = timeout_s
        self._lanes: dict[_LaneKey, _Lane] = {}
        self._sending: set[asyncio.Task[None]] = set()

    async def infer(
        self,
        triton_model: str,
        version: int,
        frames: npt.NDArray[np.uint8],
        deadline: float | None,
    ) -> Scores:
        """The scores of ``frames`` (a batch of one, ``[1, S, S, 1]``), from whichever request
        carries it.

        Raises:
            DeadlineExceededError: ``deadline`` (``time.monotonic()``) passed, queued or in flight.
            UnavailableError: Triton did not answer within the request's timeout or is down.
            ScrewOpsError: whatever else Triton answered for this frame.
        """
        key = (triton_model, version, frames.shape)
        item = _Item(frames, deadline, time.monotonic(), asyncio.get_running_loop().create_future())
        lane = self._lanes.setdefault(key, _Lane())
        lane.queue.append(item)
        self._dispatch(key, lane)
        try:
            if deadline is None:
                return await item.answer
            return await asyncio.wait_for(item.answer, deadline - time.monotonic())
        except TimeoutError:
            raise DeadlineExceededError(_IN_FLIGHT if item.sent else _QUEUED) from None
        finally:
            if not item.sent:
                self._withdraw(key, lane, item)

    def _dispatch(self, key: _LaneKey, lane: _Lane) -> None:
        """Send what the lane's queue may send now, and wake up for the rest when the oldest
        frame has waited ``max_wait_s``."""
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        now = time.monotonic()
        while lane.queue and (
            lane.in_flight == 0
            or len(lane.queue) >= self._max_size
            or now - lane.queue[0].queued_at >= self._max_wait_s
        ):
            batch = [lane.queue.popleft() for _ in range(min(self._max_size, len(lane.queue)))]
            for item in batch:
                item.sent = True
            lane.in_flight += 1
            task = asyncio.create_task(
                self._send(key, lane, batch), name="triton-batch", context=batch[0].context
            )
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        if lane.queue:
            wait = lane.queue[0].queued_at + self._max_wait_s - now
            lane.timer = asyncio.get_running_loop().call_later(wait, self._dispatch, key, lane)
        elif lane.in_flight == 0 and self._lanes.get(key) is lane:
            del self._lanes[key]

    def _withdraw(self, key: _LaneKey, lane: _Lane, item: _Item) -> None:
        """Take a frame whose caller gave up (cancelled, or its deadline passed) out of the
        queue, so it is never sent."""
        try:
            lane.queue.remove(item)
        except ValueError:
            return
        if not lane.queue:
            self._dispatch(key, lane)

    async def _send(self, key: _LaneKey, lane: _Lane, batch: list[_Item]) -> None:
        try:
            now = time.monotonic()
            for item in batch:
                self._metrics.queued(now - item.queued_at)
            await self._call(key, batch, retry_singly=True)
        finally:
            lane.in_flight -= 1
            self._dispatch(key, lane)

    async def _call(self, key: _LaneKey, batch: list[_Item], *, retry_singly: bool) -> None:
        """One Triton request for the frames of ``batch`` whose callers still wait; each caller
        gets its own frame's scores or error."""
        now = time.monotonic()
        for item in batch:
            if not item.answer.done() and item.deadline is not None and item.deadline <= now:
                item.answer.set_exception(DeadlineExceededError(_QUEUED))
        waiting = [item for item in batch if not item.answer.done()]
        if not waiting:
            return
        triton_model, version, _ = key
        timeout_s = min(
            self._timeout_s,
            max(
                (item.deadline - now if item.deadline is not None else self._timeout_s)
                for item in waiting
            ),
        )
        self._metrics.batched(len(waiting))
        try:
            scores = await self._infer(
                triton_model,
                version,
                np.concatenate([item.frame for item in waiting]),
                timeout_s=timeout_s,
            )
        except (InvalidInputError, FailedPreconditionError) as error:
            if retry_singly and len(waiting) > 1:
                log.warning(
                    "Triton refused a batch of %d frames of %s v%d (%s); retrying them one by one",
                    len(waiting),
                    triton_model,
                    version,
                    error.message,
                )
                for item in waiting:
                    await self._call(key, [item], retry_singly=False)
                return
            _fail(waiting, error)
        except DeadlineExceededError:
            for item in waiting:
                if not item.answer.done():
                    item.answer.set_exception(_late(item, timeout_s))
        except asyncio.CancelledError:  # the gateway is stopping
            for item in waiting:
                item.answer.cancel()
            raise
        except Exception as error:  # a bug here must not leave its callers waiting
            if not isinstance(error, ScrewOpsError):
                log.exception("a Triton request of %s v%d failed", triton_model, version)
            _fail(waiting, error)
        else:
            for index, item in enumerate(waiting):
                if not item.answer.done():
                    item.answer.set_result(
                        Scores(
                            probability=scores.probability[index : index + 1],
                            found=scores.found[index : index + 1],
                        )
                    )


def _late(item: _Item, timeout_s: float) -> ScrewOpsError:
    """What a caller is told when Triton did not answer its request within ``timeout_s``: its own
    deadline passed, or Triton is too slow to wait for."""
    if item.deadline is not None and time.monotonic() >= item.deadline:
        return DeadlineExceededError(_IN_FLIGHT)
    return UnavailableError(f"Triton did not answer within {timeout_s:.3g} s; retry later")


def _fail(items: list[_Item], error: Exception) -> None:
    """Answer every caller still waiting with ``error``, each with its own copy of a typed one
    (one exception object raised in many tasks would grow one traceback)."""
    for item in items:
        if not item.answer.done():
            copy = type(error)(error.message) if isinstance(error, ScrewOpsError) else error
            item.answer.set_exception(copy)
