"""Canary and shadow rollouts in the gateway's core on a fake Triton: routing by request id,
ordering by the registry's sequence, off-path scores that never touch a response, and the state
a new instance restores."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
from screwops_errors import DeadlineExceededError
from screwops_gateway import routing
from screwops_gateway.config import Policy
from screwops_gateway.metrics import OFF_PATH_FULL
from screwops_gateway.routing import BUCKETS, Role
from screwops_gateway.service import Inspection, InspectionResult
from screwops_gateway.store import Rollout

from tests.support import model_deployed
from tests.unit.gateway.fakes import (
    MODEL,
    POLICY,
    FakeStateStore,
    FakeTriton,
    Harness,
    deployed,
    harness,
    png,
    rollout_changed,
)

IDS = [f"req-{i}" for i in range(BUCKETS)]


def request(request_id: str, *, line_id: str = "line-3", pinned: int | None = None) -> Inspection:
    return Inspection(
        image=png(), line_id=line_id, camera_id="cam-a", request_id=request_id, model_version=pinned
    )


async def started(h: Harness, **change: object) -> Rollout:
    """``h`` serving production v1 (move 1) with a rollout of v2 started as move 2."""
    await h.service.on_model_rollout_changed(rollout_changed(2, sequence=2, **change))  # type: ignore[arg-type]
    assert h.service.rollout is not None
    return h.service.rollout


def served(
    *,
    policy: Policy = POLICY,
    triton: FakeTriton | None = None,
    store: FakeStateStore | None = None,
) -> Harness:
    """The core serving v1 as the registry's move 1 (unless ``store`` already holds a state)."""
    h = harness(production=None, policy=policy, triton=triton, store=store)
    h.store.models.setdefault(MODEL, deployed(1, sequence=1))
    return h


async def logged(h: Harness) -> dict[str, dict[str, object]]:
    """Every published inspection.completed's payload, by request id (after the log drained)."""
    await h.service.stop()
    return {e.payload.request_id: e.payload.model_dump() for e in h.published}


# --- routing -----------------------------------------------------------------------------------


def test_a_request_id_falls_in_the_same_bucket_every_time() -> None:
    assert [routing.bucket(i) for i in IDS[:50]] == [routing.bucket(i) for i in IDS[:50]]
    assert all(0 <= routing.bucket(i) < BUCKETS for i in IDS)


@pytest.mark.parametrize("share", [5.0, 25.0, 50.0])
async def test_the_canary_takes_its_share_of_ten_thousand_ids(share: float) -> None:
    h = served()
    await h.service.refresh()
    rollout = await started(h, share=share, steps=(share,))
    production = h.service.production
    assert production is not None

    roles = [
        routing.route(production, rollout, line_id="line-3", bucket=routing.bucket(i)).role
        for i in IDS
    ]

    assert roles.count(Role.CANARY) / len(IDS) * 100 == pytest.approx(share, abs=1.0)


async def test_two_instances_route_every_request_id_alike() -> None:
    first, second = served(), served()
    for h in (first, second):
        await h.service.refresh()
        await started(h, share=25.0, step=1)

    async def versions(h: Harness) -> list[int]:
        return [(await h.service.inspect(request(i))).model_version for i in IDS[:300]]

    answered = await versions(first)
    assert answered == await versions(second)
    assert answered == await versions(first)  # a retried request meets the same version
    assert {1, 2} <= set(answered)


async def test_a_canary_answers_at_its_own_threshold_and_production_scores_it_beside() -> None:
    h = served()
    await h.service.start()
    await started(h, share=100.0, steps=(100.0,), threshold=0.95)

    result = await h.service.inspect(request("req-1"))

    assert (result.model_version, result.threshold, result.verdict) == (2, 0.95, "GOOD")
    record = (await logged(h))["req-1"]
    assert record["rollout_id"] == "ro-1"
    assert record["role"] == "canary"
    assert (record["reference_version"], record["reference_probability"]) == (
        1,
        pytest.approx(0.2),
    )
    assert (2, "canary", "response", "answered") in h.metrics.model_calls
    assert (1, "production", "off_path", "answered") in h.metrics.model_calls
    # v2 says 0.9 < 0.95, GOOD; v1 says 0.2 < 0.5, GOOD: they agree, 0.7 apart.
    [(version, role, agree, difference)] = h.metrics.comparisons
    assert (version, role, agree) == (2, "canary", True)
    assert difference == pytest.approx(0.7)


async def test_only_the_rollouts_lines_take_part() -> None:
    h = served()
    await h.service.start()
    await started(h, share=100.0, steps=(100.0,), lines=("line-2",))

    on_line = await h.service.inspect(request("a", line_id="line-2"))
    elsewhere = await h.service.inspect(request("b", line_id="line-3"))

    assert (on_line.model_version, elsewhere.model_version) == (2, 1)
    records = await logged(h)
    assert (records["a"]["rollout_id"], records["a"]["role"]) == ("ro-1", "canary")
    assert (records["b"]["rollout_id"], records["b"]["role"]) == (None, None)
    assert records["b"]["reference_version"] is None


