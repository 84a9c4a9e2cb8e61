"""The event bus every service stands on: FastStream's KafkaBroker with ScrewOps' delivery rules.

A consumer registered with :meth:`Bus.consumer` gets, around its plain ``async def on_<event>``:

* tracing: W3C trace context travels in Kafka headers (FastStream's telemetry middleware), so a
  consumer's span is a child of the producer's and the handler's publishes are its children;
* at-least-once: the offset is committed only after the handler returned, and the handler's own
  publishes are awaited inside it, so a crash at any point means redelivery, never loss;
* idempotency: a processed-events record per (consumer, event_id) skips redelivered events;
* retries: transient failures (a server briefly down) are retried with exponential backoff and
  jitter (tenacity), each step (the processed-events check, the handler, the record) on its own
  budget, counted from its first failure;
* dead letters: a message that does not parse, or whose check, handler or record fails
  permanently or exhausts its retries, goes to ``<topic>.dlq`` with the reason and the original
  bytes and headers, and the consumer moves on; a body whose dead letter would exceed the
  producer's limit (``kafka.max_request_bytes``) is kept in the object store instead and the
  record points to it (see :mod:`screwops_bus.deadletter`);
* redelivery backoff: a message whose error leaves the consumer after all (its dead letter refused
  by Kafka) is held, with the retries' exponential backoff and jitter, before FastStream nacks it
  and it comes again, so a consumer does not spin on it while Kafka is away;
* graceful shutdown: on stop, FastStream lets in-flight handlers finish (``graceful_timeout``);
  a handler cancelled mid-way commits nothing and its event is delivered again;
* metrics: events finished per outcome (processed, duplicate, dead-lettered; each label set
  exported at 0 from registration, so a dead-letter series exists before the first dead letter),
  transient failures retried, handler duration, events published per topic, and each consumer's
  lag per partition (see :meth:`Bus.sample_lag`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
)
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.security import BaseSecurity, SASLScram512
from motor.motor_asyncio import AsyncIOMotorDatabase
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.trace import TracerProvider
from pydantic import BaseModel, ValidationError
from pymongo.errors import AutoReconnect, ConnectionFailure, NetworkTimeout
from screwops_contracts import Event, dlq_topic
from screwops_errors import PermanentError, TransientError
from screwops_settings import KafkaSettings, StackSettings, kafka_client_options
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from screwops_bus.deadletter import (
    RECORD_MARGIN_BYTES,
    BodyStore,
    DeadLetter,
    StoredBody,
    record_bytes,
)
from screwops_bus.idempotency import ProcessedEvents

M = TypeVar("M", bound=BaseModel)
P = TypeVar("P", bound=BaseModel)
R = TypeVar("R")
# aiokafka's default: a handler may take up to five minutes before the next poll.
DEFAULT_MAX_POLL_INTERVAL_MS = 300_000
Handler = Callable[[M], Awaitable[None]]
OUTCOMES = ("processed", "duplicate", "dead_lettered")
"""How a consumer finishes an event: the ``outcome`` label of ``screwops_bus_events_total``."""
# Handler durations in seconds: most events take milliseconds, a training run takes minutes.
DURATION_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    600.0, 1800.0,
)  # fmt: skip
LAG_SAMPLE_SECONDS = 5.0
"""How often :meth:`Bus.run_lag_sampler` refreshes the lag gauge: Prometheus' scrape interval."""
# (consumer group, topic, partition)
_Partition = tuple[str, str, int]

log = logging.getLogger("screwops.bus")

_TRANSIENT = (
    TransientError,
    ConnectionError,
    TimeoutError,
    AutoReconnect,
    ConnectionFailure,
    NetworkTimeout,
    KafkaConnectionError,
    KafkaTimeoutError,
)


def is_transient(error: BaseException) -> bool:
    """Whether retrying may help: a server did not answer, as opposed to bad input or a bug."""
    if isinstance(error, PermanentError):
        return False
    if isinstance(error, _TRANSIENT):
        return True
    # aiokafka marks the errors a retry can cure (a topic's leader not elected yet right after a
    # broker restart: UnknownTopicOrPartition, NotLeaderForPartition...) as retriable.
    if isinstance(error, KafkaError) and error.retriable:
        return True
    # urllib3 (under the MinIO client) wraps refused connections in its own hierarchy.
    return type(error).__module__.startswith("urllib3") and "Error" in type(error).__name__


