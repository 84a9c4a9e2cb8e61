"""The model contract between the trainer, the evaluator, the registry and the gateway.

The trainer exports a TensorFlow SavedModel whose serving signature takes a batch of preprocessed
images (``screwops_imaging.preprocess``: ``MODEL_INPUT_SIZE`` square, one channel, float32 in
[0, 1]) and returns the probability that each screw is defective. Triton serves it under
``MODEL_NAME`` with the tensor names below; the registry's ``production`` alias names the version
the gateway uses when a request pins none.
"""

from __future__ import annotations

MODEL_NAME = "screw-classifier"
# Triton loads a candidate under this name for the evaluator's infra validation.
STAGING_MODEL_NAME = "screw-classifier-staging"
PRODUCTION_ALIAS = "production"

INPUT_TENSOR = "IMAGE"  # FP32 [batch, MODEL_INPUT_SIZE, MODEL_INPUT_SIZE, 1]
OUTPUT_TENSOR = "DEFECT_PROBABILITY"  # FP32 [batch, 1]
DEFAULT_THRESHOLD = 0.5

# MinIO layout (bucket "models"): runs/<run_id>/saved_model/… for the SavedModel,
# runs/<run_id>/history.json, evaluations/<evaluation_id>.json, triton/<name>/<version>/… for the
# exported Triton model repository (the source the local repository is filled from).


def run_prefix(run_id: str) -> str:
    """Where a training run's artifacts live in the models bucket."""
    return f"runs/{run_id}"


def saved_model_prefix(run_id: str) -> str:
    """Where a run's SavedModel directory lives in the models bucket."""
    return f"{run_prefix(run_id)}/saved_model"
