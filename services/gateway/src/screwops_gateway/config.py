"""The gateway's settings (env prefix ``SCREWOPS_GATEWAY_``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict
from screwops_contracts.models import MODEL_NAME
from screwops_imaging import DEFAULT_MAX_BYTES
from screwops_settings import ApiSettings
from screwops_settings.services import GATEWAY

if TYPE_CHECKING:
    from screwops_contracts import InspectionCompleted

# An image is sampled by its inspection id: the id modulo this, against the rate times this.
_SAMPLE_SCALE = 10_000


@dataclass(frozen=True)
class LogPolicy:
    """How much the prediction log may hold and which images it keeps."""

    queue_size: int = 10_000
    queue_bytes: int = 256 * 1024 * 1024
    concurrency: int = 8
    image_sample_rate: float = 0.05
    low_confidence_band: float = 0.15
    image_retention_days: int | None = 30
    """Days a stored image is kept in the inspections bucket; None: for ever."""

    def keeps_image(self, event: InspectionCompleted) -> bool:
        """Whether the inspection's image is worth storing: sampled, or close to the threshold."""
        payload = event.payload
        if abs(payload.defect_probability - payload.threshold) < self.low_confidence_band:
            return True
        return event.event_id.int % _SAMPLE_SCALE < self.image_sample_rate * _SAMPLE_SCALE


@dataclass(frozen=True)
class LineLabels:
    """Which production lines get their own series in the metrics; the rest count as
    ``other``. Every distinct label value is a series Prometheus keeps, and ``line_id`` is
    whatever a client sends, so without a bound one client could create millions."""

    known: tuple[str, ...] = ()
    """The lines named in the metrics; empty: the first ``most`` lines seen."""
    most: int = 32


@dataclass(frozen=True)
class Policy:
    """The limits and timings an operator sets (see ``GatewaySettings``), the prediction log's
    among them, so one object carries every rule of the gateway."""

    model_name: str
    max_image_bytes: int
    min_image_side: int = 32
    max_image_side: int = 4096
    triton_timeout_s: float = 2.0
    switch_timeout_s: float = 60.0
    state_refresh_s: float = 5.0
    stream_window: int = 8
    decode_workers: int = 2
    decode_queue: int = 64
    batch_max_size: int = 32
    batch_max_wait_s: float = 0.01
    off_path_limit: int = 64
    log: LogPolicy = field(default_factory=LogPolicy)
    lines: LineLabels = field(default_factory=LineLabels)


