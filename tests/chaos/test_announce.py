"""Nothing written goes unannounced, and a storage blip late in a long handler is retried (issue
18, findings 1, 2, 3 and 6), on the real stack with the supervised services.

For ingestion, labeling and the registry, Kafka is taken away (SIGKILL) between the state change
and its announcement: the gRPC call that writes is made while the broker is down, so its publish
is refused, and the call must still answer with the change made and its event left pending in
the changed document's outbox. Kafka is then started again, and the service's outbox relay, not a
restart, announces it: every service keeps the pid it had before the outage. Before the outbox,
the event was sent again only at the service's next start, and the pipeline stalled.

For the trainer, MinIO is taken away during a training run, so the run's artifacts cannot be
written when it ends, and stays away until the handler has run longer than the whole retry
budget (what the old budget, counted from the handler's start, allowed); the handler's retry,
whose budget starts at its first failure, trains again once MinIO is back and the run deploys.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from screwops.v1 import (
    ingestion_pb2,
    ingestion_pb2_grpc,
    labeling_pb2,
    labeling_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from screwops_bus.outbox import PENDING
from screwops_contracts import Event, Topic, parse_event
from screwops_contracts.models import MODEL_NAME
from screwops_contracts.runs import RUNS
from screwops_rpc import open_aio_channel
from screwops_settings import StackSettings, kafka_client_options
from screwops_stack import processes, supervisor
from screwops_stack.servers import Layout
from screwops_storage import Document, database

from tests.chaos.conftest import crash_server, restart_server
from tests.chaos.pipeline import RUN_WITHIN_S, deployed_once, run_pipeline, served
from tests.e2e.conftest import PIPELINE
from tests.support import eventually, png, unique

INGESTION = "127.0.0.1:50052"
LABELING = "127.0.0.1:50053"
REGISTRY = "127.0.0.1:50054"
# A call made while Kafka is down gives its publish up after PUBLISH_NOW_S (5 s); a promotion
# may load its version into Triton first.
CALL_TIMEOUT_S = 60.0
# After Kafka is back: its consumers rejoin their groups, the relay's backoff ends, and the next
# hop handles the event.
ARRIVES_WITHIN_S = 180.0
# The bus's retry budget (RetryPolicy.max_seconds): the trainer's MinIO outage outlasts it,
# counted from the handler's start, so the old budget would have dead-lettered the run.
RETRY_BUDGET_S = 90.0


def service_pids(settings: StackSettings) -> dict[str, int]:
    """The supervised pipeline services' pids, by name."""
    keeper = processes.find(supervisor.pidfile(settings))
    assert keeper is not None, "the supervisor is not running"
    pids: dict[str, int] = {}
    for child in keeper.children():
        command = " ".join(child.cmdline()[1:3])
        pids.update({name: child.pid for name in PIPELINE if f"screwops_{name}" in command})
    return pids


@dataclass
class Outage:
    """The services' pids when Kafka went away, and how long it was away once it is back."""

    pids: dict[str, int]
    seconds: float = 0.0


@asynccontextmanager
async def kafka_away(settings: StackSettings) -> AsyncIterator[Outage]:
    """Kafka SIGKILLed for the block, started again after it (whatever the block raised)."""
    outage = Outage(service_pids(settings))
    died = crash_server(settings, "kafka")
    try:
        yield outage
    finally:
        await asyncio.to_thread(restart_server, "kafka")
        outage.seconds = time.monotonic() - died


class Watcher:
    """A consumer of ``topics`` positioned at their ends before a scenario begins, so it sees
    only what the scenario causes; it rides out Kafka's outage and reads on afterwards."""

    def __init__(self, settings: StackSettings, *topics: Topic) -> None:
        self._consumer = AIOKafkaConsumer(
            *topics,
            **kafka_client_options(settings.kafka),
            auto_offset_reset="latest",
            enable_auto_commit=False,
        )
        self.seen: list[Event[Any]] = []

    async def start(self) -> None:
        await self._consumer.start()

        async def positioned() -> bool | None:
            return True if self._consumer.assignment() else None

        await eventually(positioned, within=30, what="the watcher's partitions")
        for partition in self._consumer.assignment():
            await self._consumer.position(partition)  # fixes "latest" before anything happens

    async def stop(self) -> None:
        await self._consumer.stop()

    async def first(self, match: Callable[[Event[Any]], bool], *, what: str) -> Event[Any]:
        """The first event (seen before or read now) that ``match`` accepts."""

        async def found() -> Event[Any] | None:
            hit = next((e for e in self.seen if match(e)), None)
            if hit is not None:
                return hit
            batch = await self._consumer.getmany(timeout_ms=500)
            for record in (r for records in batch.values() for r in records):
                event = parse_event(record.topic, record.value)
                if event is not None:
                    self.seen.append(event)
            return next((e for e in self.seen if match(e)), None)

        return await eventually(found, within=ARRIVES_WITHIN_S, what=what)


