"""The gateway's core on a fake Triton: verdicts, versions, errors, deadlines and switches."""

from __future__ import annotations

import asyncio
import io
import threading
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest
import screwops_imaging
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from PIL import Image
from screwops_contracts import (
    ModelDeployed,
)
from screwops_contracts.models import DEFAULT_THRESHOLD
from screwops_errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidInputError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from screwops_gateway import service as gateway_service
from screwops_gateway.config import LogPolicy
from screwops_gateway.service import (
    NO_MODEL_DEPLOYED,
    GatewayService,
    Inspection,
    Verdict,
)

from tests.support import FRAME_SIZE, eventually, model_deployed, model_rolled_back
from tests.unit.gateway.fakes import MODEL, POLICY, START, deployed, harness, png


def frame(image: bytes | None = None, **fields: object) -> Inspection:
    values: dict[str, object] = {
        "image": png() if image is None else image,
        "line_id": "line-3",
        "camera_id": "cam-a",
        "request_id": "req-1",
    }
    values.update(fields)
    return Inspection(**values)  # type: ignore[arg-type]


async def test_a_low_probability_is_good_and_reports_everything_needed_to_trust_it() -> None:
    h = harness(log_policy=LogPolicy(image_sample_rate=0))
    await h.service.start()

    result = await h.service.inspect(frame(frame_id="f-7"))

    assert result.verdict == Verdict.GOOD
    assert result.defect_probability == pytest.approx(0.2)
    assert (result.model_name, result.model_version, result.threshold) == (MODEL, 1, 0.5)
    assert (result.request_id, result.frame_id) == ("req-1", "f-7")
    t = result.timings
    assert min(t.decode_ms, t.preprocess_ms, t.inference_ms) >= 0
    assert t.total_ms >= t.decode_ms + t.preprocess_ms + t.inference_ms
    [call] = h.triton.calls
    assert call[:3] == (MODEL, 1, (1, FRAME_SIZE, FRAME_SIZE, 1))
    assert h.triton.frames[0].dtype == np.uint8
    await h.service.stop()
    [event] = h.published
    assert str(event.event_id) == result.inspection_id
    assert event.payload.model_dump(exclude={"latency_ms"}) == {
        "request_id": "req-1",
        "line_id": "line-3",
        "camera_id": "cam-a",
        "client_identity": None,
        "verdict": "GOOD",
        "defect_probability": pytest.approx(0.2),
        "threshold": 0.5,
        "model_name": MODEL,
        "model_version": 1,
        "trace_id": "",
        "image_key": None,
        "rollout_id": None,
        "role": None,
        "reference_version": None,
        "reference_probability": None,
    }
    assert h.metrics.statuses == ["OK"]


@pytest.mark.parametrize(
    ("probability", "verdict"),
    [(0.0, Verdict.GOOD), (0.4999, Verdict.GOOD), (0.5, Verdict.DEFECT), (1.0, Verdict.DEFECT)],
)
async def test_the_verdict_is_defect_at_or_above_the_threshold(
    probability: float, verdict: Verdict
) -> None:
    h = harness(loaded={(MODEL, 1): probability})
    await h.service.refresh()

    assert (await h.service.inspect(frame())).verdict == verdict


async def test_a_pinned_version_answers_instead_of_production() -> None:
    h = harness(production=1)
    await h.service.refresh()

    pinned = await h.service.inspect(frame(model_version=2))
    unpinned = await h.service.inspect(frame())

    assert (pinned.model_version, pinned.verdict) == (2, Verdict.DEFECT)
    assert (unpinned.model_version, unpinned.verdict) == (1, Verdict.GOOD)


async def test_an_unknown_pinned_version_is_not_found() -> None:
    h = harness()
    await h.service.refresh()

    with pytest.raises(NotFoundError, match="model_version 7 of screw-classifier is not loaded"):
        await h.service.inspect(frame(model_version=7))
    assert h.metrics.statuses == ["NOT_FOUND"]


async def test_a_production_version_missing_from_triton_is_an_outage_not_the_clients_error() -> (
    None
):
    h = harness(production=3)
    await h.service.refresh()

    with pytest.raises(UnavailableError, match="production version 3"):
        await h.service.inspect(frame())


async def test_before_any_deployment_only_pinned_requests_are_answered() -> None:
    h = harness(production=None)
    await h.service.refresh()

    with pytest.raises(FailedPreconditionError) as error:
        await h.service.inspect(frame())
    assert error.value.message == NO_MODEL_DEPLOYED
    assert (await h.service.inspect(frame(model_version=2))).model_version == 2


