"""The gateway fuzz benchmark's generator makes what it names, and its lag arithmetic holds."""

from __future__ import annotations

import math

import pytest
from screwops_errors import InvalidInputError
from screwops_imaging import decode

from benchmarks.fuzz_gateway import (
    KINDS,
    huge_header,
    lag_quantile,
    parse_metrics,
    payloads,
    requests,
)

GATEWAY_LIMITS = {"max_pixels": 4096 * 4096, "min_side": 32, "max_side": 4096}


@pytest.fixture(scope="module")
def pool() -> dict[str, list[bytes]]:
    return payloads(2, seed=7)


def test_the_pool_is_the_same_for_the_same_seed(pool: dict[str, list[bytes]]) -> None:
    assert set(pool) == set(KINDS)
    assert all(len(variants) == 2 for variants in pool.values())
    assert payloads(2, seed=7)["multi_frame"] == pool["multi_frame"]


@pytest.mark.parametrize(
    ("kind", "refusal"),
    [
        ("valid_png", None),
        ("valid_jpeg", None),
        ("bomb_png", None),  # within the limits: decoded in full, the costly case
        ("sixteen_bit", None),
        ("huge_dimensions", "larger than the maximum|over the limit of|decompression bomb"),
        ("float_tiff", "float images are not supported"),
        ("multi_frame", "frames; one is expected"),
    ],
)
def test_each_kind_is_what_it_names(
    pool: dict[str, list[bytes]], kind: str, refusal: str | None
) -> None:
    for data in pool[kind]:
        if refusal is None:
            decode(data, **GATEWAY_LIMITS)
        else:
            with pytest.raises(InvalidInputError, match=refusal):
                decode(data, **GATEWAY_LIMITS)


def test_a_bomb_is_small_on_the_wire_and_huge_dimensions_smaller(
    pool: dict[str, list[bytes]],
) -> None:
    assert max(map(len, pool["bomb_png"])) < 64 * 1024
    assert len(huge_header(100_000, 100_000)) < 200


def test_requests_take_every_kind_in_turn_with_unique_ids(pool: dict[str, list[bytes]]) -> None:
    made = list(requests(pool, 25, seed=3, model_version=2))

    kinds = [kind for kind, _ in made]
    assert {kinds.count(kind) for kind in KINDS} == {2, 3}
    assert len({r.request_id for _, r in made}) == 25
    assert all(r.model_version == 2 and r.line_id and r.camera_id for _, r in made)
    assert [r.image for _, r in made] == [r.image for _, r in requests(pool, 25, seed=3)]


METRICS = """# HELP screwops_event_loop_lag_seconds lag
screwops_event_loop_lag_seconds_bucket{le="0.005"} %d
screwops_event_loop_lag_seconds_bucket{le="0.01"} %d
screwops_event_loop_lag_seconds_bucket{le="0.02"} %d
screwops_event_loop_lag_seconds_bucket{le="0.05"} %d
screwops_event_loop_lag_seconds_bucket{le="+Inf"} %d
process_start_time_seconds 1.7e+09
"""


def test_the_lag_quantile_comes_from_the_buckets_growth_during_the_run() -> None:
    before = parse_metrics(METRICS % (100, 100, 100, 100, 100))
    after = parse_metrics(METRICS % (100 + 9980, 100 + 9985, 100 + 9995, 10_100, 10_100))

    assert before.started == 1.7e9
    assert lag_quantile(before, after) == 0.02
    assert lag_quantile(before, after, quantile=0.99) == 0.005
    assert lag_quantile(before, before) is None
    slow = parse_metrics(METRICS % (100, 100, 100, 100, 200))
    assert lag_quantile(before, slow) == math.inf
