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
SIGNATURE = "serving_default"
# The stack's two CPU cores are shared by every server and service: one instance, few threads.
INTRA_OP_THREADS = 2
INTER_OP_THREADS = 1


class TritonPythonModel:
    """Loads the SavedModel next to this file and runs its serving signature on each batch."""

    def initialize(self, args: dict[str, str]) -> None:
        """Load the SavedModel and answer one warm-up batch, so "ready" means "can answer".

        A version whose artifact is broken fails here, and Triton reports its load as failed
        instead of serving a model that errors on the first request.
        """
        tf.config.threading.set_intra_op_parallelism_threads(INTRA_OP_THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(INTER_OP_THREADS)
        config = json.loads(args["model_config"])
        self.input_name: str = config["input"][0]["name"]
        self.output_name: str = config["output"][0]["name"]
        dims = [int(d) for d in config["input"][0]["dims"]]
        path = os.path.join(args["model_repository"], args["model_version"], SAVED_MODEL_DIR)
        self.model = tf.saved_model.load(path)
        self.signature = self.model.signatures[SIGNATURE]
        _, arguments = self.signature.structured_input_signature
        if len(arguments) != 1:
            raise ValueError(f"{SIGNATURE} takes {sorted(arguments)}, expected one image input")
        (self.argument,) = arguments
        outputs = self.signature.structured_outputs
        if len(outputs) != 1:
            raise ValueError(f"{SIGNATURE} returns {sorted(outputs)}, expected one probability")
        (self.output_key,) = outputs
        self.predict(np.zeros([1, *dims], dtype=np.float32))

    def predict(self, batch: np.ndarray[Any, np.dtype[np.float32]]) -> np.ndarray[Any, Any]:
        """Probabilities as FP32 [n, 1], the shape config.pbtxt declares."""
        result = self.signature(**{self.argument: tf.constant(batch)})[self.output_key]
        return np.asarray(result, dtype=np.float32).reshape(-1, 1)

    def execute(self, requests: list[Any]) -> list[Any]:
        """Answer every request of a dynamic batch with one call of the model.

        Triton has already checked each request's shape and type against config.pbtxt; a failure
        of the model itself is returned as each request's error, never raised (raising would
        fail the whole batch without telling the clients why).
        """
        batches = [
            pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            for request in requests
        ]
        try:
            probabilities = self.predict(np.concatenate(batches))
        except Exception as error:  # the model's own failure, reported to every caller
            return [
                pb_utils.InferenceResponse(error=pb_utils.TritonError(f"model failed: {error}"))
                for _ in requests
            ]
        bounds = np.cumsum([len(batch) for batch in batches])[:-1]
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, part)])
            for part in np.split(probabilities, bounds)
        ]
