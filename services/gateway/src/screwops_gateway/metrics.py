"""The gateway's metrics, in one place so every name and label is declared once.

Prometheus sees them with the usual suffixes (``_total`` for counters, ``_bucket``/``_sum``/
``_count`` for the histogram). Every request is counted once, with the status it ended in, whether
the core, the authentication interceptor or a deadline ended it.
"""

from __future__ import annotations

from opentelemetry import metrics
from opentelemetry.metrics import Meter, MeterProvider

from screwops_gateway.config import LineLabels
from screwops_gateway.routing import Role

# Latency buckets in seconds: an inspection takes milliseconds, a deadline ends it within seconds.
LATENCY_BUCKETS_S = (
    0.001,
    0.002,
    0.004,
    0.006,
    0.008,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
# Frames per Triton request (the batcher's max_size is at most Triton's max_batch_size, 32 by
# default) and seconds a frame waited for its request: 0 when the lane was idle, at most about a
# Triton call (or max_wait) when it was busy.
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
QUEUE_WAIT_BUCKETS_S = (0.0001, 0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.025, 0.05)
# What an inspection can end in (gRPC status names), and why the prediction log drops: each is
# exported at 0 from the start, so an error rate, a drop count or an alert reads 0 rather than
# nothing before the first one of a kind.
STATUSES = (
    "OK",
    "INVALID_ARGUMENT",
    "UNAUTHENTICATED",
    "NOT_FOUND",
    "FAILED_PRECONDITION",
    "UNAVAILABLE",
    "RESOURCE_EXHAUSTED",
    "DEADLINE_EXCEEDED",
    "CANCELLED",
    "INTERNAL",
)
LOG_DROP_REASONS = ("queue_full", "publish_failed", "shutdown")
IMAGE_DROP_REASONS = ("queue_bytes", "store_failed")
NO_PART = "no_part"
UNJUDGED_REASONS = (NO_PART,)
# How a model call ended (a verdict's probability, no screw found, or an error of any kind, the
# caller's deadline included) and where it was made: answering the request, or beside it.
ANSWERED = "answered"
FAILED = "failed"
RESPONSE = "response"
OFF_PATH = "off_path"
# Why off-path work was not done: too much already in flight, or no decode thread free to fit
# the image to the other version's frame.
OFF_PATH_FULL = "full"
OFF_PATH_DECODE_BUSY = "decode_busy"
OFF_PATH_DROP_REASONS = (OFF_PATH_FULL, OFF_PATH_DECODE_BUSY)
# How far apart the candidate's and production's probabilities on one image lie (an
# OpenTelemetry histogram takes no negative values, so the distance, not the signed difference).
SCORE_DIFFERENCE_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
OTHER = "other"
"""The label value of every line the metrics do not name (:class:`LineLabels`)."""


class GatewayMetrics:
    """Requests, latency, verdicts, errors and what the prediction log had to drop."""

    def __init__(
        self, meter_provider: MeterProvider | None = None, *, lines: LineLabels | None = None
    ) -> None:
        self._lines = lines or LineLabels()
        self._named: set[str] = set(self._lines.known)
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("screwops.gateway")
        self._requests = meter.create_counter(
            "screwops_gateway_requests",
            description="Inspections answered or refused, by gRPC status.",
        )
        self._latency = meter.create_histogram(
            "screwops_gateway_request_duration",
            unit="s",
            description="Time from an inspection's arrival to its answer, by gRPC status.",
            explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS_S),
        )
        self._verdicts = meter.create_counter(
            "screwops_gateway_verdicts",
            description="Verdicts, by model version, verdict and production line.",
        )
        self._errors = meter.create_counter(
            "screwops_gateway_errors",
            description="Inspections that ended in an error, by gRPC status.",
        )
        self._log_dropped = meter.create_counter(
            "screwops_gateway_prediction_log_dropped",
            description="inspection.completed events not published, by reason "
            "(queue_full, publish_failed, shutdown).",
        )
        self._images_dropped = meter.create_counter(
            "screwops_gateway_inspection_images_dropped",
            description="Images meant for storage that were not stored, by reason "
            "(queue_bytes, store_failed).",
        )
        self._log_published = meter.create_counter(
            "screwops_gateway_prediction_log_published",
            description="inspection.completed events published, by whether an image was stored.",
        )
        self._unjudged = meter.create_counter(
            "screwops_gateway_unjudged_frames",
            description="Frames answered without a verdict although the model answered, by "
            "reason (no_part: the model found no screw in the frame).",
        )
        self._switches = meter.create_counter(
            "screwops_gateway_model_switches",
            description="Production versions adopted, by model, version and how "
            "(event or refresh).",
        )
        self._batch_size = meter.create_histogram(
            "screwops_gateway_batch_size",
            unit="{frame}",
            description="Frames per Triton request the gateway sent (its micro-batches; a batch "
            "retried one frame at a time counts each retry).",
            explicit_bucket_boundaries_advisory=list(BATCH_SIZE_BUCKETS),
        )
        self._queue_wait = meter.create_histogram(
            "screwops_gateway_batch_queue_wait",
            unit="s",
            description="Time a frame waited in the batcher for its Triton request to be sent.",
            explicit_bucket_boundaries_advisory=list(QUEUE_WAIT_BUCKETS_S),
        )
        self._rollout_instruments(meter)
        for status in STATUSES:
            self._requests.add(0, {"status": status})
            if status != "OK":
                self._errors.add(0, {"status": status})
        for reason in LOG_DROP_REASONS:
            self._log_dropped.add(0, {"reason": reason})
        for reason in IMAGE_DROP_REASONS:
            self._images_dropped.add(0, {"reason": reason})
        for reason in UNJUDGED_REASONS:
            self._unjudged.add(0, {"reason": reason})

    def _rollout_instruments(self, meter: Meter) -> None:
        """The series a rollout's two sides are compared by (kept apart from ``__init__`` so
        each stays readable)."""
        self._model_calls = meter.create_counter(
            "screwops_gateway_model_calls",
            description="Scores asked of a model version, by version, role (production, canary, "
            "shadow), path (response: it answered the request; off_path: it scored the image "
            "beside, for a rollout's comparison) and outcome (answered, no_part, failed).",
        )
        self._model_call_latency = meter.create_histogram(
            "screwops_gateway_model_call_duration",
            unit="s",
            description="Time a model version took to score one frame, batching included, by "
            "version, role and path.",
            explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS_S),
        )
        self._agreement = meter.create_counter(
            "screwops_gateway_rollout_agreement",
            description="Images both sides of a rollout scored, by the candidate's version and "
            "role (canary, shadow) and whether their verdicts, each at its own threshold, agree.",
        )
        self._score_difference = meter.create_histogram(
            "screwops_gateway_rollout_score_difference",
            description="How far the candidate's defect probability lies from production's on "
            "the same image (the absolute difference), by the candidate's version and role.",
            explicit_bucket_boundaries_advisory=list(SCORE_DIFFERENCE_BUCKETS),
        )
        self._off_path_dropped = meter.create_counter(
            "screwops_gateway_off_path_dropped",
            description="Off-path scores not computed, by the role that would have scored and "
            "reason (full: the off-path limit was reached; decode_busy: no decode thread was "
            "free to fit the image to that version's frame).",
        )
        for role in (Role.PRODUCTION, Role.SHADOW):
            for reason in OFF_PATH_DROP_REASONS:
                self._off_path_dropped.add(0, {"role": role, "reason": reason})

    def finished(self, status: str, seconds: float) -> None:
        """Count one inspection that ended with ``status`` (a gRPC status name)."""
        labels = {"status": status}
        self._requests.add(1, labels)
        self._latency.record(seconds, labels)
        if status != "OK":
            self._errors.add(1, labels)

    def refused(self, seconds: float) -> None:
        """Count one inspection refused for its credentials, so attempts without a valid token
        show on the error panel like any other failed call."""
        self.finished("UNAUTHENTICATED", seconds)

    def verdict(self, model_name: str, model_version: int, verdict: str, line_id: str) -> None:
        """Count one verdict, so the share of defects can be watched per version and line."""
        self._verdicts.add(
            1,
            {
                "model_name": model_name,
                "model_version": str(model_version),
                "verdict": verdict,
                "line_id": self._line(line_id),
            },
        )

    def batched(self, frames: int) -> None:
        """Record one Triton request of ``frames`` frames: its mean shows what batching gains."""
        self._batch_size.record(frames)

    def queued(self, seconds: float) -> None:
        """Record how long one frame waited in the batcher: the latency batching adds."""
        self._queue_wait.record(seconds)

    def unjudged(self, reason: str) -> None:
        """Count a frame the model answered but no verdict was given for: a line whose camera
        sees no screw in many frames shows here, not as a run of GOOD verdicts."""
        self._unjudged.add(1, {"reason": reason})

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
        """Count one score asked of a version and how long it took: a canary's error rate and
        latency are compared with production's from these."""
        labels = {
            "model_name": model_name,
            "model_version": str(model_version),
            "role": role,
            "path": path,
        }
        self._model_calls.add(1, labels | {"outcome": outcome})
        self._model_call_latency.record(seconds, labels)

    def compared(
        self, model_name: str, candidate_version: int, role: str, *, agree: bool, difference: float
    ) -> None:
        """Count one image both sides of a rollout scored: whether the verdicts agree, and how
        far apart their probabilities lie."""
        labels = {"model_name": model_name, "model_version": str(candidate_version), "role": role}
        self._agreement.add(1, labels | {"agreement": "agree" if agree else "disagree"})
        self._score_difference.record(abs(difference), labels)

    def off_path_dropped(self, role: str, reason: str) -> None:
        """Count an off-path score given up: shedding it keeps a slow version from piling up
        work, and is never silent."""
        self._off_path_dropped.add(1, {"role": role, "reason": reason})

    def _line(self, line_id: str) -> str:
        """``line_id`` if the metrics name it (listed, or among the first lines seen), else
        ``other``."""
        if line_id in self._named:
            return line_id
        if self._lines.known or len(self._named) >= self._lines.most:
            return OTHER
        self._named.add(line_id)
        return line_id

    def log_dropped(self, reason: str, count: int = 1) -> None:
        """Count prediction-log events lost under pressure: dropping is never silent."""
        self._log_dropped.add(count, {"reason": reason})

    def image_dropped(self, reason: str) -> None:
        """Count an image that should have been stored and was not."""
        self._images_dropped.add(1, {"reason": reason})

    def log_published(self, *, with_image: bool) -> None:
        """Count a published inspection.completed."""
        self._log_published.add(1, {"image": "stored" if with_image else "none"})

    def switched(self, model_name: str, model_version: int, how: str) -> None:
        """Count a production version adopted by this instance."""
        self._switches.add(
            1, {"model_name": model_name, "model_version": str(model_version), "how": how}
        )