async def test_a_pinned_request_is_never_rerouted_nor_scored_beside() -> None:
    h = served()
    await h.service.start()
    await started(h, share=100.0, steps=(100.0,))

    pinned = await h.service.inspect(request("a", pinned=1))
    unpinned = await h.service.inspect(request("b"))

    assert (pinned.model_version, unpinned.model_version) == (1, 2)
    records = await logged(h)
    assert (records["a"]["rollout_id"], records["a"]["reference_version"]) == (None, None)
    assert [c for c in h.metrics.model_calls if c[0] == 1] == [
        (1, "production", "off_path", "answered")  # for b only
    ]


async def test_production_outside_the_share_is_logged_as_the_rollouts_production_side() -> None:
    h = served()
    await h.service.start()
    rollout = await started(h, share=5.0)
    outside = next(i for i in IDS if routing.bucket(i) >= rollout.share * BUCKETS / 100)

    assert (await h.service.inspect(request(outside))).model_version == 1

    record = (await logged(h))[outside]
    assert (record["rollout_id"], record["role"], record["reference_version"]) == (
        "ro-1",
        "production",
        None,
    )


# --- shadow ------------------------------------------------------------------------------------


def production_only(result: InspectionResult) -> tuple[object, ...]:
    return (result.verdict, result.defect_probability, result.model_version, result.threshold)


async def test_a_shadow_answers_nothing_and_is_scored_beside() -> None:
    h = served()
    await h.service.start()
    baseline = production_only(await h.service.inspect(request("before")))
    await started(h, strategy="shadow", share=100.0, steps=(100.0,), threshold=0.5)

    result = await h.service.inspect(request("req-1"))

    assert production_only(result) == baseline
    record = (await logged(h))["req-1"]
    assert (record["role"], record["model_version"]) == ("production", 1)
    assert (record["reference_version"], record["reference_probability"]) == (
        2,
        pytest.approx(0.9),
    )
    assert (2, "shadow", "off_path", "answered") in h.metrics.model_calls
    # v2 says DEFECT (0.9), v1 GOOD (0.2).
    [(version, role, agree, difference)] = h.metrics.comparisons
    assert (version, role, agree) == (2, "shadow", False)
    assert difference == pytest.approx(0.7)


@pytest.mark.parametrize("trouble", ["failing", "slow"])
async def test_a_failing_or_slow_shadow_never_changes_or_delays_a_response(trouble: str) -> None:
    triton = FakeTriton(loaded={(MODEL, 1): 0.2, (MODEL, 2): 0.9})
    h = served(triton=triton, policy=replace(POLICY, triton_timeout_s=0.3))
    await h.service.start()
    baseline = production_only(await h.service.inspect(request("before")))
    await started(h, strategy="shadow", share=100.0, steps=(100.0,))
    if trouble == "failing":
        del triton.loaded[(MODEL, 2)]
    else:
        triton.delays[2] = 10.0

    began = time.monotonic()
    results = [await h.service.inspect(request(f"req-{i}")) for i in range(5)]

    assert time.monotonic() - began < 0.25
    assert {production_only(r) for r in results} == {baseline}
    records = await logged(h)
    assert all(records[f"req-{i}"]["reference_version"] is None for i in range(5))
    assert sorted(records) == sorted(["before", *(f"req-{i}" for i in range(5))])
    assert [c for c in h.metrics.model_calls if c[1] == "shadow"] == [
        (2, "shadow", "off_path", "failed")
    ] * 5
    assert h.metrics.comparisons == []


async def test_off_path_scores_past_the_limit_are_dropped_counted_and_still_logged() -> None:
    triton = FakeTriton(loaded={(MODEL, 1): 0.2, (MODEL, 2): 0.9}, delays={2: 0.2})
    h = served(triton=triton, policy=replace(POLICY, off_path_limit=2))
    await h.service.start()
    await started(h, strategy="shadow", share=100.0, steps=(100.0,))

    for i in range(5):
        await h.service.inspect(request(f"req-{i}"))

    assert h.metrics.off_path_drops == [("shadow", OFF_PATH_FULL)] * 3
    records = await logged(h)
    assert len(records) == 5
    assert sum(r["reference_version"] == 2 for r in records.values()) == 2


# --- ordering, warm-up and restarts ------------------------------------------------------------


async def test_a_running_candidate_is_warmed_up_before_any_request_goes_to_it() -> None:
    h = served()
    await h.service.refresh()
    gate = asyncio.Event()
    h.triton.ready_after[(MODEL, 2)] = gate

    starting = asyncio.create_task(started(h, share=100.0, steps=(100.0,)))
    await asyncio.sleep(0.02)
    during = await h.service.inspect(request("a"))
    gate.set()
    await starting
    after = await h.service.inspect(request("b"))

    assert (during.model_version, after.model_version) == (1, 2)
    assert (MODEL, 2) in h.triton.asked_ready
    # The first request, the warm-up's blank frame, then the canary and production beside it.
    assert [call[1] for call in h.triton.calls][:2] == [1, 2]


