"""In-memory stand-ins for Triton, the serving-state store and MinIO (unit tests only), and a
harness that wires them and the shared recording bus into the gateway's core as ``__main__``
does."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
from PIL import Image
from screwops_contracts import ModelRolloutChanged, ModelRolloutChangedPayload, ServedVersion
from screwops_contracts.models import DEFAULT_THRESHOLD, ModelKind
from screwops_errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    NotFoundError,
    UnavailableError,
)
from screwops_gateway.config import LogPolicy, Policy
from screwops_gateway.metrics import GatewayMetrics
from screwops_gateway.prediction_log import PredictionLog
from screwops_gateway.service import GatewayService
from screwops_gateway.store import Rollout, ServingModel, ServingState
from screwops_serving import Scores, frame_shape
from screwops_storage import StoredObject

from tests.fakes import FakeObjects as SharedFakeObjects
from tests.fakes import RecordingBus
from tests.support import FRAME_SIZE

MODEL = "screw-classifier"
START = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
POLICY = Policy(model_name=MODEL, max_image_bytes=100_000)


def png(width: int = 64, height: int | None = None, *, shade: int = 128) -> bytes:
    """A plain grayscale PNG of the given size."""
    out = io.BytesIO()
    Image.new("L", (width, height or width), color=shade).save(out, format="PNG")
    return out.getvalue()


@dataclass
class FakeTriton:
    """Answers each (model, version) it has loaded with a fixed probability (or, with
    ``by_shade``, each frame's mean grey / 255, so frames of one batch get different answers), a
    part found in every frame but those of the versions in ``no_part``; a batch holding a frame
    of mean grey ``poison_shade`` fails whole, as the model's ``execute`` does."""

    loaded: dict[tuple[str, int], float] = field(default_factory=dict)
    down: bool = False
    delay_s: float = 0.0
    delays: dict[int, float] = field(default_factory=dict)
    gate: asyncio.Event | None = None
    calls: list[tuple[str, int | None, tuple[int, ...], float]] = field(default_factory=list)
    ready_after: dict[tuple[str, int], asyncio.Event] = field(default_factory=dict)
    asked_ready: list[tuple[str, int]] = field(default_factory=list)
    evicted: set[tuple[str, int]] = field(default_factory=set)
    no_part: set[int] = field(default_factory=set)
    served_frame_size: int = FRAME_SIZE
    configs_read: int = 0
    frames: list[npt.NDArray[np.uint8]] = field(default_factory=list)
    by_shade: bool = False
    poison_shade: int | None = None

    async def infer(
        self,
        name: str,
        version: int | None,
        batch: npt.NDArray[np.uint8],
        *,
        timeout_s: float,
    ) -> Scores:
        self.calls.append((name, version, batch.shape, timeout_s))
        self.frames.append(batch)
        if self.down:
            raise UnavailableError(f"inference on {name}: failed to connect to all addresses")
        if self.gate is not None:
            await self.gate.wait()
        delay = self.delays.get(version or 0, self.delay_s)
        if delay > timeout_s:
            await asyncio.sleep(timeout_s)
            raise DeadlineExceededError(f"inference on {name}: Deadline Exceeded")
        if delay:
            await asyncio.sleep(delay)
        key = (name, version or 0)
        if key not in self.loaded:
            raise NotFoundError(f"inference on {name} version {version}: unknown version")
        shades = batch.reshape(len(batch), -1).mean(axis=1)
        if self.poison_shade is not None and self.poison_shade in shades:
            raise FailedPreconditionError(f"inference on {name}: model failed: bad frame")
        found = 0.0 if (version or 0) in self.no_part else 1.0
        return Scores(
            probability=(shades / 255).astype(np.float32)
            if self.by_shade
            else np.full(len(batch), self.loaded[key], dtype=np.float32),
            found=np.full(len(batch), found, dtype=np.float32),
        )

    async def wait_ready(
        self, name: str, version: int | None, *, timeout_s: float, interval_s: float = 0.25
    ) -> None:
        self.asked_ready.append((name, version or 0))
        if self.down:
            raise UnavailableError("asking whether it is ready: failed to connect")
        gate = self.ready_after.get((name, version or 0))
        if gate is not None:
            try:
                await asyncio.wait_for(gate.wait(), timeout_s)
            except TimeoutError:
                raise DeadlineExceededError(f"{name} v{version} was not ready") from None
        if (name, version or 0) not in self.loaded:
            raise DeadlineExceededError(f"{name} version {version} was not ready")

    async def unloaded(self, name: str, version: int) -> bool:
        if self.down:
            raise UnavailableError("reading the repository index: failed to connect")
        return (name, version) in self.evicted

    async def frame_size(self, name: str) -> int:
        if self.down:
            raise UnavailableError(f"reading the config of {name}: failed to connect")
        if not any(model == name for model, _ in self.loaded):
            raise NotFoundError(f"reading the config of {name}: unknown model")
        self.configs_read += 1
        return self.served_frame_size

    async def check(self, name: str, version: int, *, frame_size: int, timeout_s: float) -> Scores:
        blank = np.zeros((1, *frame_shape(frame_size)), dtype=np.uint8)
        scores = await self.infer(name, version, blank, timeout_s=timeout_s)
        if not 0.0 <= float(scores.probability[0]) <= 1.0:
            raise FailedPreconditionError(f"{name} v{version} answered {scores.probability[0]}")
        return scores


class FakeStateStore:
    """The serving state as the Mongo store keeps it: production in ``models``, the rollout
    beside it in ``rollouts``, each change recorded only when numbered later."""

    def __init__(self) -> None:
        self.models: dict[str, ServingModel] = {}
        self.rollouts: dict[str, Rollout] = {}
        self.reads = 0

    async def state(self, model_name: str) -> ServingState:
        self.reads += 1
        return ServingState(self.models.get(model_name), self.rollouts.get(model_name))

    async def set_production(self, model: ServingModel) -> ServingState:
        current = self.models.get(model.model_name)
        if current is None or current.sequence < model.sequence:
            self.models[model.model_name] = model
        rollout = self.rollouts.get(model.model_name)
        if rollout is not None and rollout.sequence < model.sequence:
            del self.rollouts[model.model_name]
        return await self.state(model.model_name)

    async def set_rollout(self, rollout: Rollout) -> ServingState:
        recorded = ServingState(
            self.models.get(rollout.model_name), self.rollouts.get(rollout.model_name)
        )
        if recorded.sequence < rollout.sequence:
            self.rollouts[rollout.model_name] = rollout
        return await self.state(rollout.model_name)


class FakeObjects(SharedFakeObjects):
    """The shared in-memory MinIO, with a switch that makes it fail as in an outage."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    async def put_content(
        self,
        bucket: str,
        data: bytes,
        *,
        prefix: str,
        content_type: str = "",
        check_existing: bool = True,
    ) -> StoredObject:
        if self.fail:
            raise UnavailableError("MinIO did not answer")
        return await super().put_content(bucket, data, prefix=prefix)


class CountingMetrics(GatewayMetrics):
    """The real metrics (on the no-op meter), plus what was counted, for assertions."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[str] = []
        self.dropped: dict[str, int] = {}
        self.images_dropped: dict[str, int] = {}
        self.switches: list[tuple[int, str]] = []
        self.unjudged_frames: dict[str, int] = {}
        self.batches: list[int] = []
        self.queue_waits: list[float] = []
        self.model_calls: list[tuple[int, str, str, str]] = []
        self.comparisons: list[tuple[int, str, bool, float]] = []
        self.off_path_drops: list[tuple[str, str]] = []

    def finished(self, status: str, seconds: float) -> None:
        super().finished(status, seconds)
        self.statuses.append(status)

    def log_dropped(self, reason: str, count: int = 1) -> None:
        super().log_dropped(reason, count)
        self.dropped[reason] = self.dropped.get(reason, 0) + count

    def image_dropped(self, reason: str) -> None:
        super().image_dropped(reason)
        self.images_dropped[reason] = self.images_dropped.get(reason, 0) + 1

    def unjudged(self, reason: str) -> None:
        super().unjudged(reason)
        self.unjudged_frames[reason] = self.unjudged_frames.get(reason, 0) + 1

    def batched(self, frames: int) -> None:
        super().batched(frames)
        self.batches.append(frames)

    def queued(self, seconds: float) -> None:
        super().queued(seconds)
        self.queue_waits.append(seconds)

    def switched(self, model_name: str, model_version: int, how: str) -> None:
        super().switched(model_name, model_version, how)
        self.switches.append((model_version, how))

    def model_called(
        self,
        model_name: str,
        model_version: int,
        *,
        role: str,
        path: str,
        outcome: str,
        seconds: float,
    ) -> None:
        super().model_called(
            model_name, model_version, role=role, path=path, outcome=outcome, seconds=seconds
        )
        self.model_calls.append((model_version, role, path, outcome))

    def compared(
        self, model_name: str, candidate_version: int, role: str, *, agree: bool, difference: float
    ) -> None:
        super().compared(model_name, candidate_version, role, agree=agree, difference=difference)
        self.comparisons.append((candidate_version, role, agree, difference))

    def off_path_dropped(self, role: str, reason: str) -> None:
        super().off_path_dropped(role, reason)
        self.off_path_drops.append((role, reason))


@dataclass
class Harness:
    service: GatewayService
    triton: FakeTriton
    store: FakeStateStore
    objects: FakeObjects
    published: RecordingBus
    metrics: CountingMetrics
    log: PredictionLog


def harness(
    *,
    production: int | None = 1,
    loaded: dict[tuple[str, int], float] | None = None,
    policy: Policy = POLICY,
    log_policy: LogPolicy | None = None,
    triton: FakeTriton | None = None,
    store: FakeStateStore | None = None,
) -> Harness:
    """The core on fakes: version ``production`` deployed, versions 1 and 2 loaded (unless
    ``triton`` is given); ``store`` shares another harness's database."""
    triton = triton or FakeTriton(loaded=dict(loaded or {(MODEL, 1): 0.2, (MODEL, 2): 0.9}))
    store = store or FakeStateStore()
    if production is not None:
        store.models[MODEL] = deployed(production)
    objects = FakeObjects()
    published = RecordingBus("gateway")
    metrics = CountingMetrics()
    prediction_log = PredictionLog(published.publish, objects, metrics, log_policy or LogPolicy())
    service = GatewayService(
        triton,
        store,
        prediction_log,
        metrics,
        policy,
    )
    return Harness(service, triton, store, objects, published, metrics, prediction_log)


def deployed(version: int, *, sequence: int = 0, frame_size: int = FRAME_SIZE) -> ServingModel:
    """A recorded production: ``version`` (taking frames of ``frame_size``) put there by the
    registry's move ``sequence``."""
    return ServingModel(
        model_name=MODEL,
        triton_model=MODEL,
        version=version,
        changed_at=START + timedelta(minutes=sequence),
        cause=f"event-{version}-{sequence}",
        frame_size=frame_size,
        sequence=sequence,
    )


def rollout_changed(
    candidate: int,
    *,
    sequence: int,
    change: str = "started",
    state: str = "running",
    strategy: str = "canary",
    share: float = 5.0,
    steps: tuple[float, ...] = (5.0, 25.0, 100.0),
    step: int = 0,
    lines: tuple[str, ...] = (),
    production: int = 1,
    threshold: float = 0.5,
    rollout_id: str = "ro-1",
    model: str = MODEL,
) -> ModelRolloutChanged:
    """The registry's ``model.rollout_changed``: rollout ``rollout_id`` of ``candidate`` beside
    ``production`` after ``change``, numbered ``sequence``."""
    return ModelRolloutChanged.origin(
        ModelRolloutChangedPayload(
            model_name=model,
            rollout_id=rollout_id,
            change=change,
            state=state,
            strategy=strategy,
            production=_served(production, DEFAULT_THRESHOLD),
            candidate=_served(candidate, threshold),
            steps=list(steps if strategy == "canary" else steps[:1]),
            step=step,
            share=share,
            lines=list(lines),
            min_inspections=0,
            min_step_seconds=0.0,
            actor="registry",
            reason="test",
            sequence=sequence,
        ),
        producer="registry",
    )


def _served(version: int, threshold: float) -> ServedVersion:
    return ServedVersion(
        version=version,
        triton_model=MODEL,
        threshold=threshold,
        model_kind=ModelKind.SUPERVISED,
        frame_size=FRAME_SIZE,
    )
