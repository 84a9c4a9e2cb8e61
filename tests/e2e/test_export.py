"""A deployed version taken out of the system by ``screwops models export`` runs elsewhere: its
SavedModel, loaded in a fresh virtual environment that holds only TensorFlow (the version
``uv.lock`` pins, from uv's cache) and nothing of ScrewOps, answers 50 new screws as the gateway
answers them.

End-to-end rather than integration: the version must be one the pipeline trained and the gateway
serves (the run test_pipeline.py deployed, or one made here; minutes), since only a trained
graph holds the alignment that makes the export self-contained.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest
from screwops.v1 import inspection_pb2
from screwops_contracts.models import MODEL_NAME
from screwops_imaging import decode, fit_frame
from screwops_settings import StackSettings
from screwops_synth import DEFECT_TYPES, render_screw

from tests.e2e.conftest import REPO, screwops
from tests.e2e.runs import finished_run, inspect

SCREWS = 50
# Triton and the fresh environment run the same graph on the same TensorFlow; only the batch
# (the gateway may batch requests together) can move a float32 score in its last digits.
TOLERANCE = 1e-4
SCORE = """
import json, sys
import numpy as np
import numpy.typing as npt
import tensorflow as tf

serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = serve(frames=tf.constant(np.load(sys.argv[2])))
print(json.dumps({name: out[name].numpy()[:, 0].tolist() for name in out}))
"""


def locked_tensorflow() -> str:
    """The TensorFlow requirement ``uv.lock`` pins (``tensorflow-cpu==X``)."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    (version,) = [p["version"] for p in lock["package"] if p["name"] == "tensorflow-cpu"]
    return f"tensorflow-cpu=={version}"


def tensorflow_only_python(root: Path) -> Path:
    """A new virtual environment under ``root`` with the locked TensorFlow and its dependencies
    alone; its interpreter."""
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv runs these tests; its path is in $UV"
    venv = root / "venv"
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run([uv, "venv", "-q", "--python", python_version, str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(python), locked_tensorflow()],
        check=True,
        timeout=600,
    )
    listed = subprocess.run(
        [uv, "pip", "list", "--python", str(python), "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
    )
    names = {package["name"] for package in json.loads(listed.stdout)}
    assert not {name for name in names if "screwops" in name}, names
    return python


def screws(frame_size: int) -> list[bytes]:
    """New screws as PNG, every other one defective; half at the model's frame size (passed to
    it as they are), half smaller (fitted to it by ``fit_frame``, in the gateway as here)."""
    seed = secrets.randbelow(1 << 30)
    pictures = []
    for i in range(SCREWS):
        defect = DEFECT_TYPES[(i // 2) % len(DEFECT_TYPES)] if i % 2 else None
        size = frame_size if i % 4 < 2 else frame_size * 3 // 4
        out = io.BytesIO()
        render_screw(np.random.default_rng([seed, i]), size=size, defect=defect).save(out, "PNG")
        pictures.append(out.getvalue())
    return pictures


def score_outside(
    root: Path, saved_model: Path, frames: npt.NDArray[np.uint8]
) -> dict[str, list[float]]:
    """``frames`` scored by ``saved_model`` in a TensorFlow-only environment made under
    ``root``, in a process that sees neither the repository nor the workspace's packages."""
    python = tensorflow_only_python(root)
    np.save(root / "frames.npy", frames)
    (root / "score.py").write_text(SCORE)
    scored = subprocess.run(
        [str(python), "score.py", str(saved_model), "frames.npy"],
        cwd=root,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(root))},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    answer: dict[str, list[float]] = json.loads(scored.stdout.strip().splitlines()[-1])
    return answer


@pytest.mark.usefixtures("services")
async def test_an_exported_version_scores_as_the_gateway_with_only_tensorflow(
    tmp_path: Path,
) -> None:
    run = await finished_run(StackSettings(), tmp_path)
    version = run.deployed.payload.version
    out = tmp_path / "export"

    card = screwops("models", "export", str(version), "--out", str(out), "--model", MODEL_NAME)

    assert (card["model_name"], card["version"]) == (MODEL_NAME, version)
    assert card["lineage"]["run_id"] == run.deployed.payload.run_id
    assert card["metrics"]["accuracy_interval"]["method"] == "wilson"
    assert card["training"]["params"]
    assert card["onnx"]["file"] is None
    assert "ImageProjectiveTransformV3" in card["onnx"]["reason"]
    assert json.loads((out / "model_card.json").read_text()) == card
    assert f"# {MODEL_NAME} v{version}" in (out / "MODEL_CARD.md").read_text()
    size, threshold = card["frame_size"], card["threshold"]

    pictures = screws(size)
    served: list[Any] = []
    refused = []
    for picture in pictures:
        try:
            answer = await inspect(picture, version=version, line_id="line-export")
        except grpc.aio.AioRpcError as error:
            refused.append(error.code())
            answer = None
        served.append(answer)
    frames = np.stack([fit_frame(decode(picture).image, size) for picture in pictures])
    outside = await asyncio.to_thread(score_outside, tmp_path, out / "saved_model", frames)

    # The gateway refuses a frame without a screw (FAILED_PRECONDITION), as part_found says.
    assert set(refused) <= {grpc.StatusCode.FAILED_PRECONDITION}, refused
    found = np.array(outside["part_found"]) >= 0.5
    assert found.tolist() == [answer is not None for answer in served]
    assert found.sum() >= SCREWS - 2, "the renders hold a screw each"
    differences, verdicts = [], 0
    for i, answer in enumerate(served):
        if answer is None:
            continue
        probability = outside["defect_probability"][i]
        assert answer.threshold == pytest.approx(threshold, abs=1e-7)
        differences.append(abs(answer.defect_probability - probability))
        assert differences[-1] <= TOLERANCE, (i, answer, probability)
        if abs(probability - threshold) > TOLERANCE:
            verdict = "VERDICT_DEFECT" if probability >= threshold else "VERDICT_GOOD"
            assert inspection_pb2.Verdict.Name(answer.verdict) == verdict, (i, answer)
            verdicts += 1
    print(
        f"v{version} exported: {len(differences)} of {SCREWS} screws found by both, largest "
        f"score difference {max(differences):.2e}, {verdicts} verdicts alike"
    )
