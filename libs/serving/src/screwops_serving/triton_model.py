"""Triton Python-backend model that serves one version of a ScrewOps TensorFlow SavedModel.

This file is a template: ``screwops_serving.export_version`` copies it as ``model.py`` into every
version directory of the Triton model repository, beside the SavedModel (``model.savedmodel/``).
It runs inside Triton's Python-backend stub process, never in a ScrewOps service, so it imports
only NumPy, TensorFlow and Triton's ``triton_python_backend_utils``: no ``screwops`` package is
installed where Triton runs in docker-compose.

Why the Python backend: the native stack's ``tritonserver`` comes from the ``nvidia-pytriton``
wheel, which ships only the Python backend (no TensorFlow backend), and one model format must work
on both stacks. TensorFlow must therefore be importable in Triton's environment: natively the stub
inherits the workspace virtual environment (the stack starts tritonserver from it), and in
docker-compose ``deploy/triton/Dockerfile`` adds ``tensorflow-cpu`` to the official image.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import tensorflow as tf
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

SAVED_MODEL_DIR = "model.savedmodel"
# The contract of screwops_contracts.models, restated: this file cannot import it.
SIGNATURE = "serving_default"
FRAMES = "frames"
PROBABILITY = "defect_probability"
PART_FOUND = "part_found"
# The stack's two CPU cores are shared by every server and service: one instance, few threads.
INTRA_OP_THREADS = 2
INTER_OP_THREADS = 1


class TritonPythonModel:
    """Loads the SavedModel next to this file and runs its serving signature on each batch."""

    def initialize(self, args: dict[str, str]) -> None:
        """Load the SavedModel and answer one warm-up batch, so "ready" means "can answer".

        A version whose artifact is broken, or whose signature is not the frames contract,
        fails here, and Triton reports its load as failed instead of serving a model that errors
        on the first request. The warm-up frame is blank (no screw found: a fine answer).
        """
        tf.config.threading.set_intra_op_parallelism_threads(INTRA_OP_THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(INTER_OP_THREADS)
        config = json.loads(args["model_config"])
        dims = [int(d) for d in config["input"][0]["dims"]]
        path = os.path.join(args["model_repository"], args["model_version"], SAVED_MODEL_DIR)
        self.model = tf.saved_model.load(path)
        self.signature = self.model.signatures[SIGNATURE]
        _, arguments = self.signature.structured_input_signature
        if sorted(arguments) != [FRAMES]:
            raise ValueError(f"{SIGNATURE} takes {sorted(arguments)}, expected [{FRAMES!r}]")
        frames = arguments[FRAMES]
        if frames.dtype != tf.uint8 or frames.shape.as_list()[1:] != dims:
            raise ValueError(
                f"{SIGNATURE} takes {FRAMES} as {frames.dtype.name} {frames.shape}, expected "
                f"uint8 [None, {', '.join(map(str, dims))}] (config.pbtxt)"
            )
        outputs = sorted(self.signature.structured_outputs)
        if outputs != sorted([PROBABILITY, PART_FOUND]):
            raise ValueError(f"{SIGNATURE} returns {outputs}, expected {PROBABILITY}, {PART_FOUND}")
        self.predict(np.zeros([1, *dims], dtype=np.uint8))

    def predict(
        self, batch: np.ndarray[Any, np.dtype[np.uint8]]
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """(defect probabilities, part found) for a batch of frames, each FP32 [n, 1] as
        config.pbtxt declares."""
        result = self.signature(**{FRAMES: tf.constant(batch, dtype=tf.uint8)})
        probability = np.asarray(result[PROBABILITY], dtype=np.float32).reshape(-1, 1)
        found = np.asarray(result[PART_FOUND], dtype=np.float32).reshape(-1, 1)
        return probability, found

    def execute(self, requests: list[Any]) -> list[Any]:
        """Answer every request of a dynamic batch with one call of the model.

        Triton has already checked each request's shape and type against config.pbtxt; a failure
        of the model itself is returned as each request's error, never raised (raising would
        fail the whole batch without telling the clients why).
        """
        batches = [
            pb_utils.get_input_tensor_by_name(request, FRAMES).as_numpy() for request in requests
        ]
        try:
            probabilities, found = self.predict(np.concatenate(batches))
        except Exception as error:  # the model's own failure, reported to every caller
            return [
                pb_utils.InferenceResponse(error=pb_utils.TritonError(f"model failed: {error}"))
                for _ in requests
            ]
        bounds = np.cumsum([len(batch) for batch in batches])[:-1]
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor(PROBABILITY, probability), pb_utils.Tensor(PART_FOUND, part)]
            )
            for probability, part in zip(
                np.split(probabilities, bounds), np.split(found, bounds), strict=True
            )
        ]
