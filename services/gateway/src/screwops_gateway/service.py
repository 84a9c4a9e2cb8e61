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

Rollouts: ``model.rollout_changed`` puts a canary or shadow rollout of a candidate version beside
production, numbered by the same ``sequence`` as production's moves. A change is applied only when
it is numbered later than both production and the rollout applied so far, and a production move
numbered later than the rollout ends it (a completion arrives as ``model.deployed`` then
``completed``; an abort as ``aborted`` with share 0). Before a running rollout sends a request to
its candidate, the candidate is made ready and warmed up as a switch's version is. The rollout is
recorded with production in the gateway's database, so restarts and other instances route alike.
``screwops_gateway.routing`` decides, from a stable hash of the request id, whether a request of a
covered line goes to the canary (production then scores the image off the response path) or is
also sent to the shadow (production answering as always); a request pinning a version takes no
part. Off-path scores never delay or change a response: they run after it is computed, at most
``off_path_limit`` at once (past it they are dropped and counted), and a failure is only counted.
The request's ``inspection.completed`` waits for its off-path score to carry it as
``reference_version``/``reference_probability``, beside ``rollout_id`` and ``role``; the metrics
count every version's calls by role and path, and whether the two sides' verdicts agree.
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
    ModelRolloutChanged,
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

from screwops_gateway import routing
from screwops_gateway.batcher import Batcher
from screwops_gateway.config import Policy
from screwops_gateway.metrics import (
    ANSWERED,
    FAILED,
    NO_PART,
    OFF_PATH,
    OFF_PATH_DECODE_BUSY,
    OFF_PATH_FULL,
    RESPONSE,
    GatewayMetrics,
)
from screwops_gateway.prediction_log import PredictionLog
from screwops_gateway.routing import Reference, Role, Route
from screwops_gateway.store import Rollout, ServingModel, ServingState, ServingStateStore

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
    client_identity: str | None = None
    """The subject CN of the client certificate the connection was verified with (mTLS)."""


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


@dataclass(frozen=True)
class _Answerer:
    """The version that answers a request, and the route that chose it (None for a request
    pinning a version, which no rollout reroutes)."""

    model_name: str
    triton_model: str
    version: int
    threshold: float
    frame_size: int
    route: Route | None


