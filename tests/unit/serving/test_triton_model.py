"""The Python-backend template, run outside Triton on a tiny SavedModel of the frames contract,
with a stand-in for ``triton_python_backend_utils``."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from screwops_serving import MODEL_FILE, SAVED_MODEL_DIR, model_config, model_template

from tests.frames_model import expected_scores, save_frames_model

pytest.importorskip("tensorflow")

SIZE = 32


class Tensor:
    def __init__(self, name: str, array: np.ndarray[Any, Any]) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray[Any, Any]:
        return self.array


class Response:
    def __init__(self, tensors: list[Tensor] | None = None, error: object = None) -> None:
        self.tensors = {t.name: t.array for t in tensors or []}
        self.error = error


def pb_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = Tensor  # type: ignore[attr-defined]
    module.InferenceResponse = Response  # type: ignore[attr-defined]
    module.TritonError = str  # type: ignore[attr-defined]
    module.get_input_tensor_by_name = lambda request, name: request[name]  # type: ignore[attr-defined]
    return module


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    version = root / "m" / "1"
    version.mkdir(parents=True)
    save_frames_model(version / SAVED_MODEL_DIR, SIZE)
    (version / MODEL_FILE).write_text(model_template())
    return root


def loaded(repository: Path, frame_size: int = SIZE) -> Any:
    """The template's TritonPythonModel, initialised as Triton would for ``frame_size``.

    Triton starts each model in a fresh stub process; here TensorFlow already runs (it saved the
    model), so the template's thread settings, which only a fresh process accepts, are skipped.
    """
    sys.modules["triton_python_backend_utils"] = pb_utils()
    spec = importlib.util.spec_from_file_location("model", repository / "m" / "1" / MODEL_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    vars(module)["tf"] = _without_thread_settings(vars(module)["tf"])
    config = _as_json(model_config("m", frame_size=frame_size))
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(config),
            "model_repository": str(repository / "m"),
            "model_version": "1",
        }
    )
    return model


def _without_thread_settings(tf: Any) -> Any:
    threading = types.SimpleNamespace(
        set_intra_op_parallelism_threads=lambda _: None,
        set_inter_op_parallelism_threads=lambda _: None,
    )
    return types.SimpleNamespace(
        config=types.SimpleNamespace(threading=threading),
        saved_model=tf.saved_model,
        constant=tf.constant,
        uint8=tf.uint8,
    )


def _as_json(pbtxt: str) -> dict[str, Any]:
    """The part of config.pbtxt the template reads, as Triton hands it over (JSON)."""
    dims = pbtxt.split("dims: [ ")[1].split(" ]")[0]
    return {"input": [{"name": "frames", "dims": [d.strip() for d in dims.split(",")]}]}


def test_a_dynamic_batch_is_answered_per_request_with_both_outputs(repository: Path) -> None:
    model = loaded(repository)
    rng = np.random.default_rng(1)
    first = rng.integers(0, 256, (2, SIZE, SIZE, 1), dtype=np.uint8)
    blank = np.zeros((1, SIZE, SIZE, 1), np.uint8)

    responses = model.execute(
        [{"frames": Tensor("frames", first)}, {"frames": Tensor("frames", blank)}]
    )

    for response, frames in zip(responses, (first, blank), strict=True):
        assert response.error is None
        probability, found = expected_scores(frames)
        assert response.tensors["defect_probability"].dtype == np.float32
        assert response.tensors["defect_probability"].shape == (len(frames), 1)
        np.testing.assert_allclose(
            response.tensors["defect_probability"][:, 0], probability, rtol=1e-5
        )
        assert response.tensors["part_found"][:, 0].tolist() == found.tolist()
    assert responses[1].tensors["part_found"][0, 0] == 0.0


def test_a_model_failure_is_each_requests_error(repository: Path) -> None:
    model = loaded(repository)

    def broken(**_: Any) -> Any:
        raise RuntimeError("out of memory")

    model.signature = broken
    frames = np.zeros((1, SIZE, SIZE, 1), np.uint8)

    responses = model.execute([{"frames": Tensor("frames", frames)}] * 2)

    assert [str(r.error) for r in responses] == ["model failed: out of memory"] * 2


def test_a_config_of_another_frame_size_fails_the_load(repository: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        loaded(repository, frame_size=SIZE * 2)
