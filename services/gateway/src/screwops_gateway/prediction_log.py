"""The prediction log: every answered inspection becomes an ``inspection.completed`` event.

The line must never wait for the log, so :meth:`PredictionLog.record` only puts the event on a
bounded queue and returns; a few workers publish from it (and store the image to MinIO first when
it is kept). Under pressure the log sheds load instead of memory or latency: a full queue drops the
event, an image that would exceed the byte budget is dropped while its event still goes out, and
each of these is counted in a metric, never silent.

An image is kept for a sampled share of inspections (chosen by the inspection id, so the choice is
reproducible) and for every verdict close to the threshold, where a reviewer's label is worth most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from opentelemetry import context as otel_context
from screwops_contracts import InspectionCompleted
from screwops_contracts.datasets import Bucket

from screwops_gateway.config import LogPolicy
from screwops_gateway.metrics import GatewayMetrics
from screwops_gateway.store import Objects

log = logging.getLogger("screwops.gateway.prediction_log")

# Key prefix inside the inspections bucket: inspections/<sha[:2]>/<sha>, content-addressed.
IMAGE_PREFIX = "inspections"

Publish = Callable[[InspectionCompleted], Awaitable[None]]


@dataclass(frozen=True)
class _Entry:
    event: InspectionCompleted
    image: bytes | None
    context: otel_context.Context


class PredictionLog:
    """Publishes inspection.completed events off the request path (see the module docstring)."""

    def __init__(
        self,
        publish: Publish,
        objects: Objects,
        metrics: GatewayMetrics,
        policy: LogPolicy | None = None,
    ) -> None:
        self._publish = publish
        self._objects = objects
        self._metrics = metrics
        self.policy = policy or LogPolicy()
        self._queue: asyncio.Queue[_Entry] = asyncio.Queue(maxsize=self.policy.queue_size)
        self._held_bytes = 0
        self._workers: list[asyncio.Task[None]] = []

    @property
    def pending(self) -> int:
        """Events waiting to be published."""
        return self._queue.qsize()

    def record(self, event: InspectionCompleted, image: bytes) -> None:
        """Queue ``event`` (and ``image``, if kept) for publishing; never blocks, never raises.

        The caller's trace context travels with the entry, so the Kafka publish joins the
        inspection's trace.
        """
        kept: bytes | None = None
        if self.policy.keeps_image(event):
            if self._held_bytes + len(image) <= self.policy.queue_bytes:
                kept = image
            else:
                self._metrics.image_dropped("queue_bytes")
        try:
            self._queue.put_nowait(_Entry(event, kept, otel_context.get_current()))
        except asyncio.QueueFull:
            self._metrics.log_dropped("queue_full")
            return
        if kept is not None:
            self._held_bytes += len(kept)

    async def prepare(self) -> None:
        """Create the inspections bucket and have MinIO expire its images after the policy's
        retention, so the bucket stays bounded however many inspections are logged."""
        await self._objects.ensure_buckets(Bucket.INSPECTIONS)
        await self._objects.expire_after(Bucket.INSPECTIONS, self.policy.image_retention_days)

    def start(self) -> None:
        """Start the workers, inside the event loop that serves requests."""
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"prediction-log-{i}")
                for i in range(self.policy.concurrency)
            ]

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Publish what is queued (up to ``timeout_s``), then stop; count what is left behind."""
        if not self._workers:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if left := self._queue.qsize():
            log.warning("prediction log stopped with %d events unpublished", left)
            self._metrics.log_dropped("shutdown", left)

    async def _work(self) -> None:
        while True:
            entry = await self._queue.get()
            token = otel_context.attach(entry.context)
            try:
                await self._publish_one(entry)
            finally:
                otel_context.detach(token)
                if entry.image is not None:
                    self._held_bytes -= len(entry.image)
                self._queue.task_done()

    async def _publish_one(self, entry: _Entry) -> None:
        event = entry.event
        if entry.image is not None:
            try:
                stored = await self._objects.put_content(
                    Bucket.INSPECTIONS, entry.image, prefix=IMAGE_PREFIX, check_existing=False
                )
            except Exception:  # an image lost to a MinIO outage must not take its event with it
                log.warning("could not store the image of inspection %s", event.event_id)
                self._metrics.image_dropped("store_failed")
            else:
                payload = event.payload.model_copy(update={"image_key": stored.key})
                event = event.model_copy(update={"payload": payload})
        try:
            await self._publish(event)
        except Exception:  # counted and logged; the response was sent long ago
            log.exception("could not publish inspection.completed %s", event.event_id)
            self._metrics.log_dropped("publish_failed")
            return
        self._metrics.log_published(with_image=event.payload.image_key is not None)