@dataclass(frozen=True)
class _Beside:
    """An answered inspection that ``reference`` scores after the answer went back."""

    route: Route
    reference: Reference
    image: bytes
    batch: npt.NDArray[np.uint8]
    fitted_to: int
    """The frame size ``batch`` was prepared at."""
    answered: float
    event: InspectionCompleted


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
        self._rollout: Rollout | None = None
        # Off-path scores in flight, at most policy.off_path_limit.
        self._off_path: set[asyncio.Task[None]] = set()
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

    @property
    def rollout(self) -> Rollout | None:
        """The last rollout change applied, until a later production move ends it."""
        return self._rollout

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
        await self._finish_off_path()
        await self._log.stop()
        self._decoders.shutdown(wait=False, cancel_futures=True)

    async def refresh(self) -> None:
        """Adopt the recorded production version and rollout where newer than those in memory."""
        self._adopt_state(await self._store.state(self.policy.model_name), how="refresh")

    async def _finish_off_path(self) -> None:
        """Let off-path scores in flight end, so their inspections are logged with them;
        cancelled past twice ``triton_timeout_s`` (a score waits that long for Triton at most,
        after fitting its frame), they are logged without."""
        if self._off_path:
            await asyncio.wait(set(self._off_path), timeout=2 * self.policy.triton_timeout_s)
        for task in list(self._off_path):
            task.cancel()
        await asyncio.gather(*self._off_path, return_exceptions=True)

    async def _refresh_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.policy.state_refresh_s)
            try:
                await self.refresh()
            except ScrewOpsError as error:  # the database is away: keep serving what we know
                log.warning("could not re-read the serving state: %s", error)

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
        drawn = routing.bucket(inspection.request_id)
        try:
            fitted_to = (await self._resolve(inspection, drawn)).frame_size
        except ScrewOpsError:
            # No model to answer: a bad image is still told so first, as it would be otherwise.
            await self._prepare(inspection.image, None)
            raise
        batch, preprocess_s = await self._prepare(inspection.image, fitted_to)
        # Resolved again once the image is ready: a switch (or rollout change) made while it was
        # decoded answers with the new version, so no request that starts after another was
        # answered by the new version is answered by the old one (a version of another frame
        # size re-fits it).
        answer = await self._resolve(inspection, drawn)
        if answer.frame_size != fitted_to:
            batch, preprocess_s = await self._prepare(inspection.image, answer.frame_size)
        preprocessed_at = time.monotonic()
        decoded_at = preprocessed_at - preprocess_s
        route = answer.route
        probability = await self._infer(
            answer.triton_model,
            answer.version,
            batch,
            deadline,
            pinned=route is None,
            role=route.role if route else None,
        )
        inferred_at = time.monotonic()
        if probability is None:
            self._metrics.unjudged(NO_PART)
            raise FailedPreconditionError(NO_PART_FOUND)

        verdict = Verdict.DEFECT if probability >= answer.threshold else Verdict.GOOD
        trace_id = trace_id_hex()
        total_ms = (time.monotonic() - began) * 1000
        event = _completed(inspection, answer, verdict, probability, trace_id, total_ms)
        if route is not None and route.reference is not None:
            self._beside(
                _Beside(
                    route,
                    route.reference,
                    inspection.image,
                    batch,
                    answer.frame_size,
                    probability,
                    event,
                )
            )
        else:
            self._log.record(event, inspection.image)
        self._metrics.verdict(answer.model_name, answer.version, verdict.value, inspection.line_id)
        trace.get_current_span().set_attributes(
            {
                "screwops.triton_model": answer.triton_model,
                "screwops.model_version": answer.version,
                "screwops.verdict": verdict.value,
                "screwops.inspection_id": str(event.event_id),
            }
        )
        return InspectionResult(
            inspection_id=str(event.event_id),
            verdict=verdict,
            defect_probability=probability,
            threshold=answer.threshold,
            model_name=answer.model_name,
            model_version=answer.version,
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

    async def _resolve(self, inspection: Inspection, drawn: int) -> _Answerer:
        """The version that answers ``inspection``, whose request id fell in bucket ``drawn``.

        A pinned version not announced to this instance takes the frame size of the config
        Triton serves the model with (the config is the model's, shared by all its versions),
        read once: a version's SavedModel takes one frame size for good, and the inspection path
        (which resolves twice) must not ask Triton on every call.
        """
        production = self._production
        pinned = inspection.model_version
        if pinned is not None:
            triton_model = production.triton_model if production else self.policy.model_name
            threshold = self._thresholds.get(pinned, DEFAULT_THRESHOLD)
            frame_size = self._frame_sizes.get(pinned)
            if frame_size is None:
                frame_size = await self._served_frame_size(triton_model)
                self._frame_sizes[pinned] = frame_size
            _check_frame_size(self.policy.model_name, pinned, frame_size)
            return _Answerer(
                self.policy.model_name, triton_model, pinned, threshold, frame_size, None
            )
        if production is None:
            raise FailedPreconditionError(NO_MODEL_DEPLOYED)
        route = routing.route(production, self._rollout, line_id=inspection.line_id, bucket=drawn)
        answer = route.answer
        _check_frame_size(answer.model_name, answer.version, answer.frame_size)
        return _Answerer(
            answer.model_name,
            answer.triton_model,
            answer.version,
            answer.threshold,
            answer.frame_size,
            route,
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
        role: Role | None,
        path: str = RESPONSE,
    ) -> float | None:
        """The defect probability of the frame, or None when the model found no screw in it;
        counted by ``role`` and ``path`` (a pinned request, of no role, is not: it is no side of
        any comparison)."""
        began = time.monotonic()
        try:
            probability = await self._probability(triton_model, version, batch, deadline, pinned)
        except Exception:
            if role is not None:
                self._called(version, role, path, FAILED, began)
            raise
        if role is not None:
            self._called(
                version, role, path, ANSWERED if probability is not None else NO_PART, began
            )
        return probability

    def _called(self, version: int, role: Role, path: str, outcome: str, began: float) -> None:
        self._metrics.model_called(
            self.policy.model_name,
            version,
            role=role,
            path=path,
            outcome=outcome,
            seconds=time.monotonic() - began,
        )

    async def _probability(
        self,
        triton_model: str,
        version: int,
        batch: npt.NDArray[np.uint8],
        deadline: float | None,
        pinned: bool,
    ) -> float | None:
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

    # --- off the response path -----------------------------------------------------------------

    def _beside(self, beside: _Beside) -> None:
        """Have the reference score the image after the answer went back, then log the event
        with that score; past ``off_path_limit`` scores in flight, log it at once without one,
        counted, so a slow version cannot pile up work."""
        if len(self._off_path) >= self.policy.off_path_limit:
            self._metrics.off_path_dropped(beside.reference.role, OFF_PATH_FULL)
            self._log.record(beside.event, beside.image)
            return
        task = asyncio.create_task(self._score_beside(beside), name="off-path")
        self._off_path.add(task)
        task.add_done_callback(self._off_path.discard)

    async def _score_beside(self, beside: _Beside) -> None:
        model, role = beside.reference.model, beside.reference.role
        batch, event = beside.batch, beside.event
        probability: float | None = None
        try:
            if model.frame_size != beside.fitted_to:
                batch, _ = await self._prepare(beside.image, model.frame_size)
            probability = await self._infer(
                model.triton_model,
                model.version,
                batch,
                time.monotonic() + self.policy.triton_timeout_s,
                pinned=False,
                role=role,
                path=OFF_PATH,
            )
        except ResourceExhaustedError:
            self._metrics.off_path_dropped(role, OFF_PATH_DECODE_BUSY)
        except ScrewOpsError as error:  # counted by _infer; the answer went back long ago
            log.debug("off-path score of %s v%d failed: %s", role, model.version, error)
        except Exception:
            log.exception("off-path score of %s v%d failed", role, model.version)
        finally:
            if probability is not None:
                self._compare(beside.route, model, beside.answered, probability)
                payload = event.payload.model_copy(
                    update={
                        "reference_version": model.version,
                        "reference_probability": probability,
                    }
                )
                event = event.model_copy(update={"payload": payload})
            self._log.record(event, beside.image)

    def _compare(
        self, route: Route, reference: ServingModel, answered: float, scored: float
    ) -> None:
        """Count whether the candidate's verdict agrees with production's on one image, each at
        its own threshold, and how far their probabilities lie apart."""
        if route.role == Role.CANARY:
            role = Role.CANARY
            candidate, candidate_p, production, production_p = (
                route.answer,
                answered,
                reference,
                scored,
            )
        else:
            role = Role.SHADOW
            candidate, candidate_p, production, production_p = (
                reference,
                scored,
                route.answer,
                answered,
            )
        self._metrics.compared(
            candidate.model_name,
            candidate.version,
            role,
            agree=(candidate_p >= candidate.threshold) == (production_p >= production.threshold),
            difference=candidate_p - production_p,
        )

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
            await self._warm_up(candidate)
            self._adopt_state(await self._store.set_production(candidate), how="event")

    async def _warm_up(self, model: ServingModel) -> None:
        """Wait until Triton reports ``model``'s version ready, then check it answers a blank
        frame with a probability, so the first request sent to it is not its cold start."""
        await self._triton.wait_ready(
            model.triton_model, model.version, timeout_s=self.policy.switch_timeout_s
        )
        await self._triton.check(
            model.triton_model,
            model.version,
            frame_size=model.frame_size,
            timeout_s=self.policy.switch_timeout_s,
        )

    async def on_model_rollout_changed(self, event: ModelRolloutChanged) -> None:
        """Apply a rollout change numbered later than everything applied, once a candidate that
        is to get traffic is ready and warm.

        Changes of other models and those numbered no later than production or the rollout
        applied change nothing, but teach the candidate's threshold and frame size for requests
        pinning it. A change of a candidate Triton has unloaded is skipped: a later change or
        production move replaced it.

        Raises:
            DeadlineExceededError: the candidate was not ready within ``switch_timeout_s`` (the
                bus retries the event).
            UnavailableError: Triton did not answer.
            FailedPreconditionError: the candidate is from before frame input, or its warm-up
                answered something that is not a probability.
        """
        payload = event.payload
        if payload.model_name != self.policy.model_name:
            log.info(
                "ignoring a rollout of %s: this gateway serves %s",
                payload.model_name,
                self.policy.model_name,
            )
            return
        rollout = _rollout(event)
        candidate = rollout.candidate
        self._thresholds[candidate.version] = candidate.threshold
        self._frame_sizes[candidate.version] = candidate.frame_size
        applied = ServingState(self._production, self._rollout).sequence
        if payload.sequence <= applied:
            log.info(
                "ignoring rollout %s %s (move %d): move %d is applied already",
                payload.rollout_id,
                payload.change,
                payload.sequence,
                applied,
            )
            return
        if rollout.routes and not self._routes_to(candidate):
            _check_frame_size(candidate.model_name, candidate.version, candidate.frame_size)
            if await self._triton.unloaded(candidate.triton_model, candidate.version):
                log.warning(
                    "skipping rollout %s %s: Triton has unloaded %s v%d, so a later change "
                    "replaced it",
                    payload.rollout_id,
                    payload.change,
                    candidate.model_name,
                    candidate.version,
                )
                return
            with self._tracer.start_as_current_span(
                "gateway.rollout", attributes={"screwops.model_version": candidate.version}
            ):
                await self._warm_up(candidate)
        self._adopt_state(await self._store.set_rollout(rollout), how="event")

    def _routes_to(self, candidate: ServingModel) -> bool:
        """Whether the rollout applied already sends traffic to ``candidate`` (warm, then)."""
        current = self._rollout
        return (
            current is not None
            and current.routes
            and (current.candidate.triton_model, current.candidate.version)
            == (candidate.triton_model, candidate.version)
        )

    def _adopt_state(self, state: ServingState, *, how: str) -> None:
        if state.production is not None:
            self._adopt(state.production, how=how)
        rollout = state.rollout
        if (
            rollout is None
            or rollout.sequence <= ServingState(self._production, self._rollout).sequence
        ):
            return
        self._rollout = rollout
        self._thresholds.setdefault(rollout.candidate.version, rollout.candidate.threshold)
        self._frame_sizes.setdefault(rollout.candidate.version, rollout.candidate.frame_size)
        log.info(
            "rollout %s of %s v%d is now %s, %s at %.4g %% of %s (by %s)",
            rollout.rollout_id,
            rollout.model_name,
            rollout.candidate.version,
            rollout.state,
            rollout.strategy,
            rollout.share,
            ", ".join(rollout.lines) or "every line",
            how,
        )

    def _adopt(self, model: ServingModel, *, how: str) -> None:
        if not model.newer_than(self._production):
            return
        previous = self._production
        self._production = model
        if self._rollout is not None and self._rollout.sequence < model.sequence:
            log.info("rollout %s ends: production moved after it", self._rollout.rollout_id)
            self._rollout = None
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


def _rollout(event: ModelRolloutChanged) -> Rollout:
    """The rollout as ``event`` leaves it, its candidate numbered with the change."""
    payload, served = event.payload, event.payload.candidate
    return Rollout(
        model_name=payload.model_name,
        rollout_id=payload.rollout_id,
        strategy=payload.strategy,
        state=payload.state,
        candidate=ServingModel(
            model_name=payload.model_name,
            triton_model=served.triton_model,
            version=served.version,
            changed_at=event.occurred_at,
            cause=str(event.event_id),
            threshold=served.threshold,
            model_kind=served.model_kind,
            frame_size=served.frame_size,
            sequence=payload.sequence,
        ),
        share=payload.share,
        lines=tuple(payload.lines),
        sequence=payload.sequence,
        changed_at=event.occurred_at,
        cause=str(event.event_id),
    )


def _completed(
    inspection: Inspection,
    answer: _Answerer,
    verdict: Verdict,
    probability: float,
    trace_id: str,
    total_ms: float,
) -> InspectionCompleted:
    """The prediction log's record of an answered inspection, naming the rollout it took part
    in and its side (its off-path reference, if any, is added once scored)."""
    rollout_id = answer.route.rollout_id if answer.route else None
    return InspectionCompleted.origin(
        InspectionCompletedPayload(
            request_id=inspection.request_id,
            line_id=inspection.line_id,
            camera_id=inspection.camera_id,
            client_identity=inspection.client_identity,
            verdict=verdict.value,
            defect_probability=probability,
            threshold=answer.threshold,
            model_name=answer.model_name,
            model_version=answer.version,
            trace_id=trace_id,
            latency_ms=total_ms,
            rollout_id=rollout_id,
            role=answer.route.role.value if answer.route and rollout_id else None,
        ),
        producer=PRODUCER,
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
