"""The gateway's core: an image in, a verdict out, with no gRPC, broker or driver in sight.

One inspection: the fields are checked; the bytes are decoded by the one decoder
(``screwops_imaging.decode``, whose refusals say exactly why) and fitted to the answering
version's frame size by the function the trainer uses (``fit_frame``: a frame of that size
passes through unchanged); the production version (or the pinned one) of the model finds the
screw in the frame, aligns it and scores it, all inside its own graph, through Triton, in one
request with the frames of other inspections in flight for the same version (the micro-batching
of ``screwops_gateway.batcher``); the verdict goes back with the model version, the
threshold, the trace id and where the time went, and an ``inspection.completed`` is queued for
the prediction log without delaying the answer.

A frame in which the model finds no screw (its ``part_found`` output below ``PART_FOUND_MIN``)
gets no verdict: the call answers FAILED_PRECONDITION ``NO_PART_FOUND``, counted by the
``screwops_gateway_unjudged_frames`` metric (reason ``no_part``) and not recorded as an
inspection, since a score computed on background would put a meaningless GOOD or DEFECT on the
line. A version from before models took full frames (frame size 0) is refused too, saying that
it must be retrained.

Deadlines hold end to end: a frame whose caller's deadline passes while it waits for its batch
is never sent, a caller stops waiting for Triton at its deadline, and a Triton call waits at most
``triton_timeout_s``, so a dead or stalled Triton turns into UNAVAILABLE in time, never a hang.

The decision threshold is the served version's own, chosen on validation data by the trainer and
judged at by the evaluator; the deployment events carry it. A request pinning another version is
judged at that version's threshold if this instance has seen it announced, else at
``DEFAULT_THRESHOLD``; the response always names the threshold applied. There is no operator
override: a threshold no gate has measured would put an unjudged operating point on the line, and
a different one is a new version (or a rollback) away.

Switching models: on ``model.deployed`` / ``model.rolled_back`` the new version is adopted only
after Triton reports it ready and a warm-up inference on it succeeds, and only when the registry
numbered the move later than the one served (the events' ``sequence``; never their
``occurred_at``, which a late relay, a replay or a forgery can set to anything). Until then
every request keeps going to the old version, so a switch fails no request. The choice is
recorded in the gateway's database, so a restarted instance serves the right version at once,
and every instance re-reads it periodically, so instances whose consumer did not see the event
follow too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

import numpy as np
import numpy.typing as npt
from opentelemetry import trace
from opentelemetry.trace import TracerProvider
from screwops_contracts import (
    InspectionCompleted,
    InspectionCompletedPayload,
    ModelDeployed,
    ModelRolledBack,
)
from screwops_contracts.limits import MAX_ID_CHARS, MAX_NAME_CHARS
from screwops_contracts.models import (
    DEFAULT_THRESHOLD,
    NO_FRAME_SIZE,
    ModelKind,
    frame_size_problem,
)
from screwops_errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidInputError,
    NotFoundError,
    ResourceExhaustedError,
    ScrewOpsError,
    UnavailableError,
)
from screwops_imaging import DecodedImage, decode, fit_frame
from screwops_serving import Scores
from screwops_telemetry import trace_id_hex

from screwops_gateway.batcher import Batcher
from screwops_gateway.config import Policy
from screwops_gateway.metrics import NO_PART, GatewayMetrics
from screwops_gateway.prediction_log import PredictionLog
from screwops_gateway.store import ServingModel, ServingStateStore

log = logging.getLogger("screwops.gateway")

PRODUCER = "gateway"
NO_MODEL_DEPLOYED = "no model deployed yet: pin a loaded model_version, or deploy one first"
NO_PART_FOUND = "no screw found in the frame"
# Line and camera ids label metrics and key Kafka messages: short, plain and printable.
_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:-]{{0,{MAX_ID_CHARS - 1}}}")
_MAX_TEXT = MAX_NAME_CHARS
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Verdict(StrEnum):
    """What the model decided (the event's and the proto's vocabulary)."""

    GOOD = "GOOD"
    DEFECT = "DEFECT"


@dataclass(frozen=True)
class Inspection:
    """One image to inspect, as the camera sent it."""

    image: bytes
    line_id: str
    camera_id: str
    request_id: str = ""
    model_version: int | None = None
    frame_id: str = ""


@dataclass(frozen=True)
class Timings:
    """Where the time of one inspection went, in milliseconds."""

    decode_ms: float
    preprocess_ms: float
    inference_ms: float
    total_ms: float


@dataclass(frozen=True)
class InspectionResult:
    """The verdict on one image, with everything needed to trust and trace it."""

    inspection_id: str
    verdict: Verdict
    defect_probability: float
    threshold: float
    model_name: str
    model_version: int
    request_id: str
    frame_id: str
    trace_id: str
    timings: Timings


class Triton(Protocol):
    """The part of :class:`screwops_serving.TritonModels` the gateway uses."""

    async def infer(
        self,
        name: str,
        version: int | None,
        frames: npt.NDArray[np.uint8],
        *,
        timeout_s: float,
    ) -> Scores: ...

    async def wait_ready(
        self, name: str, version: int | None, *, timeout_s: float, interval_s: float = ...
    ) -> None: ...

    async def check(
        self, name: str, version: int, *, frame_size: int, timeout_s: float
    ) -> Scores: ...

    async def unloaded(self, name: str, version: int) -> bool: ...

    async def frame_size(self, name: str) -> int: ...


class GatewayService:
    """Inspections, inspection streams and model switches (see the module docstring)."""

    def __init__(
        self,
        triton: Triton,
        store: ServingStateStore,
        prediction_log: PredictionLog,
        metrics: GatewayMetrics,
        policy: Policy,
        *,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._triton = triton
        self._store = store
        self._log = prediction_log
        self._metrics = metrics
        self.policy = policy
        self._tracer = trace.get_tracer("screwops.gateway", tracer_provider=tracer_provider)
        self._production: ServingModel | None = None
        # The threshold and frame size of every version of this gateway's model announced to
        # this instance, for requests pinning a version other than production.
        self._thresholds: dict[int, float] = {}
        self._frame_sizes: dict[int, int] = {}
        self._refresher: asyncio.Task[None] | None = None
        # Every image is decoded and fitted to the frame here, never on the event loop: how long a
        # decode takes is not known from the byte count (a 16 KB PNG can hold 16 megapixels of
        # one colour, 100 ms of inflating), and a loop stalled that long stalls every call.
        # Pillow and NumPy release the GIL while they work, so threads suffice.
        self._decoders = ThreadPoolExecutor(policy.decode_workers, thread_name_prefix="decode")
        # Images decoding or waiting for a thread; released when the work ends, not when its
        # caller gives up, so cancelled calls cannot queue more work than the bound.
        self._decoding = threading.BoundedSemaphore(policy.decode_workers + policy.decode_queue)
        self._batcher = Batcher(
            triton.infer,
            metrics,
            max_size=policy.batch_max_size,
            max_wait_s=policy.batch_max_wait_s,
            timeout_s=policy.triton_timeout_s,
        )

    @property
    def production(self) -> ServingModel | None:
        """The version unpinned requests go to now; None before the first deployment."""
        return self._production

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the recorded production version, then start the prediction log and the refresh.

        Called inside the serving event loop, before the API opens, so the first request
        already goes to the right version.
        """
        await self.refresh()
        self._log.start()
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_periodically(), name="refresh")

    async def stop(self) -> None:
        """Stop refreshing and publish what the prediction log still holds; after the API
        drained, so no answered inspection goes unlogged."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        await self._log.stop()
        self._decoders.shutdown(wait=False, cancel_futures=True)

    async def refresh(self) -> None:
        """Adopt the recorded production version if it is newer than the one in memory."""
        recorded = await self._store.production(self.policy.model_name)
        if recorded is not None:
            self._adopt(recorded, how="refresh")

    async def _refresh_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.policy.state_refresh_s)
            try:
                await self.refresh()
            except ScrewOpsError as error:  # the database is away: keep serving what we know
                log.warning("could not re-read the production version: %s", error)

    # --- inspections ---------------------------------------------------------------------------

    async def inspect(
        self, inspection: Inspection, *, deadline: float | None = None
    ) -> InspectionResult:
        """Judge one image (see the module docstring).

        Args:
            inspection: the image and its ids.
            deadline: the caller's deadline on the ``time.monotonic()`` clock; None for none.

        Raises:
            InvalidInputError: a missing or malformed field; empty, oversized, undecodable or
                wrongly sized image.
            FailedPreconditionError: nothing is deployed and no version is pinned; the version
                is from before frame input (to be retrained); the model found no screw in the
                frame (``NO_PART_FOUND``); or its answer is not a probability.
            NotFoundError: the pinned version is not loaded in Triton.
            UnavailableError: Triton did not answer in time or is down.
            ResourceExhaustedError: ``decode_workers + decode_queue`` images are already being
                decoded or waiting to be.
            DeadlineExceededError: the caller's deadline passed.
        """
        began = time.monotonic()
        status = "OK"
        # The request's span is the transport's (the gRPC server span, whose context the
        # client's metadata may carry) and the Triton call's is the gRPC client's: a span of our
        # own around each would double the tracing cost of every inspection and tell nothing new.
        trace.get_current_span().set_attribute("screwops.line_id", inspection.line_id[:_MAX_TEXT])
        try:
            return await self._inspect(inspection, began, deadline)
        except ScrewOpsError as error:
            status = error.status.name
            raise
        except asyncio.CancelledError:
            status = "CANCELLED"
            raise
        except Exception:
            status = "INTERNAL"
            raise
        finally:
            self._metrics.finished(status, time.monotonic() - began)

    async def inspect_stream(
        self, inspections: AsyncIterator[Inspection], *, deadline: float | None = None
    ) -> AsyncIterator[InspectionResult]:
        """Judge a camera's frames, answering each in the order it came.

        Up to ``stream_window`` frames are judged at once; the next frame is read only when
        one of them is answered, so a camera faster than the model is slowed down by the
        transport's flow control instead of filling the gateway's memory. A frame that fails
        ends the stream with its error, whose message names the frame.
        """
        slots = asyncio.Semaphore(self.policy.stream_window)
        answers: asyncio.Queue[tuple[Inspection, asyncio.Task[InspectionResult]] | None] = (
            asyncio.Queue()
        )
        in_flight: set[asyncio.Task[InspectionResult]] = set()

        async def read() -> None:
            try:
                while True:
                    await slots.acquire()
                    inspection = await anext(inspections, None)
                    if inspection is None:
                        return
                    task = asyncio.create_task(self.inspect(inspection, deadline=deadline))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                    answers.put_nowait((inspection, task))
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read(), name="inspect-stream-reader")
        try:
            while (item := await answers.get()) is not None:
                inspection, task = item
                try:
                    result = await task
                except ScrewOpsError as error:
                    raise type(error)(f"frame {inspection.frame_id!r}: {error.message}") from error
                slots.release()
                yield result
            await reader  # a failed read ends the stream with its own error
        finally:
            reader.cancel()
            for task in list(in_flight):
                task.cancel()

    async def _inspect(
        self, inspection: Inspection, began: float, deadline: float | None
    ) -> InspectionResult:
        _check_fields(inspection)
        _check_deadline(deadline)
        try:
            *_, fitted_to = await self._resolve(inspection.model_version)
        except ScrewOpsError:
            # No model to answer: a bad image is still told so first, as it would be otherwise.
            await self._prepare(inspection.image, None)
            raise
        batch, preprocess_s = await self._prepare(inspection.image, fitted_to)
        # Resolved again once the image is ready: a switch made while it was decoded answers
        # with the new version, so no request that starts after another was answered by the
        # new version is answered by the old one (a version of another frame size re-fits it).
        model_name, triton_model, version, threshold, frame_size = await self._resolve(
            inspection.model_version
        )
        if frame_size != fitted_to:
            batch, preprocess_s = await self._prepare(inspection.image, frame_size)
        preprocessed_at = time.monotonic()
        decoded_at = preprocessed_at - preprocess_s
        probability = await self._infer(
            triton_model, version, batch, deadline, pinned=inspection.model_version is not None
        )
        inferred_at = time.monotonic()
        if probability is None:
            self._metrics.unjudged(NO_PART)
            raise FailedPreconditionError(NO_PART_FOUND)

        verdict = Verdict.DEFECT if probability >= threshold else Verdict.GOOD
        trace_id = trace_id_hex()
        total_ms = (time.monotonic() - began) * 1000
        event = InspectionCompleted.origin(
            InspectionCompletedPayload(
                request_id=inspection.request_id,
                line_id=inspection.line_id,
                camera_id=inspection.camera_id,
                verdict=verdict.value,
                defect_probability=probability,
                threshold=threshold,
                model_name=model_name,
                model_version=version,
                trace_id=trace_id,
                latency_ms=total_ms,
            ),
            producer=PRODUCER,
        )
        self._log.record(event, inspection.image)
        self._metrics.verdict(model_name, version, verdict.value, inspection.line_id)
        trace.get_current_span().set_attributes(
            {
                "screwops.triton_model": triton_model,
                "screwops.model_version": version,
                "screwops.verdict": verdict.value,
                "screwops.inspection_id": str(event.event_id),
            }
        )
        return InspectionResult(
            inspection_id=str(event.event_id),
            verdict=verdict,
            defect_probability=probability,
            threshold=threshold,
            model_name=model_name,
            model_version=version,
            request_id=inspection.request_id,
            frame_id=inspection.frame_id,
            trace_id=trace_id,
            timings=Timings(
                decode_ms=(decoded_at - began) * 1000,
                preprocess_ms=(preprocessed_at - decoded_at) * 1000,
                inference_ms=(inferred_at - preprocessed_at) * 1000,
                total_ms=total_ms,
            ),
        )

    async def _prepare(
        self, data: bytes, frame_size: int | None
    ) -> tuple[npt.NDArray[np.uint8], float]:
        """The model's batch of one frame of ``frame_size`` for ``data`` and the seconds fitting
        it took, made in a decode thread (``None``: only decoded, to check it; an empty batch);
        refused at once when ``decode_workers + decode_queue`` images are already in hand, so a
        flood is answered RESOURCE_EXHAUSTED instead of queueing."""
        policy = self.policy
        if not self._decoding.acquire(blocking=False):
            raise ResourceExhaustedError(
                f"{policy.decode_workers + policy.decode_queue} images are being decoded or "
                "waiting to be; retry later"
            )
        try:
            work = self._decoders.submit(_prepare, data, frame_size, policy)
        except BaseException:
            self._decoding.release()
            raise
        work.add_done_callback(self._decoded)
        return await asyncio.wrap_future(work)

    def _decoded(self, _: Future[tuple[npt.NDArray[np.uint8], float]]) -> None:
        self._decoding.release()

    async def _resolve(self, pinned: int | None) -> tuple[str, str, int, float, int]:
        """(registered name, Triton name, version, threshold, frame size) of the model that
        answers.

        A pinned version not announced to this instance takes the frame size of the config
        Triton serves the model with (the config is the model's, shared by all its versions),
        read once: a version's SavedModel takes one frame size for good, and the inspection path
        (which resolves twice) must not ask Triton on every call.
        """
        production = self._production
        if pinned is not None:
            triton_model = production.triton_model if production else self.policy.model_name
            threshold = self._thresholds.get(pinned, DEFAULT_THRESHOLD)
            frame_size = self._frame_sizes.get(pinned)
            if frame_size is None:
                frame_size = await self._served_frame_size(triton_model)
                self._frame_sizes[pinned] = frame_size
            _check_frame_size(self.policy.model_name, pinned, frame_size)
            return self.policy.model_name, triton_model, pinned, threshold, frame_size
        if production is None:
            raise FailedPreconditionError(NO_MODEL_DEPLOYED)
        _check_frame_size(production.model_name, production.version, production.frame_size)
        return (
            production.model_name,
            production.triton_model,
            production.version,
            production.threshold,
            production.frame_size,
        )

    async def _served_frame_size(self, triton_model: str) -> int:
        try:
            return await self._triton.frame_size(triton_model)
        except NotFoundError as error:
            raise NotFoundError(f"{triton_model} is not loaded in Triton") from error

    async def _infer(
        self,
        triton_model: str,
        version: int,
        batch: npt.NDArray[np.uint8],
        deadline: float | None,
        *,
        pinned: bool,
    ) -> float | None:
        """The defect probability of the frame, or None when the model found no screw in it."""
        _check_deadline(deadline)
        try:
            scores = await self._batcher.infer(triton_model, version, batch, deadline)
        except NotFoundError as error:
            if pinned:
                raise NotFoundError(
                    f"model_version {version} of {triton_model} is not loaded"
                ) from error
            # The client named no version: production being gone is an outage, not its error.
            raise UnavailableError(
                f"the production version {version} of {triton_model} is not loaded"
            ) from error
        if not scores.part_found[0]:
            return None
        probability = float(scores.probability[0])
        if not 0.0 <= probability <= 1.0:  # also refuses NaN
            raise FailedPreconditionError(
                f"{triton_model} version {version} answered {probability}, not a probability"
            )
        return probability

    # --- model switches ------------------------------------------------------------------------

    async def on_model_deployed(self, event: ModelDeployed) -> None:
        """Move production to the deployed version once it is ready and warm."""
        payload = event.payload
        await self.switch(
            model_name=payload.model_name,
            triton_model=payload.triton_model,
            version=payload.version,
            sequence=payload.sequence,
            changed_at=event.occurred_at,
            cause=str(event.event_id),
            threshold=payload.threshold,
            model_kind=payload.model_kind,
            frame_size=payload.frame_size,
        )

    async def on_model_rolled_back(self, event: ModelRolledBack) -> None:
        """Move production back to the rollback's target once it is ready and warm."""
        payload = event.payload
        await self.switch(
            model_name=payload.model_name,
            triton_model=payload.triton_model,
            version=payload.to_version,
            sequence=payload.sequence,
            changed_at=event.occurred_at,
            cause=str(event.event_id),
            threshold=payload.threshold,
            model_kind=payload.model_kind,
            frame_size=payload.frame_size,
        )

    async def switch(
        self,
        *,
        model_name: str,
        triton_model: str,
        version: int,
        sequence: int,
        changed_at: datetime,
        cause: str,
        threshold: float = DEFAULT_THRESHOLD,
        model_kind: ModelKind = ModelKind.SUPERVISED,
        frame_size: int = NO_FRAME_SIZE,
    ) -> None:
        """Adopt ``version``, deciding at ``threshold``, after Triton reports it ready and a
        warm-up inference succeeds.

        Events about other models, moves the registry numbered no later than the one serving
        now (``sequence``), and events for a version Triton has since unloaded change nothing,
        but teach the version's threshold and frame size for requests pinning it. Until the
        switch completes, requests keep going to the old version at its own threshold. A version
        from before frame input (``frame_size`` 0) is never switched to.

        Raises:
            DeadlineExceededError: the version was not ready within ``switch_timeout_s`` (the
                bus retries the event).
            UnavailableError: Triton did not answer.
            FailedPreconditionError: the version is from before frame input and must be
                retrained (the event is dead-lettered with that reason), or the warm-up answered
                something that is not a probability.
        """
        if model_name != self.policy.model_name:
            log.info(
                "ignoring a switch of %s: this gateway serves %s",
                model_name,
                self.policy.model_name,
            )
            return
        self._thresholds[version] = threshold
        self._frame_sizes[version] = frame_size
        candidate = ServingModel(
            model_name=model_name,
            triton_model=triton_model,
            version=version,
            changed_at=changed_at,
            cause=cause,
            threshold=threshold,
            model_kind=model_kind,
            frame_size=frame_size,
            sequence=sequence,
        )
        if not candidate.newer_than(self._production):
            log.info("ignoring a switch to %s v%d: not newer than the current", model_name, version)
            return
        _check_frame_size(model_name, version, frame_size)
        # The registry unloads only versions that production has moved past, so this event is
        # stale (a gateway catching up after downtime): waiting for the version would hold the
        # partition for switch_timeout_s, twice, before the later deployments behind it.
        if await self._triton.unloaded(triton_model, version):
            log.warning(
                "skipping the switch to %s v%d: Triton has unloaded it, so a later deployment "
                "replaced it",
                model_name,
                version,
            )
            return
        with self._tracer.start_as_current_span(
            "gateway.switch", attributes={"screwops.model_version": version}
        ):
            await self._triton.wait_ready(
                triton_model, version, timeout_s=self.policy.switch_timeout_s
            )
            await self._triton.check(
                triton_model,
                version,
                frame_size=frame_size,
                timeout_s=self.policy.switch_timeout_s,
            )
            recorded = await self._store.set_production(candidate)
            self._adopt(recorded, how="event")

    def _adopt(self, model: ServingModel, *, how: str) -> None:
        if not model.newer_than(self._production):
            return
        previous = self._production
        self._production = model
        self._thresholds[model.version] = model.threshold
        self._frame_sizes[model.version] = model.frame_size
        self._metrics.switched(model.model_name, model.version, how)
        log.info(
            "production of %s is now version %d at threshold %.4g (%s; was %s; by %s)",
            model.model_name,
            model.version,
            model.threshold,
            model.model_kind,
            previous.version if previous else "none",
            how,
        )


def _prepare(
    data: bytes, frame_size: int | None, policy: Policy
) -> tuple[npt.NDArray[np.uint8], float]:
    """Decode ``data`` within ``policy``'s limits and fit it to the model's frame (in a decode
    thread); with no frame size, only decode it."""
    decoded = _decode_untrusted(
        data,
        max_bytes=policy.max_image_bytes,
        max_pixels=policy.max_image_side**2,
        min_side=policy.min_image_side,
        max_side=policy.max_image_side,
    )
    began = time.monotonic()
    if frame_size is None:
        return np.zeros((0, 0, 0, 1), np.uint8), 0.0
    batch = fit_frame(decoded.image, frame_size)[np.newaxis]
    return batch, time.monotonic() - began


def _decode_untrusted(
    data: bytes, *, max_bytes: int, max_pixels: int, min_side: int, max_side: int
) -> DecodedImage:
    """``decode``, with whatever else the image library raises on hostile bytes refused too.

    ``decode`` names the reason for every failure it knows; Pillow's plugins can raise others
    (and a decoder bug must not answer INTERNAL to a camera), so those become INVALID_ARGUMENT
    naming the exception, and are logged with their traceback to be fixed where they arise.
    """
    try:
        return decode(
            data, max_bytes=max_bytes, max_pixels=max_pixels, min_side=min_side, max_side=max_side
        )
    except InvalidInputError:
        raise
    except Exception as error:
        log.warning("the decoder failed unexpectedly on %d bytes", len(data), exc_info=error)
        raise InvalidInputError(f"undecodable image: {type(error).__name__}") from error


def _check_frame_size(model_name: str, version: int, frame_size: int) -> None:
    problem = frame_size_problem(frame_size)
    if problem is not None:
        raise FailedPreconditionError(f"{model_name} version {version} cannot be served: {problem}")


def _check_fields(inspection: Inspection) -> None:
    for name, value in (("line_id", inspection.line_id), ("camera_id", inspection.camera_id)):
        if not value:
            raise InvalidInputError(f"{name} is required")
        if not _ID.fullmatch(value):
            raise InvalidInputError(
                f"{name} must be 1-{MAX_ID_CHARS} letters, digits or . _ : - (starting with a "
                f"letter or digit), not {value[:_MAX_TEXT]!r}"
            )
    for name, value in (("request_id", inspection.request_id), ("frame_id", inspection.frame_id)):
        if len(value) > _MAX_TEXT:
            raise InvalidInputError(f"{name} is longer than {_MAX_TEXT} characters")
        if _CONTROL.search(value):
            raise InvalidInputError(f"{name} contains a control character")
    if inspection.model_version is not None and inspection.model_version < 1:
        raise InvalidInputError(f"model_version must be at least 1, not {inspection.model_version}")


def _check_deadline(deadline: float | None) -> float:
    """Seconds left before ``deadline`` (infinite without one); refuse work already too late."""
    if deadline is None:
        return math.inf
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceededError("the deadline passed before the inspection finished")
    return left