@asynccontextmanager
async def watching(settings: StackSettings, *topics: Topic) -> AsyncIterator[Watcher]:
    watcher = Watcher(settings, *topics)
    await watcher.start()
    try:
        yield watcher
    finally:
        await watcher.stop()


def of_dataset(dataset: str, *topics: Topic) -> Callable[[Event[Any]], bool]:
    """Matches an event of ``topics`` about ``dataset``."""
    return lambda e: e.TOPIC in topics and getattr(e.payload, "dataset_id", None) == dataset


async def document(settings: StackSettings, collection: str, document_id: str) -> Document:
    db = database(settings.mongo, appname="chaos")
    try:
        doc = await db[collection].find_one({"_id": document_id})
    finally:
        db.client.close()
    assert doc is not None, f"{collection}/{document_id} is missing"
    return doc


async def pending(settings: StackSettings, collection: str, document_id: str) -> None:
    """The document ``document_id`` holds an announcement the request could not publish."""
    doc = await document(settings, collection, document_id)
    assert doc.get(PENDING) is True, f"not flagged pending: {doc}"
    assert doc.get("outbox"), f"nothing pending in {doc}"


async def relayed(settings: StackSettings, collection: str, document_id: str) -> None:
    """Wait for the relay to have published what ``document_id`` owed and marked it sent."""

    async def sent() -> bool | None:
        doc = await document(settings, collection, document_id)
        return None if doc.get(PENDING) or doc.get("outbox") else True

    await eventually(sent, within=60, what=f"the relay emptying {collection}/{document_id}")


def upload(dataset: str, files: list[ingestion_pb2.UploadFile]) -> Iterator[Any]:
    yield ingestion_pb2.UploadRequest(header=ingestion_pb2.UploadHeader(dataset_id=dataset))
    yield from (ingestion_pb2.UploadRequest(file=f) for f in files)


def image(
    name: str, label: ingestion_pb2.Label.ValueType | None = None
) -> ingestion_pb2.UploadFile:
    """A small PNG never uploaded before, labeled ``label`` or unlabeled."""
    content = png(64, seed=secrets.randbelow(1 << 30))
    return ingestion_pb2.UploadFile(filename=name, content=content, label=label)


@pytest.mark.usefixtures("services")
@pytest.mark.timeout(600)
async def test_an_upload_while_kafka_is_down_is_announced_once_it_is_back() -> None:
    """Finding 1: ``dataset.ingested`` refused at the upload is relayed, and the dataset goes
    on through labeling to validation's verdict (four images: rejected, too few to train)."""
    settings = StackSettings()
    dataset = unique("chaos-announce-ingest")
    files = [image(f"good-{i}.png", ingestion_pb2.LABEL_GOOD) for i in range(4)]
    async with (
        watching(
            settings,
            Topic.DATASET_INGESTED,
            Topic.DATASET_LABELED,
            Topic.DATASET_VALIDATED,
            Topic.DATASET_REJECTED,
        ) as watcher,
        open_aio_channel(INGESTION) as channel,
    ):
        ingestion: Any = ingestion_pb2_grpc.IngestionServiceStub(channel)
        began = time.monotonic()
        async with kafka_away(settings) as outage:
            result = await ingestion.Upload(upload(dataset, files), timeout=CALL_TIMEOUT_S)
            answered = time.monotonic() - began
            assert (result.dataset_version, result.accepted_count) == (1, 4)
            await pending(settings, "dataset_versions", f"{dataset}@v1")
        ingested = await watcher.first(
            of_dataset(dataset, Topic.DATASET_INGESTED), what=f"dataset.ingested of {dataset}"
        )
        arrived = time.monotonic() - began
        await watcher.first(
            of_dataset(dataset, Topic.DATASET_LABELED), what=f"dataset.labeled of {dataset}"
        )
        verdict = await watcher.first(
            of_dataset(dataset, Topic.DATASET_VALIDATED, Topic.DATASET_REJECTED),
            what=f"validation's verdict on {dataset}",
        )
        await relayed(settings, "dataset_versions", f"{dataset}@v1")
    assert ingested.payload.version == 1
    assert service_pids(settings) == outage.pids, "a service was restarted"
    print(
        f"{dataset}: Upload answered in {answered:.1f}s with Kafka down, Kafka away "
        f"{outage.seconds:.1f}s; dataset.ingested relayed at {arrived:.1f}s, then "
        f"{verdict.TOPIC} at {time.monotonic() - began:.1f}s; no service restarted"
    )


