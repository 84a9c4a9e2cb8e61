"""The supervised classifier: a small Keras CNN trained from scratch on the screws' strips.

Everything that decides what a trained supervised model is lives here: the hyper-parameters
(:class:`TrainingParams`, part of a run's identity, kept in :mod:`screwops_trainer.params` so
reading them needs no TensorFlow), the network (:func:`build_model`), the training loop
(:func:`fit`) and the SavedModel the rest of the system serves (:meth:`Fitted.save`, through
:mod:`screwops_trainer.frames`). Nothing is downloaded: the network starts from seeded random
weights, so the same data and params give the same model on the same machine.

The network sees each screw's strip (:mod:`screwops_trainer.align`: head on the left, one scale
for every screw), cut from the full frame by the same ops the exported model runs, so pose is
no longer something to learn; the augmentation mirrors a strip across the axis (a screw seen
from its other side) and is the identity when serving.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from screwops_trainer.frames import FrameModel, export_frames, geometry, strips
from screwops_trainer.params import ARCHITECTURE, TrainingParams

__all__ = [
    "ARCHITECTURE",
    "EpochReporter",
    "Fitted",
    "TrainingParams",
    "build_model",
    "configure_tensorflow",
    "fit",
]

log = logging.getLogger("screwops.trainer.model")

INPUT_NAME = "image"
STANDARDIZE_EPSILON = 1e-3
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")

Images = npt.NDArray[np.uint8]
Strips = npt.NDArray[np.float32]
Targets = npt.NDArray[np.float32]
EpochLogs = dict[str, float]
OnEpoch = Callable[[int, EpochLogs], None]


def configure_tensorflow(*, intra_op_threads: int, inter_op_threads: int) -> None:
    """Bound TensorFlow's thread pools before it starts, on a machine shared by every service.

    TensorFlow fixes its pools when it first runs an op; a later call (a test that already
    trained) cannot change them, so that case is only logged.
    """
    threading = tf.config.threading
    if (
        threading.get_intra_op_parallelism_threads() == intra_op_threads
        and threading.get_inter_op_parallelism_threads() == inter_op_threads
    ):
        return
    try:
        threading.set_intra_op_parallelism_threads(intra_op_threads)
        threading.set_inter_op_parallelism_threads(inter_op_threads)
    except RuntimeError as error:
        log.warning("TensorFlow's thread pools are already running: %s", error)


def _augmentation(params: TrainingParams) -> list[keras.layers.Layer]:
    seed = params.seed
    layers: list[keras.layers.Layer] = []
    if params.augment_flip:
        layers.append(keras.layers.RandomFlip("vertical", seed=seed))
    if params.augment_rotation:
        layers.append(
            keras.layers.RandomRotation(params.augment_rotation, fill_mode="reflect", seed=seed + 1)
        )
    if params.augment_translation:
        shift = params.augment_translation
        layers.append(
            keras.layers.RandomTranslation(shift, shift, fill_mode="reflect", seed=seed + 2)
        )
    return layers


@keras.saving.register_keras_serializable(package="screwops")
class Standardize(keras.layers.Layer):  # type: ignore[misc]  # keras is untyped
    """Each image to zero mean and unit spread: the light of the hall and the camera's gain
    change from frame to frame, the screw's shape does not."""

    def call(self, images: tf.Tensor) -> tf.Tensor:
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        spread = tf.math.reduce_std(images, axis=[1, 2, 3], keepdims=True)
        return (images - mean) / (spread + STANDARDIZE_EPSILON)


