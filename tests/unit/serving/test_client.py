"""TritonModels' typed errors that need no server: bad batches, and nobody listening."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from screwops_errors import InvalidInputError, UnavailableError
from screwops_serving import Scores, TritonModels, frame_shape

from tests.support import free_port


@pytest.mark.parametrize(
    "batch",
    [
        np.zeros((1, *frame_shape(64)), dtype=np.float32),
        np.zeros(frame_shape(64), dtype=np.uint8),
        np.zeros((1, 64, 32, 1), dtype=np.uint8),
        np.zeros((1, 64, 64, 3), dtype=np.uint8),
        np.zeros((0, *frame_shape(64)), dtype=np.uint8),
    ],
)
async def test_a_batch_of_the_wrong_shape_or_type_is_refused_before_sending(
    batch: npt.NDArray[Any],
) -> None:
    async with TritonModels(f"127.0.0.1:{free_port()}") as triton:
        with pytest.raises(InvalidInputError):
            await triton.infer("m", 1, batch, timeout_s=1)


async def test_an_unreachable_triton_is_unavailable_not_missing() -> None:
    """The gateway answers UNAVAILABLE (retry) here, never NOT_FOUND."""
    async with TritonModels(f"127.0.0.1:{free_port()}", call_timeout_s=2) as triton:
        with pytest.raises(UnavailableError):
            await triton.ready("m", 1)
        with pytest.raises(UnavailableError):
            await triton.load("m")
        with pytest.raises(UnavailableError):
            await triton.infer("m", None, np.zeros((1, *frame_shape(64)), np.uint8), timeout_s=2)


def test_scores_say_where_a_part_was_found() -> None:
    scores = Scores(
        probability=np.array([0.9, 0.2], np.float32), found=np.array([0.0, 1.0], np.float32)
    )
    assert scores.part_found.tolist() == [False, True]