@pytest.mark.usefixtures("services")
@pytest.mark.timeout(600)
async def test_a_last_label_while_kafka_is_down_is_announced_once_it_is_back() -> None:
    """Finding 2: the version the last label ends is announced by the relay."""
    settings = StackSettings()
    dataset = unique("chaos-announce-label")
    files = [image("good.png", ingestion_pb2.LABEL_GOOD), image("unlabeled.png")]
    async with (
        watching(settings, Topic.DATASET_LABELED) as watcher,
        open_aio_channel(INGESTION) as ingestion_channel,
        open_aio_channel(LABELING) as labeling_channel,
    ):
        ingestion: Any = ingestion_pb2_grpc.IngestionServiceStub(ingestion_channel)
        labeling: Any = labeling_pb2_grpc.LabelingServiceStub(labeling_channel)
        await ingestion.Upload(upload(dataset, files), timeout=30)

        async def task() -> Any:
            try:
                return await labeling.NextUnlabeled(
                    labeling_pb2.NextUnlabeledRequest(dataset_id=dataset, annotator="chaos"),
                    timeout=10,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                    return None  # labeling has not recorded the version yet
                raise

        last = await eventually(task, within=60, what=f"{dataset}'s unlabeled image")
        assert last.remaining_count == 1
        began = time.monotonic()
        async with kafka_away(settings) as outage:
            answer = await labeling.SubmitLabel(
                labeling_pb2.SubmitLabelRequest(
                    image_sha256=last.image_sha256,
                    dataset_id=dataset,
                    label=ingestion_pb2.LABEL_GOOD,
                    annotator="chaos",
                ),
                timeout=CALL_TIMEOUT_S,
            )
            answered = time.monotonic() - began
            assert answer.remaining_count == 0
            await pending(settings, "label_versions", f"{dataset}@v1")
        labeled = await watcher.first(
            of_dataset(dataset, Topic.DATASET_LABELED), what=f"dataset.labeled of {dataset}"
        )
        await relayed(settings, "label_versions", f"{dataset}@v1")
    assert (labeled.payload.version, labeled.payload.label_counts) == (1, {"good": 2, "bad": 0})
    assert service_pids(settings) == outage.pids, "a service was restarted"
    print(
        f"{dataset}: the last SubmitLabel answered in {answered:.1f}s with Kafka down, Kafka "
        f"away {outage.seconds:.1f}s; dataset.labeled relayed at "
        f"{time.monotonic() - began:.1f}s; no service restarted"
    )


async def production(registry: Any) -> tuple[int, list[int]]:
    """Production's version, and the other versions the registry could serve, newest first."""
    versions: list[Any] = []
    token = ""
    while True:
        page = await registry.ListVersions(
            registry_pb2.ListVersionsRequest(
                model_name=MODEL_NAME, page_size=100, page_token=token
            ),
            timeout=30,
        )
        versions.extend(page.model_versions)
        token = page.next_page_token
        if not token:
            break
    [current] = [v.version for v in versions if "production" in v.aliases]
    others = [v.version for v in versions if v.version != current and not v.failure_reason]
    return current, sorted(others, reverse=True)


@pytest.mark.usefixtures("services")
@pytest.mark.timeout(900)
async def test_a_promotion_while_kafka_is_down_reaches_the_gateway_once_it_is_back() -> None:
    """Finding 3: the alias moved while Kafka was away is announced by the relay and the
    gateway serves it; the operator's retry of the same request moves nothing. Production is
    promoted back afterwards, so the scenarios after this one find it as it was."""
    settings = StackSettings()
    async with open_aio_channel(REGISTRY) as channel:
        registry: Any = registry_pb2_grpc.RegistryServiceStub(channel)
        before, others = await production(registry)
        assert others, "the registry has no other version to promote"
        target = others[0]
        await served(before, within=ARRIVES_WITHIN_S)
        request = registry_pb2.PromoteRequest(
            model_name=MODEL_NAME,
            version=target,
            actor="chaos",
            reason="issue 18: a move while Kafka is down",
            request_id=unique("chaos-promote"),
            expect_version=before,
        )
        began = time.monotonic()
        async with kafka_away(settings) as outage:
            moved = await registry.Promote(request, timeout=CALL_TIMEOUT_S)
            answered = time.monotonic() - began
            assert (moved.from_version, moved.to_version) == (before, target)
            await pending(settings, "aliases", f"{MODEL_NAME}:production")
        switched = await served(target, within=ARRIVES_WITHIN_S)
        arrived = time.monotonic() - began
        await relayed(settings, "aliases", f"{MODEL_NAME}:production")
        again = await registry.Promote(request, timeout=CALL_TIMEOUT_S)
        assert (again.sequence, again.to_version) == (moved.sequence, target)
        assert (await production(registry))[0] == target

        await registry.Promote(
            registry_pb2.PromoteRequest(
                model_name=MODEL_NAME,
                version=before,
                actor="chaos",
                reason="issue 18: production as it was before the scenario",
                request_id=unique("chaos-promote"),
                expect_version=target,
            ),
            timeout=CALL_TIMEOUT_S,
        )
        await served(before, within=ARRIVES_WITHIN_S)
    assert service_pids(settings) == outage.pids, "a service was restarted"
    print(
        f"v{before} -> v{target} (move {moved.sequence}): Promote answered in {answered:.1f}s "
        f"with Kafka down, Kafka away {outage.seconds:.1f}s; the gateway served v{target} at "
        f"{arrived:.1f}s ({switched:.1f}s after Kafka was back); the retry answered move "
        f"{again.sequence}; no service restarted"
    )


@pytest.mark.usefixtures("services")
@pytest.mark.timeout(1500)
async def test_minio_away_at_the_end_of_a_long_training_run_is_retried(tmp_path: Path) -> None:
    """Finding 6: MinIO goes away once the run has trained an epoch and comes back only after
    the trainer's write failed and the handler has run longer than the retry budget; the run
    deploys, with a second attempt."""
    settings = StackSettings()
    dataset = unique("chaos-announce-train")
    log = Layout(settings.home).log("trainer")
    outage: dict[str, float] = {}
    handler_began = asyncio.get_running_loop().create_future()

    async def on_event(topic: Topic) -> None:
        if topic == Topic.DATASET_VALIDATED and not handler_began.done():
            handler_began.set_result(time.monotonic())

    async def minio_away() -> None:
        db = database(settings.mongo, appname="chaos")
        try:

            async def training() -> bool | None:
                run = await db[RUNS].find_one({"dataset_id": dataset, "status": "running"})
                return True if run is not None and run.get("epochs") else None

            await eventually(training, within=RUN_WITHIN_S, what=f"a run on {dataset} training")
        finally:
            db.client.close()
        offset = log.stat().st_size
        died = crash_server(settings, "minio")
        try:

            async def write_failed() -> float | None:
                with log.open("rb") as lines:
                    lines.seek(offset)
                    tail = lines.read().decode(errors="replace")
                return time.monotonic() if "retrying dataset.validated" in tail else None

            failed = await eventually(
                write_failed, within=300, what="the trainer retrying its failed write"
            )
            # Past the budget counted from the handler's start, and 10 s past the failure.
            back_at = max((await handler_began) + RETRY_BUDGET_S + 5, failed + 10)
            await asyncio.sleep(max(0.0, back_at - time.monotonic()))
        finally:
            await asyncio.to_thread(restart_server, "minio")
        outage.update(
            away=time.monotonic() - died,
            failed=failed - died,
            handler=time.monotonic() - await handler_began,
        )

    before = service_pids(settings)
    async with asyncio.TaskGroup() as group:  # either failing cancels the other
        group.create_task(minio_away())
        pipeline = group.create_task(run_pipeline(tmp_path, dataset, on_event))
    run = pipeline.result()
    result = await deployed_once(run)
    assert service_pids(settings) == before, "a service was restarted during the outage"
    print(
        f"run {run.correlation_id}: deployed as version {result['version']} in "
        f"{run.seconds:.0f}s; MinIO away {outage['away']:.1f}s, the trainer's write failed "
        f"{outage['failed']:.1f}s into it, MinIO back {outage['handler']:.1f}s after "
        f"dataset.validated; training attempts {result['attempts']}"
    )
    assert result["attempts"] >= 2, "the failed write was retried by training again"
