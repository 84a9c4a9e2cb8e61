"""Serving: the Triton side of the model contract.

:mod:`~screwops_serving.repository` lays versions out in Triton's model repository (the
Python-backend ``model.py`` that loads the SavedModel, and ``config.pbtxt``);
:class:`TritonModels` loads them through Triton's repository API and runs inferences, with
Triton's failures turned into the typed errors of ``screwops_errors``. The registry deploys with
both, the evaluator validates candidates under ``STAGING_MODEL_NAME`` and the gateway infers.
:mod:`~screwops_serving.sync` keeps each replica of a multi-replica Triton (Kubernetes) serving
what the shared repository holds.
"""

from screwops_serving.client import Scores, TritonModels, frame_shape
from screwops_serving.repository import (
    CONFIG_FILE,
    MODEL_FILE,
    SAVED_MODEL_DIR,
    config_frame_size,
    export_version,
    model_config,
    model_template,
    remove_version,
    restore_version,
    versions_present,
)

__all__ = [
    "CONFIG_FILE",
    "MODEL_FILE",
    "SAVED_MODEL_DIR",
    "Scores",
    "TritonModels",
    "config_frame_size",
    "export_version",
    "frame_shape",
    "model_config",
    "model_template",
    "remove_version",
    "restore_version",
    "versions_present",
]