async def test_triton_down_is_unavailable_at_once() -> None:
    h = harness()
    await h.service.refresh()
    h.triton.down = True

    began = time.monotonic()
    with pytest.raises(UnavailableError):
        await h.service.inspect(frame(), deadline=time.monotonic() + 5)
    assert time.monotonic() - began < 0.5


async def test_the_clients_deadline_bounds_the_triton_call() -> None:
    h = harness()
    await h.service.refresh()
    h.triton.delay_s = 10.0

    began = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        await h.service.inspect(frame(), deadline=time.monotonic() + 0.2)
    assert 0.15 < time.monotonic() - began < 0.6
    assert h.triton.calls[0][3] <= 0.2
    assert h.metrics.statuses == ["DEADLINE_EXCEEDED"]


async def test_a_stalled_triton_is_unavailable_within_the_gateways_own_timeout() -> None:
    h = harness(policy=replace(POLICY, triton_timeout_s=0.1))
    await h.service.refresh()
    h.triton.delay_s = 10.0

    began = time.monotonic()
    with pytest.raises(UnavailableError, match=r"did not answer within 0\.1 s"):
        await h.service.inspect(frame(), deadline=time.monotonic() + 30)
    assert time.monotonic() - began < 0.5


async def test_a_deadline_already_passed_reaches_no_one() -> None:
    h = harness()
    await h.service.refresh()

    with pytest.raises(DeadlineExceededError):
        await h.service.inspect(frame(), deadline=time.monotonic() - 0.001)
    assert h.triton.calls == []


async def test_an_answer_that_is_not_a_probability_is_refused() -> None:
    h = harness(loaded={(MODEL, 1): float("nan")})
    await h.service.refresh()

    with pytest.raises(FailedPreconditionError, match="not a probability"):
        await h.service.inspect(frame())


def _truncated() -> bytes:
    return png(64, shade=7)[:60]


@pytest.mark.parametrize(
    ("inspection", "reason"),
    [
        (frame(b""), "empty image: 0 bytes"),
        (frame(b"hello, world"), "not an image: the bytes match no known image format"),
        (frame(_truncated()), "corrupt or truncated PNG image"),
        (frame(b"\x89PNG\r\n\x1a\n" + bytes(100_001)), "over the limit of 100000"),
        (frame(png(16)), "image is 16x16, smaller than the minimum of 32x32"),
        (frame(png(20, 64)), "image is 20x64, smaller than the minimum of 32x32"),
        (frame(png(4097, 32)), "image is 4097x32, larger than the maximum of 4096x4096"),
        # Only the header: the sides are checked before any pixel is decoded.
        (frame(png(9000, 40)[:64]), "image is 9000x40, larger than the maximum of 4096x4096"),
        (frame(line_id=""), "line_id is required"),
        (frame(camera_id=""), "camera_id is required"),
        (frame(camera_id="cam a"), "camera_id must be 1-64 letters"),
        (frame(line_id="x" * 65), "line_id must be 1-64 letters"),
        (frame(request_id="r" * 129), "request_id is longer than 128 characters"),
        (frame(frame_id="a\nb"), "frame_id contains a control character"),
        (frame(model_version=0), "model_version must be at least 1, not 0"),
        (frame(model_version=-5), "model_version must be at least 1, not -5"),
    ],
)
async def test_malformed_requests_are_refused_with_their_reason(
    inspection: Inspection, reason: str
) -> None:
    h = harness()
    await h.service.refresh()

    with pytest.raises(InvalidInputError) as error:
        await h.service.inspect(inspection)
    assert reason in error.value.message
    assert h.triton.calls == []
    assert h.metrics.statuses == ["INVALID_ARGUMENT"]


async def test_a_large_image_is_decoded_off_the_event_loop_and_judged() -> None:
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (1024, 1024), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(noisy, mode="L").save(out, format="PNG")
    h = harness(policy=replace(POLICY, max_image_bytes=8 * 1024 * 1024))
    await h.service.refresh()

    result = await h.service.inspect(frame(out.getvalue()))

    assert result.verdict == Verdict.GOOD


async def test_the_trace_id_is_the_callers_and_reaches_the_event() -> None:
    provider = TracerProvider()
    h = harness()
    service = GatewayService(h.triton, h.store, h.log, h.metrics, POLICY, tracer_provider=provider)
    await service.start()
    caller = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )

    with trace.use_span(NonRecordingSpan(caller)):
        result = await service.inspect(frame())
    await service.stop()

    assert result.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    [event] = h.published
    assert event.payload.trace_id == result.trace_id


