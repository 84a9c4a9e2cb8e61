"""The real network on a handful of small rendered screws: it reports each epoch, its SavedModel
takes frames and serves the frames contract, and an error raised by ``on_epoch`` (how the service
stops a run) ends the fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import tensorflow as tf
from screwops_contracts.models import FRAMES_INPUT, PART_FOUND_OUTPUT, PROBABILITY_OUTPUT
from screwops_synth.render import render_screw
from screwops_trainer.model import configure_tensorflow, fit
from screwops_trainer.params import TrainingParams

TINY = TrainingParams(epochs=2, batch_size=4, filters=(4,), patience=1)
SIZE = 128


def data(n: int, seed: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    rng = np.random.default_rng(seed)
    targets = np.array([i % 2 for i in range(n)], dtype=np.float32)
    frames = np.stack(
        [
            np.asarray(render_screw(rng, size=SIZE, defect="scratch_head" if t else None))
            for t in targets
        ]
    )[..., None]
    return frames.astype(np.uint8), targets


def test_a_tiny_fit_reports_each_epoch_and_saves_a_model_of_the_frames_contract(
    tmp_path: Path,
) -> None:
    configure_tensorflow(intra_op_threads=2, inter_op_threads=1)
    epochs: list[tuple[int, dict[str, float]]] = []

    fitted = fit(TINY, data(8, 0), data(4, 1), on_epoch=lambda e, logs: epochs.append((e, logs)))

    assert [e for e, _ in epochs] == [1, 2]
    assert set(epochs[0][1]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert 1 <= fitted.best_epoch <= 2
    assert fitted.metrics()["epochs_run"] == 2.0
    assert fitted.frame_size == SIZE
    saved = fitted.save(tmp_path / "saved_model")
    serve = tf.saved_model.load(str(saved)).signatures["serving_default"]
    frames = np.concatenate([data(3, 2)[0], np.zeros((1, SIZE, SIZE, 1), np.uint8)])
    out = serve(**{FRAMES_INPUT: tf.constant(frames)})
    probabilities = out[PROBABILITY_OUTPUT].numpy()
    assert probabilities.shape == (4, 1)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    # Three screws are found; the blank frame holds none.
    assert out[PART_FOUND_OUTPUT].numpy().ravel().tolist() == [1.0, 1.0, 1.0, 0.0]


class StopError(Exception):
    pass


def test_an_error_raised_by_on_epoch_ends_the_fit() -> None:
    def stop(epoch: int, logs: dict[str, float]) -> None:
        raise StopError(f"after epoch {epoch}")

    with pytest.raises(StopError, match="after epoch 1"):
        fit(TINY.model_copy(update={"epochs": 5}), data(8, 0), data(4, 1), on_epoch=stop)
