"""Rollouts end to end, under a steady load of inspections through the gateway: the supervised
registry, gateway and monitor (the rollout controller) decide alone, and an operator only starts.

``E2E_ENV`` gives the model an immediate policy with canary and shadow steps for operators'
starts, on ``ROLLOUT_LINE`` only. The versions: production, the one production's latest move
replaced (the session's earlier run, or a run made here) and a deliberately bad one, trained
here on screws whose labels an import's label map swapped (good screws labelled bad, every
defect type good): on its own swapped test split it scores as any small-data model does, so the
gate passes it, and on real screws it answers the opposite of production.

1. A shadow of the version before production runs while the bad version trains, so its approval
   is only registered (one rollout at a time); every response equals what production-only
   serving (the same image pinned to production) gives, and the agreement series appear in
   Prometheus. An operator aborts the shadow (the controller never decides on a shadow).
2. The bad version's canary is aborted by the controller, with its figures as the reason: no
   inspection fails and it answers at most its first step's share plus 2 points of the line.
3. The version before production goes 5 % -> 25 % -> 100 % and becomes production by itself.

An operator's rollback then puts production back where the session had it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from screwops.v1 import inspection_pb2, inspection_pb2_grpc, registry_pb2, registry_pb2_grpc
from screwops_contracts import ModelApproved, ModelRolloutChanged, Topic, parse_event
from screwops_contracts.models import MODEL_NAME, PRODUCTION_ALIAS
from screwops_gateway.routing import BUCKETS, bucket
from screwops_rpc import open_aio_channel
from screwops_settings import StackSettings, kafka_client_options
from screwops_synth import DEFECT_TYPES, generate

from tests.e2e.conftest import ROLLOUT_LINE, screwops
from tests.e2e.runs import GATEWAY, new_run
from tests.support import eventually, unique

REGISTRY = "127.0.0.1:50054"
OTHER_LINE = "line-e2e"
"""A line the rollouts do not cover: production answers it throughout, as the other lines of a
hall would, so the controller has production's figures even at the canary's 100 % step."""
RATE = 16.0
"""Inspections a second the load sends; one in four to ``OTHER_LINE``."""
SWAPPED = ",".join(["good=bad", *(f"{kind}=good" for kind in DEFECT_TYPES)])
RUNNING, COMPLETED, ABORTED = (
    registry_pb2.ROLLOUT_STATE_RUNNING,
    registry_pb2.ROLLOUT_STATE_COMPLETED,
    registry_pb2.ROLLOUT_STATE_ABORTED,
)
Registry = Any  # registry_pb2_grpc.RegistryServiceAsyncStub


@dataclass
class Load:
    """Inspections at a fixed rate, each with its own request id, and what answered them."""

    gateway: Any
    images: list[bytes]
    answered: list[tuple[float, str, int, str]] = field(default_factory=list)
    """(when sent, line, version that answered, request id) of each inspection that succeeded."""
    failed: list[str] = field(default_factory=list)
    _calls: set[asyncio.Task[None]] = field(default_factory=set)

    async def run(self) -> None:
        sent = 0
        began = time.monotonic()
        while True:
            line = OTHER_LINE if sent % 4 == 3 else ROLLOUT_LINE
            call = asyncio.create_task(self._inspect(self.images[sent % len(self.images)], line))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)
            sent += 1
            await asyncio.sleep(max(0.0, began + sent / RATE - time.monotonic()))

    async def _inspect(self, image: bytes, line: str) -> None:
        at, request_id = time.monotonic(), unique("e2e-load")
        try:
            answer = await self.gateway.Inspect(
                inspection_pb2.InspectRequest(
                    image=image, line_id=line, camera_id="cam-1", request_id=request_id
                ),
                timeout=30,
            )
        except Exception as error:  # every failure is the test's finding, whatever it is
            self.failed.append(repr(error))
            return
        self.answered.append((at, line, answer.model_version, request_id))

    def answered_by(self, version: int, since: float, until: float) -> tuple[list[str], int]:
        """The request ids of ``ROLLOUT_LINE``'s inspections sent in [since, until] that
        ``version`` answered, and how many inspections of the line there were."""
        line = [
            (v, r)
            for at, name, v, r in self.answered
            if name == ROLLOUT_LINE and since <= at <= until
        ]
        return [r for v, r in line if v == version], len(line)

    async def drain(self) -> None:
        await asyncio.gather(*self._calls)


async def _versions(registry: Registry) -> list[Any]:
    listed = await registry.ListVersions(
        registry_pb2.ListVersionsRequest(model_name=MODEL_NAME, page_size=100), timeout=30
    )
    return list(listed.model_versions)


async def _production_and_before(registry: Registry) -> tuple[int | None, int | None]:
    """Production's version, and the one its latest move replaced (None: none)."""
    listed = await registry.ListAliases(
        registry_pb2.ListAliasesRequest(model_name=MODEL_NAME), timeout=30
    )
    production = next((a for a in listed.aliases if a.alias == PRODUCTION_ALIAS), None)
    if production is None:
        return None, None
    before = production.latest.from_version if production.latest.HasField("from_version") else None
    return production.version, before if before != production.version else None