# --- switching ---------------------------------------------------------------------------------


def deployment(
    version: int,
    *,
    sequence: int = 1,
    model: str = MODEL,
    threshold: float = DEFAULT_THRESHOLD,
    at: datetime | None = None,
) -> ModelDeployed:
    """The registry's move ``sequence`` deploying ``version`` (its clock ``sequence`` minutes
    after START unless ``at``)."""
    event = model_deployed(
        model, version, at=at or START + timedelta(minutes=sequence), sequence=sequence
    )
    payload = event.payload.model_copy(update={"threshold": threshold})
    return event.model_copy(update={"payload": payload})


async def test_a_switch_while_an_image_is_decoded_answers_it_with_the_new_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request that started before a deployment but whose image was still being decoded is
    answered by the new version: otherwise it could finish after one the new version answered
    and send the line back to the old version for a moment."""
    h = harness(production=1, log_policy=LogPolicy(image_sample_rate=0))
    await h.service.start()
    decoding, release = threading.Event(), threading.Event()
    prepare = gateway_service._prepare

    def held(*args: Any) -> Any:
        decoding.set()
        assert release.wait(timeout=10)
        return prepare(*args)

    monkeypatch.setattr(gateway_service, "_prepare", held)
    answer = asyncio.create_task(h.service.inspect(frame()))
    await eventually(
        lambda: _true_when(decoding.is_set()), within=5, what="the image in a decode thread"
    )
    await h.service.on_model_deployed(deployment(2))
    monkeypatch.setattr(gateway_service, "_prepare", prepare)
    release.set()
    result = await answer
    await h.service.stop()

    assert result.model_version == 2


async def _true_when(condition: bool) -> bool | None:
    return True if condition else None


async def test_the_served_versions_own_threshold_decides_and_is_reported() -> None:
    """Version 2 answers 0.9: a defect at 0.5, a good screw at the 0.95 its run chose."""
    h = harness(production=1, log_policy=LogPolicy(image_sample_rate=0))
    await h.service.start()

    await h.service.on_model_deployed(deployment(2, threshold=0.95))
    result = await h.service.inspect(frame())
    await h.service.stop()

    assert (result.model_version, result.threshold, result.verdict) == (2, 0.95, Verdict.GOOD)
    [event] = h.published
    assert (event.payload.threshold, event.payload.verdict) == (0.95, "GOOD")
    assert h.store.models[MODEL].threshold == 0.95, "a restarted instance decides alike"


async def test_a_rollback_brings_back_its_versions_threshold() -> None:
    h = harness(production=2)
    await h.service.refresh()
    rollback = model_rolled_back(MODEL, 2, 1, at=START + timedelta(minutes=5))
    rollback = rollback.model_copy(
        update={"payload": rollback.payload.model_copy(update={"threshold": 0.1})}
    )

    await h.service.on_model_rolled_back(rollback)
    result = await h.service.inspect(frame())

    assert (result.model_version, result.threshold) == (1, 0.1)
    assert result.verdict == Verdict.DEFECT, "version 1 answers 0.2"


async def test_a_recorded_production_is_served_at_its_recorded_threshold() -> None:
    h = harness(production=None)
    h.store.models[MODEL] = replace(deployed(2), threshold=0.95)

    await h.service.refresh()
    result = await h.service.inspect(frame())

    assert (result.model_version, result.threshold, result.verdict) == (2, 0.95, Verdict.GOOD)


async def test_a_pinned_version_is_judged_at_its_announced_threshold_else_the_default() -> None:
    h = harness(production=None)
    await h.service.on_model_deployed(deployment(1, sequence=10, threshold=0.1))
    # Older than production: not adopted, but version 2's threshold is learnt from it.
    await h.service.on_model_deployed(deployment(2, sequence=5, threshold=0.95))

    two = await h.service.inspect(frame(model_version=2))
    h.triton.loaded[(MODEL, 3)] = 0.6
    three = await h.service.inspect(frame(model_version=3))

    assert (two.threshold, two.verdict) == (0.95, Verdict.GOOD)
    assert (three.threshold, three.verdict) == (DEFAULT_THRESHOLD, Verdict.DEFECT)
    assert (await h.service.inspect(frame())).threshold == 0.1


async def test_production_moves_only_after_the_version_is_ready_and_warm() -> None:
    h = harness(production=1)
    await h.service.refresh()
    gate = asyncio.Event()
    h.triton.ready_after[(MODEL, 2)] = gate

    switching = asyncio.create_task(h.service.on_model_deployed(deployment(2)))

    async def waiting_for_v2() -> bool | None:
        return (MODEL, 2) in h.triton.asked_ready or None

    await eventually(waiting_for_v2, within=5, what="the switch to wait for v2", interval=0.001)
    during = await h.service.inspect(frame())
    gate.set()
    await switching
    after = await h.service.inspect(frame())

    assert (during.model_version, after.model_version) == (1, 2)
    assert [c[1] for c in h.triton.calls] == [1, 2, 2]  # the request, the warm-up, the request
    assert h.store.models[MODEL].version == 2
    assert h.metrics.switches[-1] == (2, "event")


async def test_a_version_that_never_gets_ready_leaves_production_alone() -> None:
    h = harness(production=1, policy=replace(POLICY, switch_timeout_s=0.05))
    await h.service.refresh()

    with pytest.raises(DeadlineExceededError):
        await h.service.on_model_deployed(deployment(5))

    assert h.service.production is not None
    assert h.service.production.version == 1
    assert h.store.models[MODEL].version == 1


async def test_a_deployment_of_a_version_triton_unloaded_is_skipped_without_waiting() -> None:
    """A gateway catching up after downtime meets deployments that later ones replaced, whose
    versions the registry has evicted: each is skipped at once, and the latest is adopted."""
    h = harness(production=1, policy=replace(POLICY, switch_timeout_s=30))
    await h.service.refresh()
    h.triton.evicted.add((MODEL, 2))
    h.triton.loaded[(MODEL, 3)] = 0.3

    await asyncio.wait_for(h.service.on_model_deployed(deployment(2, sequence=2)), timeout=1)
    assert h.service.production is not None
    assert h.service.production.version == 1
    await h.service.on_model_deployed(deployment(3, sequence=3))

    assert (await h.service.inspect(frame())).model_version == 3
    assert h.store.models[MODEL].version == 3


async def test_a_failed_warm_up_leaves_production_alone() -> None:
    h = harness(production=1, loaded={(MODEL, 1): 0.2, (MODEL, 2): float("nan")})
    await h.service.refresh()

    with pytest.raises(FailedPreconditionError):
        await h.service.on_model_deployed(deployment(2))

    assert (await h.service.inspect(frame())).model_version == 1


async def test_a_rollback_moves_production_back() -> None:
    h = harness(production=2)
    await h.service.refresh()
    rollback = model_rolled_back(MODEL, 2, 1, at=START + timedelta(minutes=5))

    await h.service.on_model_rolled_back(rollback)

    assert (await h.service.inspect(frame())).model_version == 1


async def test_stale_events_and_other_models_change_nothing() -> None:
    h = harness(production=None)
    await h.service.on_model_deployed(deployment(2, sequence=10))

    await h.service.on_model_deployed(deployment(1, sequence=5))
    await h.service.on_model_deployed(deployment(1, sequence=20, model="other-model"))

    assert h.service.production is not None
    assert h.service.production.version == 2
    assert h.store.models[MODEL].version == 2


async def test_a_move_the_registry_numbered_earlier_never_wins_whatever_its_clock() -> None:
    """Issue 18: the outbox relay publishes a refused rollback (move 3) after a later
    promotion (move 4) went out at once; the late event's occurred_at is the newest."""
    h = harness(production=None)
    await h.service.on_model_deployed(deployment(2, sequence=4))

    late = model_rolled_back(MODEL, 2, 1, at=START + timedelta(hours=1), sequence=3)
    await h.service.on_model_rolled_back(late)

    assert h.service.production is not None
    assert (h.service.production.version, h.service.production.sequence) == (2, 4)
    assert h.store.models[MODEL].version == 2