async def test_a_candidate_that_never_gets_ready_gets_no_traffic() -> None:
    h = served(policy=replace(POLICY, switch_timeout_s=0.05))
    await h.service.refresh()
    h.triton.ready_after[(MODEL, 2)] = asyncio.Event()

    with pytest.raises(DeadlineExceededError):
        await started(h, share=100.0, steps=(100.0,))

    assert h.service.rollout is None
    assert MODEL not in h.store.rollouts
    assert (await h.service.inspect(request("a"))).model_version == 1


async def test_changes_numbered_no_later_than_the_state_are_ignored() -> None:
    h = served()
    await h.service.refresh()
    await started(h, share=5.0)
    advanced = rollout_changed(2, sequence=3, change="advanced", share=25.0, step=1)
    await h.service.on_model_rollout_changed(advanced)

    await h.service.on_model_rollout_changed(rollout_changed(2, sequence=2))  # replayed start
    await h.service.on_model_rollout_changed(advanced)  # redelivered
    await h.service.on_model_rollout_changed(rollout_changed(2, sequence=1, share=50.0, step=0))

    assert h.service.rollout is not None
    assert (h.service.rollout.share, h.service.rollout.sequence) == (25.0, 3)
    assert h.store.rollouts[MODEL].share == 25.0


async def test_a_change_of_another_model_is_ignored() -> None:
    h = served()
    await h.service.refresh()

    await h.service.on_model_rollout_changed(rollout_changed(2, sequence=9, model="other"))

    assert h.service.rollout is None


async def test_completion_moves_production_and_ends_the_rollout() -> None:
    h = served()
    await h.service.start()
    await started(h, share=25.0, step=1)

    await h.service.on_model_deployed(model_deployed(MODEL, 2, sequence=3))
    assert h.service.rollout is None
    assert MODEL not in h.store.rollouts
    await h.service.on_model_rollout_changed(
        rollout_changed(2, sequence=4, change="completed", state="completed", share=0.0, step=2)
    )
    await h.service.on_model_rollout_changed(rollout_changed(2, sequence=2, share=25.0, step=1))

    results = [await h.service.inspect(request(i)) for i in IDS[:50]]
    assert {r.model_version for r in results} == {2}
    records = await logged(h)
    assert {r["rollout_id"] for r in records.values()} == {None}
    assert {r["reference_version"] for r in records.values()} == {None}


async def test_an_abort_sends_everything_back_to_production() -> None:
    h = served()
    await h.service.start()
    await started(h, share=100.0, steps=(100.0,))
    assert (await h.service.inspect(request("a"))).model_version == 2

    await h.service.on_model_rollout_changed(
        rollout_changed(2, sequence=3, change="aborted", state="aborted", share=0.0, steps=(100.0,))
    )

    assert {(await h.service.inspect(request(i))).model_version for i in IDS[:50]} == {1}
    assert h.store.rollouts[MODEL].state == "aborted"
    await h.service.stop()


async def test_a_paused_rollout_routes_nothing_and_resuming_routes_again() -> None:
    h = served()
    await h.service.refresh()
    await started(h, share=100.0, steps=(100.0,))

    await h.service.on_model_rollout_changed(
        rollout_changed(2, sequence=3, change="paused", state="paused", share=0.0, steps=(100.0,))
    )
    paused = (await h.service.inspect(request("a"))).model_version
    await h.service.on_model_rollout_changed(
        rollout_changed(2, sequence=4, change="resumed", share=100.0, steps=(100.0,))
    )

    assert (paused, (await h.service.inspect(request("a"))).model_version) == (1, 2)


async def test_a_new_instance_restores_the_rollout_and_routes_alike() -> None:
    h = served()
    await h.service.refresh()
    rollout = await started(h, share=25.0, step=1, lines=("line-3",))
    before = [(await h.service.inspect(request(i))).model_version for i in IDS[:200]]

    restarted = served(triton=h.triton, store=h.store)  # the same database
    await restarted.service.refresh()

    assert restarted.service.rollout == rollout
    after = [(await restarted.service.inspect(request(i))).model_version for i in IDS[:200]]
    assert after == before


async def test_an_instance_follows_a_rollout_another_recorded() -> None:
    h = served(policy=replace(POLICY, state_refresh_s=0.01))
    await h.service.start()
    other = served(triton=h.triton, store=h.store)
    await other.service.refresh()
    await started(other, share=100.0, steps=(100.0,))

    await asyncio.sleep(0.05)

    assert h.service.rollout == other.service.rollout
    assert (await h.service.inspect(request("a"))).model_version == 2
    await h.service.stop()