async def _rollout(registry: Registry) -> Any:
    return await registry.GetRollout(
        registry_pb2.GetRolloutRequest(model_name=MODEL_NAME), timeout=30
    )


async def _until_ended(registry: Registry, rollout_id: str, *, within: float) -> Any:
    async def ended() -> Any:
        found = await _rollout(registry)
        assert found.rollout_id == rollout_id, f"another rollout started: {found.rollout_id}"
        return found if found.state in (COMPLETED, ABORTED) else None

    return await eventually(ended, within=within, what=f"rollout {rollout_id} to end")


def _start(version: int, strategy: str) -> dict[str, Any]:
    started = screwops(
        "models",
        "rollout",
        "start",
        str(version),
        "--strategy",
        strategy,
        "--reason",
        f"e2e: {strategy} of version {version}",
    )
    rollout: dict[str, Any] = started["rollout"]
    return rollout


async def _approved(
    settings: StackSettings, correlation_id: str, *, within: float
) -> ModelApproved:
    """The run's model.approved; a rejection of its dataset or model fails at once."""
    consumer = AIOKafkaConsumer(
        Topic.MODEL_APPROVED,
        Topic.MODEL_REJECTED,
        Topic.DATASET_REJECTED,
        **kafka_client_options(settings.kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:

        async def found() -> ModelApproved | None:
            batch = await consumer.getmany(timeout_ms=500)
            for record in (r for records in batch.values() for r in records):
                event = parse_event(record.topic, record.value)
                if event is None or event.correlation_id != correlation_id:
                    continue
                assert isinstance(event, ModelApproved), f"the run ended in {event}"
                return event
            return None

        return await eventually(found, within=within, what=f"model.approved of {correlation_id}")
    finally:
        await consumer.stop()


async def _changes(
    settings: StackSettings, rollout_id: str, last: str
) -> list[ModelRolloutChanged]:
    """The rollout's model.rollout_changed events, up to its ``last`` change."""
    consumer = AIOKafkaConsumer(
        Topic.MODEL_ROLLOUT_CHANGED,
        **kafka_client_options(settings.kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    seen: list[ModelRolloutChanged] = []
    await consumer.start()
    try:

        async def through_last() -> list[ModelRolloutChanged] | None:
            batch = await consumer.getmany(timeout_ms=500)
            for record in (r for records in batch.values() for r in records):
                event = parse_event(record.topic, record.value)
                if (
                    isinstance(event, ModelRolloutChanged)
                    and event.payload.rollout_id == rollout_id
                ):
                    seen.append(event)
            return seen if any(e.payload.change == last for e in seen) else None

        return await eventually(through_last, within=60, what=f"rollout {rollout_id} {last}")
    finally:
        await consumer.stop()


async def _compare_with_production(
    gateway: Any, images: list[bytes], production: int
) -> list[tuple[str, float, int, float]]:
    """Each image inspected on the shadow's line and pinned to production (pinned requests take
    no part in a rollout); the answers, which must be equal."""
    answers = []
    for image in images:
        pair = []
        for version in (None, production):
            answer = await gateway.Inspect(
                inspection_pb2.InspectRequest(
                    image=image,
                    line_id=ROLLOUT_LINE,
                    camera_id="cam-1",
                    request_id=unique("e2e-shadow"),
                    model_version=version,
                ),
                timeout=30,
            )
            pair.append(
                (
                    answer.verdict,
                    answer.defect_probability,
                    answer.model_version,
                    answer.threshold,
                )
            )
        assert pair[0] == pair[1], "a shadow changed a response"
        answers.append(pair[0])
    return answers


async def _prometheus_series(settings: StackSettings, query: str) -> list[dict[str, Any]] | None:
    async with httpx.AsyncClient(base_url=settings.telemetry.prometheus_url) as prometheus:
        body = (await prometheus.get("/api/v1/query", params={"query": query})).json()
    assert body["status"] == "success", f"{query}: {body.get('error')}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result or None


async def _while_loaded(load: Load, waiting: Callable[[], Awaitable[Any]]) -> Any:
    """What ``waiting`` returns, the load running meanwhile."""
    running = asyncio.create_task(load.run())
    try:
        return await waiting()
    finally:
        running.cancel()
        await load.drain()


@pytest.mark.usefixtures("services")
@pytest.mark.timeout(1800)  # training the bad version: minutes
async def test_canaries_and_a_shadow_are_decided_by_the_controller(tmp_path: Path) -> None:
    settings = StackSettings()
    generate(tmp_path / "held-out", good=20, defect=20, seed=secrets.randbelow(1 << 30), size=256)
    images = [p.read_bytes() for p in sorted((tmp_path / "held-out").rglob("*.png"))]
    async with (
        open_aio_channel(REGISTRY) as registry_channel,
        open_aio_channel(GATEWAY) as gateway_channel,
    ):
        registry: Registry = registry_pb2_grpc.RegistryServiceStub(registry_channel)
        gateway: Any = inspection_pb2_grpc.InspectionServiceStub(gateway_channel)
        # The session's runs (test_pipeline.py's, test_retraining.py's) made both; on its own on
        # a new stack, the file makes what is missing.
        production, good = await _production_and_before(registry)
        while production is None or good is None:
            await new_run(settings, tmp_path)
            production, good = await _production_and_before(registry)
        try:
            await _shadow_then_canaries(
                settings, registry, gateway, images, production, good, tmp_path
            )
        finally:
            now = await _rollout(registry)
            if now.state == RUNNING:
                screwops("models", "rollout", "abort", "--reason", "e2e: cleaning up")
            current, _ = await _production_and_before(registry)
            if current != production:
                screwops("models", "rollback", "--reason", "e2e: back to the session's production")


async def _shadow_then_canaries(
    settings: StackSettings,
    registry: Registry,
    gateway: Any,
    images: list[bytes],
    production: int,
    good: int,
    tmp_path: Path,
) -> None:
    # 1. A shadow of the version before production, while the bad version trains.
    shadow = _start(good, "shadow")
    dataset = unique("e2e-swapped")
    # Screws never rendered before, or the trainer would reuse an earlier run on them.
    generate(tmp_path / dataset, good=100, defect=100, seed=secrets.randbelow(1 << 30), size=256)
    screwops("ingest", str(tmp_path / dataset), "--dataset", dataset, "--label-map", SWAPPED)
    correlation_id = screwops("datasets", "show", dataset)["correlation_id"]
    agreement = f'screwops_gateway_rollout_agreement_total{{role="shadow",model_version="{good}"}}'

    async def compared_and_counted() -> list[dict[str, Any]] | None:
        await _compare_with_production(gateway, images[:8], production)
        return await _prometheus_series(settings, agreement)

    series = await eventually(compared_and_counted, within=120, what="the shadow's agreement")
    answers = await _compare_with_production(gateway, images, production)
    assert {version for _, _, version, _ in answers} == {production}
    print(f"shadow of v{good}: agreement series {[s['metric'] for s in series]}")

    approved = await _approved(settings, correlation_id, within=900)

    async def registered() -> Any:
        return next((v for v in await _versions(registry) if v.run_id == run_id), None)

    run_id = approved.payload.run_id
    bad = await eventually(registered, within=60, what=f"the version of run {run_id}")
    assert bad.stage == registry_pb2.MODEL_STAGE_REGISTERED, "approved during the shadow: held"
    assert (await _production_and_before(registry))[0] == production
    screwops("models", "rollout", "abort", "--reason", "e2e: shadow measured")
    assert (await _until_ended(registry, shadow["rollout_id"], within=30)).state == ABORTED

    # 2. The bad version's canary, aborted by the controller.
    load = Load(gateway, images)
    began = time.monotonic()
    canary = _start(bad.version, "canary")
    ended = await _while_loaded(
        load, lambda: _until_ended(registry, canary["rollout_id"], within=300)
    )
    until = time.monotonic()
    assert ended.state == ABORTED, "the bad canary completed"
    aborted = ended.changes[-1]
    took = (aborted.changed_at.ToDatetime() - ended.started_at.ToDatetime()).total_seconds()
    by_bad, seen = load.answered_by(bad.version, began, until)
    share = 100.0 * len(by_bad) / seen
    print(f"bad canary v{bad.version}: aborted {took:.1f}s after its start, answered {share:.2f}%")
    print(f"  of {seen} inspections of {ROLLOUT_LINE}: {aborted.reason}")
    assert load.failed == []
    assert share <= ended.steps[0] + 2.0
    # Routing is by request id: every request it answered falls in the first step's buckets.
    first_step = ended.steps[0] * BUCKETS / 100
    assert [r for r in by_bad if bucket(r) >= first_step] == [], "it got past its first step"
    assert aborted.actor == "monitor"
    assert "disagreement" in aborted.reason
    [event] = [
        e
        for e in await _changes(settings, canary["rollout_id"], "aborted")
        if e.payload.change == "aborted"
    ]
    assert event.payload.reason == aborted.reason

    # 3. The version before production, 5 % -> 25 % -> 100 % by itself.
    load = Load(gateway, images)
    canary = _start(good, "canary")
    ended = await _while_loaded(
        load, lambda: _until_ended(registry, canary["rollout_id"], within=300)
    )
    assert ended.state == COMPLETED, f"aborted: {ended.changes[-1].reason}"
    took = (
        ended.changes[-1].changed_at.ToDatetime() - ended.started_at.ToDatetime()
    ).total_seconds()
    steps = [(c.kind, c.step, c.actor) for c in ended.changes]
    print(f"good canary v{good}: start to 100 % in {took:.1f}s: {steps}")
    assert load.failed == []
    assert [
        c.step for c in ended.changes if c.kind == registry_pb2.ROLLOUT_CHANGE_KIND_ADVANCED
    ] == [
        1,
        2,
    ]
    assert {c.actor for c in ended.changes[1:]} == {"monitor"}
    assert (await _production_and_before(registry))[0] == good