async def test_a_replayed_old_event_with_a_later_time_cannot_pin_production() -> None:
    """An old model.deployed replayed (or forged) with occurred_at in the future used to win
    over every later switch."""
    h = harness(production=None, loaded={(MODEL, v): 0.5 for v in (1, 2, 3)})
    await h.service.on_model_deployed(deployment(1, sequence=1))
    await h.service.on_model_deployed(deployment(2, sequence=2))

    replayed = deployment(1, sequence=1, at=datetime(2099, 1, 1, tzinfo=START.tzinfo))
    await h.service.on_model_deployed(replayed)
    assert h.service.production is not None
    assert h.service.production.version == 2
    await h.service.on_model_deployed(deployment(3, sequence=3))

    assert h.service.production.version == 3
    assert (h.store.models[MODEL].version, h.store.models[MODEL].sequence) == (3, 3)


async def test_an_instance_follows_a_switch_recorded_by_another() -> None:
    h = harness(production=1, policy=replace(POLICY, state_refresh_s=0.01))
    await h.service.start()
    h.store.models[MODEL] = deployed(2, sequence=3)

    async def switched() -> int | None:
        production = h.service.production
        return production.version if production and production.version == 2 else None

    await eventually(switched, within=1, what="the refresh to adopt v2", interval=0.005)
    h.store.models[MODEL] = deployed(1, sequence=1)  # an older record never wins
    await h.service.refresh()
    await h.service.stop()

    assert (h.service.production or deployed(0)).version == 2
    assert h.metrics.switches == [(1, "refresh"), (2, "refresh")]


