"""screwops_serving on the real Triton: two versions of a Keras model exported into the stack's
model repository, loaded through the repository API, and answering as Keras does.

The model is tiny (Conv2D -> GlobalAveragePooling -> Dense(sigmoid), random weights) and saved
with Keras 3's ``model.export`` (a SavedModel with ``serving_default``), as the trainer does.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from screwops_errors import DeadlineExceededError, InvalidInputError, NotFoundError
from screwops_serving import (
    INPUT_SHAPE,
    TritonModels,
    export_version,
    remove_version,
    versions_present,
)
from screwops_settings import StackSettings, triton_model_repository

from tests.support import unique

Batch = npt.NDArray[np.float32]


def keras_saved_model(directory: Path, *, seed: int) -> Any:
    """Build and export a tiny classifier with random weights; return the Keras model.

    TensorFlow is imported here, not at module level, so collecting the test suite stays fast.
    """
    import keras
    import tensorflow as tf

    if not tf.config.threading.get_intra_op_parallelism_threads():
        tf.config.threading.set_intra_op_parallelism_threads(2)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(INPUT_SHAPE)
    features = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    outputs = keras.layers.Dense(1, activation="sigmoid")(pooled)
    model = keras.Model(inputs, outputs)
    model.export(str(directory), verbose=False)
    return model


def images(count: int, *, seed: int = 0) -> Batch:
    """Preprocessed-looking images: float32 in [0, 1]."""
    return np.random.default_rng(seed).random((count, *INPUT_SHAPE), dtype=np.float32)


def predictions(model: Any, batch: Batch) -> Batch:
    result: Batch = np.asarray(model.predict(batch, verbose=0), dtype=np.float32).reshape(-1)
    return result


@dataclass
class Served:
    name: str
    repository: Path
    triton: TritonModels
    keras: dict[int, Any]


@asynccontextmanager
async def two_versions_served(
    settings: StackSettings, scratch: Path, name: str
) -> AsyncIterator[Served]:
    """Versions 1 and 2 of model ``name`` (Keras models of seeds 1 and 2, saved under
    ``scratch``), exported to the stack's repository and loaded in Triton; removed after."""
    repository = triton_model_repository(settings.home)
    keras_models = {v: keras_saved_model(scratch / str(v), seed=v) for v in (1, 2)}
    for version in keras_models:
        export_version(scratch / str(version), repository, name=name, version=version)
    triton = TritonModels(settings.triton.grpc_url)
    try:
        await triton.load(name)
        yield Served(name, repository, triton, keras_models)
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


async def test_each_pinned_version_answers_as_its_keras_model(served: Served) -> None:
    batch = images(5)

    for version in (1, 2):
        answered = await served.triton.infer(served.name, version, batch, timeout_s=30)
        assert answered.shape == (5,)
        expected = predictions(served.keras[version], batch)
        np.testing.assert_allclose(answered, expected, atol=1e-4)
    first = await served.triton.infer(served.name, 1, batch, timeout_s=30)
    second = await served.triton.infer(served.name, 2, batch, timeout_s=30)
    assert not np.allclose(first, second, atol=1e-4), "the versions are different models"


async def test_an_unpinned_request_gets_the_newest_version(served: Served) -> None:
    batch = images(2, seed=1)
    answered = await served.triton.infer(served.name, None, batch, timeout_s=30)
    np.testing.assert_allclose(answered, predictions(served.keras[2], batch), atol=1e-4)


async def test_a_blank_image_check_returns_a_probability(served: Served) -> None:
    probability = await served.triton.check(served.name, 1, timeout_s=30)
    assert 0.0 <= probability <= 1.0


async def test_triton_failures_are_typed(served: Served) -> None:
    with pytest.raises(NotFoundError, match="version 7"):
        await served.triton.infer(served.name, 7, images(1), timeout_s=30)
    with pytest.raises(NotFoundError):
        await served.triton.infer(unique("it_missing"), None, images(1), timeout_s=30)
    with pytest.raises(InvalidInputError, match="batch-size"):
        await served.triton.infer(served.name, 1, images(33), timeout_s=30)
    with pytest.raises(DeadlineExceededError):
        await served.triton.infer(served.name, 1, images(32), timeout_s=1e-4)


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
    keras_saved_model(tmp_path / "sm", seed=3)
    for version in (1, 2):
        export_version(tmp_path / "sm", repository, name=name, version=version)
    async with TritonModels(settings.triton.grpc_url) as triton:
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
            assert (await triton.infer(name, 2, images(1), timeout_s=30)).shape == (1,)
            await triton.unload(name)
            assert not await triton.ready(name)
        finally:
            shutil.rmtree(repository / name, ignore_errors=True)
