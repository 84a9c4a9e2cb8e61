"""Scoring an exported SavedModel the way Triton serves it: one score per image, in order,
whatever the batch size."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from screwops_trainer.model import configure_tensorflow
from screwops_trainer.scoring import score_saved_model


def test_the_saved_models_serving_signature_scores_every_image_in_order(tmp_path: Path) -> None:
    configure_tensorflow(intra_op_threads=2, inter_op_threads=1)
    keras.utils.set_random_seed(3)
    network = keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    network.export(str(tmp_path / "saved_model"), format="tf_saved_model", verbose=False)
    images = np.random.default_rng(0).uniform(0, 1, (7, 8, 8, 1)).astype(np.float32)

    scores = score_saved_model(tmp_path / "saved_model", images, batch_size=3)

    assert scores.shape == (7,)
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, network.predict(images, verbose=0)[:, 0], rtol=1e-5)
    assert score_saved_model(tmp_path / "saved_model", images[:0]).shape == (0,)
