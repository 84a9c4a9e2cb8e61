"""Scoring an exported SavedModel the way Triton serves it: one score per frame, in order,
whatever the batch size, and a frame without a screw scored as a reject."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from screwops_trainer.model import configure_tensorflow
from screwops_trainer.scoring import score_saved_model

from tests.frames_model import expected_scores, save_frames_model


def test_the_saved_models_serving_signature_scores_every_frame_in_order(tmp_path: Path) -> None:
    configure_tensorflow(intra_op_threads=2, inter_op_threads=1)
    saved = save_frames_model(tmp_path / "saved_model", 8)
    frames = np.random.default_rng(0).integers(1, 256, (7, 8, 8, 1), dtype=np.uint8)
    frames[4] = 0  # no part in this one

    scores = score_saved_model(saved, frames, batch_size=3)

    probability, found = expected_scores(frames)
    assert scores.shape == (7,)
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, np.where(found > 0, probability, 1.0), rtol=1e-5)
    assert scores[4] == 1.0
    assert score_saved_model(saved, frames[:0]).shape == (0,)