def build_model(params: TrainingParams, *, shape: tuple[int, int]) -> keras.Model:
    """The network: augmentation, standardisation, conv blocks (Conv-BN-ReLU-MaxPool), global
    max pooling, a sigmoid.

    The strip hands over the screw aligned, so a small network trained from scratch suffices.
    A defect is a few strong responses in one place of the screw: global max pooling keeps them,
    where averaging over the whole strip would dilute them. Batch
    normalisation with a short memory (momentum 0.9) gives usable statistics after the few
    hundred steps a small data set allows.
    The input is a strip of ``shape`` (height, width) x 1 in [0, 1].
    """
    inputs = keras.Input(shape=(*shape, 1), name=INPUT_NAME, dtype="float32")
    x = inputs
    for layer in _augmentation(params):
        x = layer(x)
    x = Standardize(name="standardize")(x)
    for index, filters in enumerate(params.filters):
        x = keras.layers.Conv2D(
            filters, 3, padding="same", use_bias=False, name=f"block{index + 1}_conv"
        )(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{index + 1}_bn")(x)
        x = keras.layers.ReLU(name=f"block{index + 1}_relu")(x)
        x = keras.layers.MaxPooling2D(name=f"block{index + 1}_pool")(x)
    x = keras.layers.GlobalMaxPooling2D(name="pool")(x)
    x = keras.layers.Dropout(params.dropout, seed=params.seed + 5, name="dropout")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="defect_probability")(x)
    model = keras.Model(inputs, outputs, name="screw_classifier")
    model.compile(
        optimizer=keras.optimizers.Adam(params.learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    return model


class EpochReporter(keras.callbacks.Callback):  # type: ignore[misc]  # keras is untyped
    """Hands each finished epoch's numbers to ``on_epoch`` (the run record, as training goes)."""

    def __init__(self, on_epoch: OnEpoch) -> None:
        super().__init__()
        self._on_epoch = on_epoch

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._on_epoch(epoch + 1, {k: float(v) for k, v in (logs or {}).items() if k in METRICS})


@dataclass(frozen=True)
class Fitted:
    """A trained network and how it got there."""

    model: keras.Model
    history: list[EpochLogs]
    best_epoch: int
    seconds: float
    frame_size: int
    strip_pixels: int

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    def metrics(self) -> dict[str, float]:
        """The numbers of the epoch whose weights were kept (the best validation loss)."""
        best = self.history[self.best_epoch - 1]
        return {
            **{name: best[name] for name in METRICS if name in best},
            "best_epoch": float(self.best_epoch),
            "epochs_run": float(self.epochs_run),
            "seconds": round(self.seconds, 3),
        }

    def save(self, directory: Path) -> Path:
        """Write the SavedModel everything downstream serves: frames in, the network's score
        of each screw's strip out (:mod:`screwops_trainer.frames`)."""
        network = self.model

        def score(cut: tf.Tensor) -> tf.Tensor:
            return network(cut, training=False)[:, 0]

        shape = geometry(self.frame_size, most_pixels_along=self.strip_pixels)
        return export_frames(FrameModel(score, self.frame_size, shape, network), directory)


def fit(
    params: TrainingParams,
    train: tuple[Images, Targets],
    validation: tuple[Images, Targets],
    *,
    on_epoch: OnEpoch | None = None,
) -> Fitted:
    """Train a fresh network on the strips of ``train``'s frames, stopping early on
    ``validation``'s loss.

    Blocking and CPU-bound: services run it in a worker thread. The weights of the epoch with the
    lowest validation loss are the ones kept. A frame in which no screw is found is still fed
    (its strip is background); the served model refuses such frames before scoring them.
    """
    keras.utils.set_random_seed(params.seed)
    if params.deterministic:
        tf.config.experimental.enable_op_determinism()
    size = int(train[0].shape[1])
    shape = geometry(size, most_pixels_along=params.strip_pixels)
    train_strips, _ = strips(train[0], shape)
    validation_strips, _ = strips(validation[0], shape)
    model = build_model(params, shape=shape.shape)
    stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=params.patience, restore_best_weights=True
    )
    # Halving the step when validation stalls settles the noisy small-data loss near its best.
    slowing = keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", factor=0.5, patience=params.lr_patience, min_lr=1e-5
    )
    callbacks: list[keras.callbacks.Callback] = [stopping, slowing]
    if on_epoch is not None:
        callbacks.append(EpochReporter(on_epoch))
    began = time.perf_counter()
    history = model.fit(
        train_strips,
        train[1],
        batch_size=params.batch_size,
        epochs=params.epochs,
        validation_data=(validation_strips, validation[1]),
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    seconds = time.perf_counter() - began
    epochs = [
        {name: float(history.history[name][i]) for name in METRICS if name in history.history}
        for i in range(len(history.history["loss"]))
    ]
    return Fitted(model, epochs, int(stopping.best_epoch) + 1, seconds, size, params.strip_pixels)