class GatewaySettings(ApiSettings):
    """What an operator may tune in the gateway.

    Not the decision threshold: each model version brings its own, chosen on validation data
    and judged by the evaluator (see ``screwops_gateway.service``).
    """

    model_config = SettingsConfigDict(
        env_prefix=GATEWAY.env_prefix, env_nested_delimiter="__", hide_input_in_errors=True
    )

    service_name: str = GATEWAY.name
    metrics_port: int = Field(GATEWAY.metrics_port, ge=1, le=65535)
    grpc_port: int = Field(GATEWAY.grpc_port, ge=1, le=65535)

    model_name: str = Field(
        MODEL_NAME,
        description="The registered model this gateway serves; events about others are ignored.",
    )
    max_image_bytes: int = Field(
        DEFAULT_MAX_BYTES, ge=1, description="Larger images are refused with INVALID_ARGUMENT."
    )
    min_image_side: int = Field(
        32, ge=1, description="Narrower or shorter images are refused: too few pixels to judge."
    )
    max_image_side: int = Field(
        4096, ge=1, description="Wider or taller images are refused before they are decoded."
    )

    triton_timeout_s: float = Field(
        2.0,
        gt=0,
        description="The longest a Triton call may take when the client's deadline is later "
        "(or absent); past it the client gets UNAVAILABLE instead of waiting.",
    )
    switch_timeout_s: float = Field(
        60.0,
        gt=0,
        description="How long a model.deployed or model.rolled_back waits for its version to be "
        "ready in Triton before the event is retried.",
    )
    state_refresh_s: float = Field(
        5.0,
        gt=0,
        description="How often the production version is re-read from the database, so every "
        "instance follows a switch that another instance's consumer made.",
    )

    log_queue_size: int = Field(
        10_000,
        ge=1,
        description="inspection.completed events waiting to be published; past it they are "
        "dropped and counted, never delaying a response.",
    )
    log_queue_bytes: int = Field(
        256 * 1024 * 1024,
        ge=0,
        description="Image bytes the prediction log may hold for storing; past it images are "
        "dropped (and counted) while their events still go out.",
    )
    log_concurrency: int = Field(
        8, ge=1, description="Events published (and images stored) at once."
    )
    image_sample_rate: float = Field(
        0.05, ge=0, le=1, description="Share of inspections whose image is stored regardless."
    )
    low_confidence_band: float = Field(
        0.15,
        ge=0,
        le=1,
        description="An inspection whose probability lies closer than this to the threshold "
        "has its image stored, for review.",
    )
    inspection_retention_days: int = Field(
        30,
        ge=0,
        description="Days MinIO keeps a stored inspection image (a lifecycle rule on the "
        "inspections bucket, set at start-up); 0 keeps them for ever. At least labeling's "
        "review_retention_days, so a queued review still finds its image.",
    )
    stream_window: int = Field(
        8,
        ge=1,
        description="Frames of one InspectStream in flight at once; the next frame is read only "
        "when one is answered, so a fast camera is slowed by flow control, not queued.",
    )

    decode_workers: int = Field(
        2,
        ge=1,
        description="Threads that decode images and fit them to the model's frame, off the event "
        "loop (a small PNG can declare 16 megapixels and take 100 ms to decode). At most the "
        "gateway's cores less one: more busy threads than cores delay the event loop itself.",
    )
    decode_queue: int = Field(
        64,
        ge=0,
        description="Images that may wait for a decode thread; past it an inspection is "
        "refused with RESOURCE_EXHAUSTED at once instead of queueing without end.",
    )
    batch_max_size: int = Field(
        32,
        ge=1,
        description="Most frames the gateway sends Triton in one request. Frames arriving while "
        "a request of their model version is in flight wait and go together in the next one; "
        "a frame arriving when none is in flight goes at once. At most the model's "
        "max_batch_size in Triton (the registry's SCREWOPS_REGISTRY_MAX_BATCH_SIZE, 32), which "
        "refuses a larger batch (then retried one frame at a time). 1 turns batching off.",
    )
    batch_max_wait_ms: float = Field(
        10.0,
        ge=0,
        description="Longest a frame waits for the request in flight before it goes in a "
        "request of its own beside it, so one slow Triton call does not hold the line; 0 sends "
        "every frame at once, turning batching off.",
    )
    off_path_limit: int = Field(
        64,
        ge=0,
        description="Off-path scores of a rollout (production beside a canary's answer, a "
        "shadow beside production's) in flight at once; past it the next one is dropped and "
        "counted, so a slow candidate cannot pile up work. 0 computes none.",
    )
    max_concurrent_rpcs: int | None = Field(
        256,
        ge=1,
        description="Calls the gRPC server runs at once; past it a new call is refused with "
        "RESOURCE_EXHAUSTED (null: no limit). A stream counts as one call however many frames "
        "it carries.",
    )
    max_concurrent_streams: int | None = Field(
        None,
        ge=1,
        description="HTTP/2 streams one client connection may have open at once "
        "(grpc.max_concurrent_streams; null: gRPC's own, no limit). Off by default: the "
        "server seems to count a stream it answered with an error until the client has closed "
        "its side, so under a flood of bad images a cap of 100 refused valid calls "
        "(REFUSED_STREAM, seen as UNAVAILABLE) at 32 calls in flight; max_concurrent_rpcs "
        "bounds the work instead.",
    )
    max_connection_age_s: float | None = Field(
        None,
        gt=0,
        description="Age at which the server closes a client connection (gRPC's "
        "grpc.max_connection_age_ms, a GOAWAY: calls and streams in flight finish, the next call "
        "connects again), so clients balancing round-robin over a headless Service resolve it "
        "again and reach instances the autoscaler added; null keeps connections for ever, as "
        "one gateway needs. Kubernetes sets 300.",
    )

    metric_lines: tuple[str, ...] = Field(
        (),
        description="Production lines named in the gateway's metrics (a JSON list); verdicts "
        "of other lines are counted under line_id 'other'. Empty: the first metric_max_lines "
        "lines this instance sees are named, later ones are 'other'.",
    )
    metric_max_lines: int = Field(
        32,
        ge=1,
        description="With metric_lines empty, how many distinct lines the metrics name before "
        "counting the rest as 'other'.",
    )

    @model_validator(mode="after")
    def _image_sides_agree(self) -> Self:
        if self.min_image_side > self.max_image_side:
            raise ValueError("min_image_side must not exceed max_image_side")
        return self

    def rules(self) -> Policy:
        """The limits and timings the service takes, so it never sees connection settings."""
        return Policy(
            model_name=self.model_name,
            max_image_bytes=self.max_image_bytes,
            min_image_side=self.min_image_side,
            max_image_side=self.max_image_side,
            triton_timeout_s=self.triton_timeout_s,
            switch_timeout_s=self.switch_timeout_s,
            state_refresh_s=self.state_refresh_s,
            stream_window=self.stream_window,
            decode_workers=self.decode_workers,
            decode_queue=self.decode_queue,
            batch_max_size=self.batch_max_size,
            batch_max_wait_s=self.batch_max_wait_ms / 1000,
            off_path_limit=self.off_path_limit,
            log=LogPolicy(
                queue_size=self.log_queue_size,
                queue_bytes=self.log_queue_bytes,
                concurrency=self.log_concurrency,
                image_sample_rate=self.image_sample_rate,
                low_confidence_band=self.low_confidence_band,
                image_retention_days=self.inspection_retention_days or None,
            ),
            lines=LineLabels(known=self.metric_lines, most=self.metric_max_lines),
        )
