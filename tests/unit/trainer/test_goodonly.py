"""The good-only model on small rendered screws: trained on good frames alone it scores defects
above good screws, its scores are calibrated on good validation screws, its bank is bounded, and
its SavedModel serves the frames contract."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import tensorflow as tf
from screwops_contracts.models import FRAMES_INPUT, PART_FOUND_OUTPUT, PROBABILITY_OUTPUT
from screwops_synth import DEFECT_TYPES
from screwops_synth.render import render_screw
from screwops_trainer import goodonly
from screwops_trainer.backbone import load_backbone, read_state_dict
from screwops_trainer.frames import strips
from screwops_trainer.model import configure_tensorflow
from screwops_trainer.params import TrainingParams, for_kind
from sklearn.metrics import roc_auc_score

SIZE = 192


def frames(good: int, bad: int, seed: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    rng = np.random.default_rng(seed)
    kinds = [None] * good + [DEFECT_TYPES[i % len(DEFECT_TYPES)] for i in range(bad)]
    images = [np.asarray(render_screw(rng, size=SIZE, defect=kind)) for kind in kinds]
    targets = np.array([0.0 if kind is None else 1.0 for kind in kinds], dtype=np.float32)
    return np.stack(images)[..., None].astype(np.uint8), targets


def test_trained_on_good_screws_alone_it_scores_defects_above_good_ones(tmp_path: Path) -> None:
    configure_tensorflow(intra_op_threads=2, inter_op_threads=1)
    params = for_kind(TrainingParams(bank_size=12), "good_only")
    train, validation = frames(16, 4, seed=1), frames(20, 4, seed=2)

    fitted = goodonly.fit(params, train, validation)

    # The defective frames of both splits are never looked at; the bank is capped.
    assert fitted.validation_good == 20
    assert fitted.scorer.bank.shape[0] == 12
    assert fitted.frame_size == SIZE
    serve = tf.saved_model.load(str(fitted.save(tmp_path / "m"))).signatures["serving_default"]
    test_frames, targets = frames(10, 10, seed=3)
    blank = np.zeros((1, SIZE, SIZE, 1), np.uint8)
    out = serve(**{FRAMES_INPUT: tf.constant(np.concatenate([test_frames, blank]))})
    scores = out[PROBABILITY_OUTPUT].numpy().ravel()
    found = out[PART_FOUND_OUTPUT].numpy().ravel()
    assert found.tolist() == [1.0] * 20 + [0.0]
    assert roc_auc_score(targets, scores[:20]) >= 0.9
    assert ((scores >= 0) & (scores <= 1)).all()


def test_calibration_puts_good_validation_screws_median_near_0_1_and_99th_at_0_5() -> None:
    configure_tensorflow(intra_op_threads=2, inter_op_threads=1)
    params = for_kind(TrainingParams(bank_size=8), "good_only")
    fitted = goodonly.fit(params, frames(10, 0, seed=4), frames(30, 0, seed=5))
    cut, _ = strips(frames(30, 0, seed=5)[0], fitted.shape)
    calibrated = fitted.scorer(tf.constant(cut)).numpy()
    assert float(np.median(calibrated)) == pytest.approx(0.1, abs=0.02)
    assert float(np.quantile(calibrated, 0.99)) == pytest.approx(0.5, abs=0.02)


def test_a_good_only_fit_needs_good_validation_screws() -> None:
    params = for_kind(TrainingParams(), "good_only")
    train = frames(4, 0, seed=6)
    with pytest.raises(ValueError, match="needs good training and validation screws"):
        goodonly.fit(params, train, frames(0, 2, seed=7))


def test_the_bank_keeps_the_screws_that_cover_the_set_farthest_first() -> None:
    points = np.array([[0.0], [0.1], [5.0], [10.0], [9.7]], dtype=np.float32)
    assert goodonly._farthest_first(points, 3) == [0, 3, 2]
    assert goodonly._farthest_first(points, 9) == [0, 3, 2, 4, 1]


def test_the_packaged_imagenet_weights_load_without_torch_into_the_backbone() -> None:
    backbone = load_backbone()
    maps = backbone.features(tf.zeros([1, 64, 200, 1]))
    assert maps.shape == (1, 8, 25, backbone.channels)
    assert backbone.channels == 40 + 112


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("true",))


def test_a_weights_file_that_would_run_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    with path.open("wb") as stream:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, stream)
        pickle.dump({"weight": _Payload()}, stream)
    with path.open("rb") as stream, pytest.raises(pickle.UnpicklingError, match="system"):
        read_state_dict(stream)