def broker_security(kafka: KafkaSettings) -> BaseSecurity | None:
    """FastStream's form of :func:`screwops_settings.kafka_client_options`: the same principal,
    password and SSL context as every other Kafka client of ScrewOps."""
    options = kafka_client_options(kafka)
    if options["security_protocol"] == "PLAINTEXT":
        return None
    return SASLScram512(
        username=str(options["sasl_plain_username"]),
        password=str(options["sasl_plain_password"]),
        ssl_context=options["ssl_context"],  # type: ignore[arg-type]
        use_ssl=True,
    )


def _event_identity(event: BaseModel) -> str:
    return str(event.event_id) if isinstance(event, Event) else ""


class StopAfterFailingFor(stop_base):
    """Stop once a call has kept failing for ``max_seconds``, counted from its first failure.

    Tenacity's ``stop_after_delay`` counts from the first attempt's start, so a handler that works
    for minutes (a training run, a Triton load) and then meets a storage blip would have spent its
    whole budget before it failed once, and be dead-lettered without a single retry.
    """

    def __init__(self, max_seconds: float) -> None:
        self.max_seconds = max_seconds
        # Per call, so one controller may serve several calls.
        self._first_failure: WeakKeyDictionary[RetryCallState, float] = WeakKeyDictionary()

    def __call__(self, retry_state: RetryCallState) -> bool:
        failed_at = retry_state.outcome_timestamp
        if failed_at is None:
            raise RuntimeError("asked whether to stop before an attempt finished")
        first = self._first_failure.setdefault(retry_state, failed_at)
        return failed_at - first >= self.max_seconds


@dataclass(frozen=True)
class RetryPolicy:
    """How long a transient failure is retried before the event is dead-lettered.

    The budget starts at a call's first failure, not when the call began, so a long handler gets
    the same retries as a short one. The defaults ride out a server restart of tens of seconds
    (the reliability scenarios stop Kafka, MinIO or the database for 20 s).
    """

    max_seconds: float = 90.0
    max_attempts: int = 30
    initial_wait: float = 0.5
    max_wait: float = 8.0

    def retrying(self, on_retry: Callable[[RetryCallState], None]) -> AsyncRetrying:
        """A tenacity controller for one unit of work under this policy."""
        return AsyncRetrying(
            retry=retry_if_exception(is_transient),
            stop=StopAfterFailingFor(self.max_seconds) | stop_after_attempt(self.max_attempts),
            wait=self._wait(),
            before_sleep=on_retry,
            reraise=True,
        )

    def backoff(self, failures: int) -> float:
        """The wait after ``failures`` failures in a row, as between a step's attempts: a message
        about to be nacked for redelivery is held this long, so it does not come straight back."""
        wait = self._wait()
        state = RetryCallState(AsyncRetrying(wait=wait), fn=None, args=(), kwargs={})
        state.attempt_number = failures
        return wait(state)

    def _wait(self) -> wait_base:
        return wait_exponential_jitter(
            multiplier=self.initial_wait, max=self.max_wait, jitter=self.initial_wait
        )


class _Step(Enum):
    """A step of handling an event, by what its dead letter's reason says when it fails for good.

    The processed-events check and record are retried and dead-lettered like the handler because
    an error escaping the consumer is nacked and redelivered, again and again for as long as
    MongoDB keeps failing, holding up its partition.
    """

    CHECK = "processed-events check failed"
    HANDLER = "handler failed"
    # Replaying it is safe: handlers are idempotent (deterministic ids, events derived from their
    # cause), as they must be for a crash between the effects and the record.
    RECORD = (
        "handler ran, but recording the event as processed failed (a replay runs the handler "
        "again, which is idempotent)"
    )

    def reason(self, error: Exception, attempts: int) -> str:
        """The dead letter's reason for ``error``, after ``attempts`` attempts."""
        if not is_transient(error):
            return f"{self.value}: {error!r}"
        gave_up = f"gave up after {attempts} attempts: {error!r}"
        return gave_up if self is _Step.HANDLER else f"{self.value}: {gave_up}"


class _StepFailedError(Exception):
    """A step of handling an event failed for good: the event is to be dead-lettered."""

    def __init__(self, step: _Step, error: Exception, attempts: int) -> None:
        super().__init__(step, error, attempts)
        self.error = error
        self.attempts = attempts
        self.reason = step.reason(error, attempts)


