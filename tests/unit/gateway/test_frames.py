"""The gateway on the frames contract: images fitted to the served version's frame, frames with
no screw refused without a verdict, and versions from before frame input refused."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from screwops_errors import FailedPreconditionError
from screwops_gateway.config import LogPolicy
from screwops_gateway.metrics import NO_PART
from screwops_gateway.service import NO_PART_FOUND, Inspection
from screwops_serving import Scores

from tests.frames_model import save_frames_model
from tests.support import FRAME_SIZE, model_deployed
from tests.unit.gateway.fakes import MODEL, FakeTriton, deployed, harness, png


def inspection(image: bytes, **fields: Any) -> Inspection:
    return Inspection(image=image, line_id="line-3", camera_id="cam-a", **fields)


def encoded(pixels: npt.NDArray[np.uint8]) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


async def test_an_image_of_another_size_is_fitted_to_the_versions_frame() -> None:
    h = harness(log_policy=LogPolicy(image_sample_rate=0))
    await h.service.start()

    await h.service.inspect(inspection(png(200, 100, shade=40)))
    await h.service.inspect(inspection(png(FRAME_SIZE, shade=40)))
    await h.service.stop()

    wide, square = h.triton.frames
    assert wide.shape == square.shape == (1, FRAME_SIZE, FRAME_SIZE, 1)
    assert wide.dtype == np.uint8
    assert (wide == 40).all(), "a plain image is padded with its own grey"


async def test_a_frame_with_no_screw_gets_no_verdict_and_no_record() -> None:
    h = harness(log_policy=LogPolicy(image_sample_rate=0))
    h.triton.no_part.add(1)
    await h.service.start()

    with pytest.raises(FailedPreconditionError) as error:
        await h.service.inspect(inspection(png()))
    await h.service.stop()

    assert error.value.message == NO_PART_FOUND
    assert h.metrics.unjudged_frames == {NO_PART: 1}
    assert h.metrics.statuses == ["FAILED_PRECONDITION"]
    assert list(h.published) == [], "no inspection is recorded for a frame with no verdict"


async def test_a_version_from_before_frame_input_is_refused_saying_to_retrain() -> None:
    h = harness(production=None)
    h.store.models[MODEL] = deployed(1, frame_size=0)
    await h.service.start()

    with pytest.raises(FailedPreconditionError, match="retrain"):
        await h.service.inspect(inspection(png()))
    with pytest.raises(FailedPreconditionError, match="retrain"):
        await h.service.on_model_deployed(model_deployed(MODEL, 2, frame_size=0))
    await h.service.stop()

    assert h.service.production is not None
    assert h.service.production.version == 1
    assert h.triton.calls == [], "nothing is computed for a model that cannot take frames"


async def test_a_pinned_version_never_announced_takes_the_frame_size_triton_serves() -> None:
    h = harness(production=None, log_policy=LogPolicy(image_sample_rate=0))
    h.triton.served_frame_size = 32
    await h.service.start()

    result = await h.service.inspect(inspection(png(), model_version=2))
    await h.service.inspect(inspection(png(), model_version=2))
    await h.service.stop()

    assert result.model_version == 2
    assert h.triton.frames[0].shape == (1, 32, 32, 1)
    # A version's frame size never changes: Triton's config is read once, not per inspection.
    assert h.triton.configs_read == 1


class SavedModelTriton(FakeTriton):
    """Triton answering with the tiny frames-contract SavedModel (mean brightness / 255, a part
    found when any pixel is above 0)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(loaded={(MODEL, 1): 0.0})
        import tensorflow as tf

        self.signature = tf.saved_model.load(str(directory)).signatures["serving_default"]

    async def infer(
        self,
        name: str,
        version: int | None,
        batch: npt.NDArray[np.uint8],
        *,
        timeout_s: float,
    ) -> Scores:
        self.frames.append(batch)
        result = self.signature(frames=batch)
        return Scores(
            probability=np.asarray(result["defect_probability"], np.float32).reshape(-1),
            found=np.asarray(result["part_found"], np.float32).reshape(-1),
        )


@pytest.fixture(scope="module")
def frames_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    return save_frames_model(tmp_path_factory.mktemp("model"), FRAME_SIZE)


async def test_the_contracts_model_judges_found_screws_and_refuses_blank_frames(
    frames_model: Path,
) -> None:
    h = harness(log_policy=LogPolicy(image_sample_rate=0), triton=SavedModelTriton(frames_model))
    await h.service.start()

    bright = np.full((FRAME_SIZE, FRAME_SIZE), 204, np.uint8)
    judged = await h.service.inspect(inspection(encoded(bright)))
    # Twice the frame's size, half of it at 255: shrunk to the frame, its mean is kept.
    large = np.zeros((2 * FRAME_SIZE, 2 * FRAME_SIZE), np.uint8)
    large[:, FRAME_SIZE:] = 255
    resized = await h.service.inspect(inspection(encoded(large)))
    with pytest.raises(FailedPreconditionError, match=NO_PART_FOUND):
        await h.service.inspect(inspection(encoded(np.zeros((48, 80), np.uint8))))
    await h.service.stop()

    assert judged.defect_probability == pytest.approx(0.8)
    assert judged.verdict.value == "DEFECT"
    assert resized.defect_probability == pytest.approx(0.5, abs=0.01)
    assert len(h.published) == 2
