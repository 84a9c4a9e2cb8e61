"""screwops_serving on the real Triton: two versions of a model of the frames contract exported
into the stack's model repository, loaded through the repository API, and answering as their
graphs say.

The model is the tiny one of :mod:`tests.frames_model` (mean brightness / 255, times a scale per
version; a part found in any frame that is not blank), a SavedModel with ``serving_default``
taking uint8 ``frames`` as the trainer's exports do.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from screwops_errors import DeadlineExceededError, InvalidInputError, NotFoundError
from screwops_serving import (
    TritonModels,
    export_version,
    frame_shape,
    remove_version,
    versions_present,
)
from screwops_settings import StackSettings, triton_model_control_key, triton_model_repository

from tests.frames_model import expected_scores, save_frames_model
from tests.support import unique

Frames = npt.NDArray[np.uint8]
FRAME_SIZE = 64
# Each version's scale of the mean brightness: two different models.
SCALES = {1: 1.0, 2: 0.5}


def images(count: int, *, seed: int = 0) -> Frames:
    """Random frames of FRAME_SIZE (a part found in each)."""
    shape = (count, *frame_shape(FRAME_SIZE))
    return np.random.default_rng(seed).integers(1, 256, shape, dtype=np.uint8)


@dataclass
class Served:
    name: str
    repository: Path
    triton: TritonModels


@asynccontextmanager
async def two_versions_served(
    settings: StackSettings, scratch: Path, name: str
) -> AsyncIterator[Served]:
    """Versions 1 and 2 of model ``name`` (the frames model at SCALES, saved under ``scratch``),
    exported to the stack's repository and loaded in Triton; removed after."""
    repository = triton_model_repository(settings.home)
    for version, scale in SCALES.items():
        save_frames_model(scratch / str(version), FRAME_SIZE, scale=scale)
        export_version(
            scratch / str(version), repository, name=name, version=version, frame_size=FRAME_SIZE
        )
    triton = TritonModels(
        settings.triton.grpc_url, model_control_key=triton_model_control_key(settings)
    )
    try:
        await triton.load(name)
        yield Served(name, repository, triton)
        await triton.unload(name)
    finally:
        await triton.close()
        shutil.rmtree(repository / name, ignore_errors=True)


@pytest.fixture(scope="module")
async def served(
    settings: StackSettings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    """Versions 1 and 2 of a uniquely named model, exported and loaded."""
    scratch = tmp_path_factory.mktemp("saved_models")
    name = unique("it_serving").replace("-", "_")
    async with two_versions_served(settings, scratch, name) as served:
        yield served


async def test_both_versions_are_loaded_and_ready(served: Served) -> None:
    assert await served.triton.loaded_versions(served.name) == [1, 2]
    for version in (1, 2):
        await served.triton.wait_ready(served.name, version, timeout_s=30)
    assert not await served.triton.ready(served.name, 3)


async def test_each_pinned_version_answers_as_its_graph_says(served: Served) -> None:
    batch = images(5)

    for version, scale in SCALES.items():
        answered = await served.triton.infer(served.name, version, batch, timeout_s=30)
        assert answered.probability.shape == answered.found.shape == (5,)
        probability, found = expected_scores(batch, scale=scale)
        np.testing.assert_allclose(answered.probability, probability, atol=1e-4)
        assert answered.found.tolist() == found.tolist()


async def test_an_unpinned_request_gets_the_newest_version(served: Served) -> None:
    batch = images(2, seed=1)
    answered = await served.triton.infer(served.name, None, batch, timeout_s=30)
    probability, _ = expected_scores(batch, scale=SCALES[2])
    np.testing.assert_allclose(answered.probability, probability, atol=1e-4)


async def test_a_blank_frame_check_answers_no_part_found(served: Served) -> None:
    scores = await served.triton.check(served.name, 1, frame_size=FRAME_SIZE, timeout_s=30)
    assert scores.found.tolist() == [0.0]
    assert await served.triton.frame_size(served.name) == FRAME_SIZE


async def test_triton_failures_are_typed(served: Served) -> None:
    with pytest.raises(NotFoundError, match="version 7"):
        await served.triton.infer(served.name, 7, images(1), timeout_s=30)
    with pytest.raises(NotFoundError):
        await served.triton.infer(unique("it_missing"), None, images(1), timeout_s=30)
    with pytest.raises(InvalidInputError, match="batch-size"):
        await served.triton.infer(served.name, 1, images(33), timeout_s=30)
    with pytest.raises(DeadlineExceededError):
        await served.triton.infer(served.name, 1, images(32), timeout_s=1e-4)
    other_size = np.ones((1, 32, 32, 1), np.uint8)
    with pytest.raises(InvalidInputError):
        await served.triton.infer(served.name, 1, other_size, timeout_s=30)


async def test_single_image_latency(served: Served) -> None:
    """What one camera sees: a single pinned image, end to end through the gRPC client."""
    image = images(1, seed=2)
    for _ in range(5):
        await served.triton.infer(served.name, 1, image, timeout_s=30)
    took = []
    for _ in range(50):
        started = time.perf_counter()
        await served.triton.infer(served.name, 1, image, timeout_s=30)
        took.append((time.perf_counter() - started) * 1000)
    median = statistics.median(took)
    p95 = statistics.quantiles(took, n=20)[-1]
    print(f"Triton single-image latency: median {median:.2f} ms, p95 {p95:.2f} ms")
    # Generous: the stack's two CPU cores are shared with every other server and test.
    assert median < 250


async def test_a_removed_version_is_unloaded_by_the_next_load(
    settings: StackSettings, tmp_path: Path
) -> None:
    """Eviction as the registry does it: remove the directory, load again; the rest serves."""
    name = unique("it_evict").replace("-", "_")
    repository = triton_model_repository(settings.home)
    save_frames_model(tmp_path / "sm", FRAME_SIZE)
    for version in (1, 2):
        export_version(
            tmp_path / "sm", repository, name=name, version=version, frame_size=FRAME_SIZE
        )
    async with TritonModels(
        settings.triton.grpc_url, model_control_key=triton_model_control_key(settings)
    ) as triton:
        try:
            await triton.load(name)
            assert await triton.loaded_versions(name) == [1, 2]

            assert remove_version(repository, name=name, version=1)
            await triton.load(name)

            assert versions_present(repository, name=name) == [2]
            assert await triton.loaded_versions(name) == [2]
            assert not await triton.ready(name, 1)
            # What lets a gateway skip a stale deployment instead of waiting for it.
            assert (await triton.unloaded(name, 1), await triton.unloaded(name, 2)) == (True, False)
            assert (await triton.infer(name, 2, images(1), timeout_s=30)).probability.shape == (1,)
            await triton.unload(name)
            assert not await triton.ready(name)
        finally:
            shutil.rmtree(repository / name, ignore_errors=True)