class Bus:
    """One service's connection to the event bus: its consumers and its publisher."""

    def __init__(
        self,
        settings: StackSettings,
        *,
        service: str,
        db: AsyncIOMotorDatabase[Any],
        retry: RetryPolicy | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        graceful_timeout: float = 60.0,
        bodies: BodyStore | None = None,
    ) -> None:
        """``bodies`` keeps the bodies of dead letters too large for Kafka, in
        ``minio.dead_letter_bucket``; without it (unit tests) they are sent inline."""
        self.service = service
        self.retry = retry or RetryPolicy()
        self._db = db
        self._bodies = bodies
        self._bodies_bucket = settings.minio.dead_letter_bucket
        self._max_record_bytes = settings.kafka.max_request_bytes
        self.broker = KafkaBroker(
            settings.kafka.bootstrap_servers,
            security=broker_security(settings.kafka),
            # Topics come from the stack (a service may not create any: its ACLs allow only
            # reading and writing the catalogue's), never from a subscriber starting.
            allow_auto_create_topics=False,
            client_id=service,
            acks="all",
            enable_idempotence=True,
            max_request_size=settings.kafka.max_request_bytes,
            graceful_timeout=graceful_timeout,
            middlewares=[
                KafkaTelemetryMiddleware(
                    tracer_provider=tracer_provider, meter_provider=meter_provider
                )
            ],
            logger=logging.getLogger(f"screwops.{service}.faststream"),
        )
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("screwops.bus")
        self._outcomes = meter.create_counter(
            "screwops_bus_events",
            description="Events a consumer finished, by topic, consumer and outcome "
            "(processed, duplicate, dead_lettered).",
        )
        self._retries = meter.create_counter(
            "screwops_bus_retries", description="Transient failures retried, by topic and consumer."
        )
        self._duration = meter.create_histogram(
            "screwops_bus_handler_duration",
            unit="s",
            description="Time from receiving an event to committing it, by topic and consumer.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS_S),
        )
        self._published = meter.create_counter(
            "screwops_bus_published",
            description="Messages this service published, by topic (dead letters under "
            "<topic>.dlq).",
        )
        self._subscribers: list[tuple[str, Any]] = []
        self._in_flight: dict[_Partition, int] = {}
        # The offset nacked last on each partition, and how many times in a row.
        self._nacked: dict[_Partition, tuple[int, int]] = {}
        self._lag: dict[_Partition, int] = {}
        meter.create_observable_gauge(
            "screwops_bus_consumer_lag",
            callbacks=[self._observe_lag],
            description="Messages on a partition the consumer has not finished yet (the one in "
            "flight included), by topic, partition and consumer: the partition's last known "
            "end offset minus the consumer's.",
        )

    def consumer(
        self,
        model: type[M],
        *,
        group: str | None = None,
        topic: str | None = None,
        identity: Callable[[M], str] | None = None,
        max_poll_interval_ms: int = DEFAULT_MAX_POLL_INTERVAL_MS,
    ) -> Callable[[Handler[M]], Handler[M]]:
        """Register ``handler`` for messages of ``model`` in consumer group ``group``.

        ``model`` is an :class:`Event` (its topic and ``event_id`` are used) or, for messages
        from outside ScrewOps such as MinIO's bucket notifications, any Pydantic model with the
        ``topic`` and an ``identity`` that names the message for deduplication. The group
        defaults to the service, so instances of one service share the topic's partitions.
        Everything listed in the module docstring is done around the handler.

        A handler that may run longer than ``max_poll_interval_ms`` (a training run) raises it:
        the offset is committed only after the handler, so a consumer that polls later than that
        is dropped from its group and its commit refused.
        """
        consumer = group or self.service
        processed = ProcessedEvents(self._db, consumer)
        is_event = issubclass(model, Event)
        subscribed = topic or getattr(model, "TOPIC", None)
        if subscribed is None or (identity is None and not is_event):
            raise TypeError(f"{model.__name__} is not an Event: name its topic and identity")
        key = identity or _event_identity

        def register(handler: Handler[M]) -> Handler[M]:
            async def consume(message: KafkaMessage) -> None:
                await self._deliver(message, model, handler, processed, key)

            consume.__name__ = handler.__name__
            subscriber = self.broker.subscriber(
                subscribed,
                group_id=consumer,
                auto_offset_reset="earliest",
                ack_policy=AckPolicy.NACK_ON_ERROR,
                max_poll_interval_ms=max_poll_interval_ms,
                title=f"{consumer}:{subscribed}",
            )
            subscriber(consume)
            self._subscribers.append((consumer, subscriber))
            labels = {"topic": str(subscribed), "consumer": consumer}
            for outcome in OUTCOMES:
                self._outcomes.add(0, labels | {"outcome": outcome})
            self._retries.add(0, labels)
            return handler

        return register

    async def publish(self, event: Event[Any], *, topic: str | None = None) -> None:
        """Publish ``event`` to its topic (or ``topic``), keyed by its aggregate, and wait for
        the broker's ack.

        Awaiting the ack inside a handler is what makes the commit come after the publish.
        """
        destination = topic or event.TOPIC
        await self.broker.publish(
            event.model_dump_json().encode(),
            topic=destination,
            key=event.key,
            headers={"content-type": "application/json", "event-type": event.type},
            correlation_id=event.correlation_id,
        )
        self._published.add(1, {"topic": str(destination)})

    async def emit(self, event_type: type[Event[P]], payload: P, *, cause: Event[Any]) -> None:
        """Publish the event ``cause`` leads to, with an id derived from it (idempotent)."""
        await self.publish(event_type.caused_by(cause, payload, producer=self.service))

    async def _deliver(
        self,
        message: KafkaMessage,
        model: type[M],
        handler: Handler[M],
        processed: ProcessedEvents,
        identity: Callable[[M], str],
    ) -> None:
        record = message.raw_message
        topic = str(getattr(record, "topic", ""))
        where = (processed.consumer, topic, int(getattr(record, "partition", -1)))
        offset = int(getattr(record, "offset", -1))
        self._in_flight[where] = offset
        try:
            await self._handle(message, model, handler, processed, identity)
        except Exception:
            await self._back_off(where, offset)
            raise
        else:
            self._nacked.pop(where, None)
        finally:
            self._in_flight.pop(where, None)

    async def _back_off(self, where: _Partition, offset: int) -> None:
        """Hold a message whose error is about to leave the consumer, before FastStream nacks it.

        A nacked message comes straight back, and each turn runs the processed-events check and
        maybe the handler again: without a wait the consumer would spin on it for as long as Kafka
        refuses its dead letter. The wait grows with the offset's failures in a row like a
        retry's, up to the policy's ``max_wait``, and starts over once the partition moves on. A
        shutdown that cancels the consumer ends it at once.
        """
        last, failures = self._nacked.get(where, (offset, 0))
        failures = failures + 1 if last == offset else 1
        self._nacked[where] = (offset, failures)
        wait = self.retry.backoff(failures)
        group, topic, partition = where
        log.warning(
            "%s: %s[%d]@%d failed %d time(s) in a row; delivering it again in %.1f s",
            group,
            topic,
            partition,
            offset,
            failures,
            wait,
        )
        await asyncio.sleep(wait)

    async def _handle(
        self,
        message: KafkaMessage,
        model: type[M],
        handler: Handler[M],
        processed: ProcessedEvents,
        identity: Callable[[M], str],
    ) -> None:
        began = time.perf_counter()
        record = message.raw_message
        topic = str(getattr(record, "topic", ""))
        labels = {"topic": topic, "consumer": processed.consumer}
        try:
            event = model.model_validate_json(message.body)
        except ValidationError as exc:
            reason = f"malformed event: {exc.error_count()} validation error(s): {exc}"
            await self._dead_letter(message, processed.consumer, exc, reason=reason, attempts=0)
            self._finish(labels, "dead_lettered", began)
            return

        event_id = identity(event)

        def on_retry(state: RetryCallState) -> None:
            self._retries.add(1, labels)
            log.warning(
                "retrying %s %s (attempt %d): %r",
                topic,
                event_id,
                state.attempt_number,
                state.outcome.exception() if state.outcome else None,
            )

        try:
            if await self._retried(_Step.CHECK, on_retry, processed.seen, event_id):
                log.info("skipping %s %s: already processed", topic, event_id)
                self._finish(labels, "duplicate", began)
                return
            await self._retried(_Step.HANDLER, on_retry, handler, event)
            await self._retried(_Step.RECORD, on_retry, processed.record, event_id, topic=topic)
        except _StepFailedError as failed:  # dead-lettered with its reason, never lost
            await self._dead_letter(
                message,
                processed.consumer,
                failed.error,
                reason=failed.reason,
                attempts=failed.attempts,
            )
            self._finish(labels, "dead_lettered", began)
            return
        self._finish(labels, "processed", began)

    async def _retried(
        self,
        step: _Step,
        on_retry: Callable[[RetryCallState], None],
        work: Callable[..., Awaitable[R]],
        *args: Any,
        **kwargs: Any,
    ) -> R:
        """Run one step under a retry budget of its own, so a slow handler leaves the record its
        full budget; :class:`_StepFailedError` when the step fails for good."""
        retrying = self.retry.retrying(on_retry)
        try:
            result: R = await retrying(work, *args, **kwargs)
        except Exception as exc:
            attempts = int(retrying.statistics.get("attempt_number", 1))
            raise _StepFailedError(step, exc, attempts) from exc
        return result

    def _finish(self, labels: dict[str, str], outcome: str, began: float) -> None:
        self._outcomes.add(1, labels | {"outcome": outcome})
        self._duration.record(time.perf_counter() - began, labels)

    async def _dead_letter(
        self, message: KafkaMessage, consumer: str, error: Exception, *, reason: str, attempts: int
    ) -> None:
        record = message.raw_message
        topic = str(getattr(record, "topic", ""))
        key = getattr(record, "key", None)
        letter = DeadLetter(
            reason=reason,
            error_type=type(error).__name__,
            consumer=consumer,
            topic=topic,
            partition=int(getattr(record, "partition", -1)),
            offset=int(getattr(record, "offset", -1)),
            attempts=attempts,
            failed_at=datetime.now(UTC),
        )
        log.error("dead-lettering %s@%d: %s", topic, letter.offset, reason)
        body = message.body
        headers = letter.headers(dict(message.headers))
        # If storing the body or this publish fails the exception propagates: after a backoff
        # FastStream nacks, nothing is committed, and the message is delivered again rather
        # than lost.
        bodies = self._bodies
        if bodies is not None and (
            record_bytes(key, body, headers) > self._max_record_bytes - RECORD_MARGIN_BYTES
        ):
            stored = await _store_body(bodies, self._bodies_bucket, body, letter)
            body, headers = stored.placeholder(), headers | stored.headers()
        await self.broker.publish(body, topic=dlq_topic(topic), key=key, headers=headers)
        self._published.add(1, {"topic": dlq_topic(topic)})

    # --- consumer lag ---------------------------------------------------------------------------

    async def sample_lag(self) -> dict[_Partition, int]:
        """Measure every consumer's lag on each partition assigned to it, for the gauge.

        The lag is the partition's end offset (the offset the next message will get) minus the
        offset of the consumer's message in flight, or of the next one it will take when idle:
        the messages not yet committed, which is what ``kafka-consumer-groups`` shows. The end
        offsets are one ListOffsets request per consumer (the high-water mark a consumer learns
        from its fetches stands still while its handler is busy, which is when lag matters); the
        positions are the consumer's own state. A partition whose position is not known yet (the
        group still settling) is left out.
        """
        lag: dict[_Partition, int] = {}
        for group, subscriber in self._subscribers:
            consumer: AIOKafkaConsumer | None = getattr(subscriber, "consumer", None)
            if consumer is None or not (assigned := consumer.assignment()):
                continue
            try:
                ends = await asyncio.wait_for(consumer.end_offsets(list(assigned)), timeout=5.0)
            except (KafkaError, TimeoutError) as exc:
                log.warning("could not read end offsets for %s: %r", group, exc)
                continue
            for tp, end in ends.items():
                position = await _position(consumer, tp)
                if position is None:
                    continue
                where = (group, tp.topic, tp.partition)
                lag[where] = max(int(end) - self._in_flight.get(where, position), 0)
        self._lag = lag
        return lag

    async def run_lag_sampler(self, every: float = LAG_SAMPLE_SECONDS) -> None:
        """Refresh the lag gauge every ``every`` seconds until cancelled (the runtime starts it
        once the consumers run)."""
        while True:
            try:
                await self.sample_lag()
            except Exception:  # a metric must never take the service down
                log.exception("could not sample consumer lag")
            await asyncio.sleep(every)

    def _observe_lag(self, options: CallbackOptions) -> Iterable[Observation]:
        # Called from the Prometheus scrape thread: read the last sample, never the consumers.
        return [
            Observation(value, {"consumer": group, "topic": topic, "partition": str(partition)})
            for (group, topic, partition), value in self._lag.items()
        ]


async def _position(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """The consumer's position on ``tp``: local state once known, None while the group settles
    (or the partition was revoked meanwhile)."""
    with contextlib.suppress(IllegalStateError, TimeoutError):
        return int(await asyncio.wait_for(consumer.position(tp), timeout=1.0))
    return None


async def _store_body(
    bodies: BodyStore, bucket: str, body: bytes, letter: DeadLetter
) -> StoredBody:
    """Keep the body of a dead letter Kafka would refuse in ``bucket``: a record refused for its
    size is refused on every redelivery, and its partition would never move again."""
    stored = StoredBody.of(
        body, bucket=bucket, topic=letter.topic, partition=letter.partition, offset=letter.offset
    )
    await bodies.put_named(stored.bucket, stored.key, body)
    log.warning(
        "%s@%d: a %d-byte body does not fit its dead letter; kept in %s",
        letter.topic,
        letter.offset,
        stored.size,
        stored.ref,
    )
    return stored