async def test_the_log_never_delays_an_answer() -> None:
    h = harness()
    await h.service.start()
    assert h.published.gate is None
    h.published.gate = asyncio.Event()  # Kafka stalls

    results = [await h.service.inspect(frame()) for _ in range(5)]

    assert len(results) == 5
    assert not list(h.published)  # every event still held by the stalled log
    h.published.gate.set()
    await h.service.stop()
    assert sorted(str(e.event_id) for e in h.published) == sorted(r.inspection_id for r in results)


async def test_every_inspection_gets_its_own_id_even_with_the_same_request_id() -> None:
    h = harness()
    await h.service.refresh()

    ids = {(await h.service.inspect(frame(request_id="same"))).inspection_id for _ in range(20)}

    assert len(ids) == 20
    assert all(uuid.UUID(i).version == 4 for i in ids)


async def test_every_image_is_decoded_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """However small: a 16 KB PNG can hold 16 megapixels, 100 ms of decoding."""
    h = harness()
    await h.service.start()
    threads: list[int] = []
    decode = screwops_imaging.decode

    def recording(data: bytes, **limits: int) -> object:
        threads.append(threading.get_ident())
        return decode(data, **limits)

    monkeypatch.setattr(gateway_service, "decode", recording)

    await h.service.inspect(frame(png(40)))

    assert threads
    assert threading.get_ident() not in threads
    await h.service.stop()


async def test_a_flood_past_the_decode_queue_is_refused_at_once_not_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = harness(policy=replace(POLICY, decode_workers=1, decode_queue=1))
    await h.service.start()
    release = threading.Event()
    decode = screwops_imaging.decode

    def held(data: bytes, **limits: int) -> object:
        release.wait(10)
        return decode(data, **limits)

    monkeypatch.setattr(gateway_service, "decode", held)
    # One image decoding, one waiting for the thread: the bound (1 + 1) is reached.
    taken = [asyncio.create_task(h.service.inspect(frame())) for _ in range(2)]
    await asyncio.sleep(0.05)

    with pytest.raises(ResourceExhaustedError, match="2 images are being decoded or waiting"):
        await h.service.inspect(frame())

    release.set()
    assert [r.verdict for r in await asyncio.gather(*taken)] == [Verdict.GOOD, Verdict.GOOD]
    assert (await h.service.inspect(frame())).verdict == Verdict.GOOD
    assert h.metrics.statuses.count("RESOURCE_EXHAUSTED") == 1
    await h.service.stop()


async def test_a_cancelled_call_holds_its_place_until_its_decode_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The thread cannot be stopped: its work still counts, or cancelled calls would pile up
    decodes past the bound."""
    h = harness(policy=replace(POLICY, decode_workers=1, decode_queue=0))
    await h.service.start()
    release = threading.Event()
    decode = screwops_imaging.decode

    def held(data: bytes, **limits: int) -> object:
        release.wait(10)
        return decode(data, **limits)

    monkeypatch.setattr(gateway_service, "decode", held)
    cancelled = asyncio.create_task(h.service.inspect(frame()))
    await asyncio.sleep(0.05)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled

    with pytest.raises(ResourceExhaustedError):
        await h.service.inspect(frame())
    release.set()
    await eventually(lambda: _answered(h.service), within=5, what="the decode thread freed")
    await h.service.stop()


async def _answered(service: GatewayService) -> Verdict | None:
    try:
        return (await service.inspect(frame())).verdict
    except ResourceExhaustedError:
        return None
