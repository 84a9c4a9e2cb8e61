"""Trainer's settings: its defaults, and params overridden one at a time from the environment."""

from __future__ import annotations

import pytest
from screwops_contracts.models import MODEL_NAME, ModelKind
from screwops_storage import ClaimTimes
from screwops_trainer.config import Rules, TrainerSettings
from screwops_trainer.params import ARCHITECTURE, GOOD_ONLY_ARCHITECTURE, TrainingParams
from screwops_trainer.threshold import ThresholdRules


def test_defaults_bound_tensorflow_and_train_with_the_default_params() -> None:
    settings = TrainerSettings()
    assert (settings.service_name, settings.metrics_port) == ("trainer", 9104)
    assert (settings.intra_op_threads, settings.inter_op_threads) == (2, 1)
    assert settings.model_name == MODEL_NAME
    assert settings.params == TrainingParams()
    assert not hasattr(settings, "grpc_port")


def test_each_param_is_overridable_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREWOPS_TRAINER_PARAMS__EPOCHS", "3")
    monkeypatch.setenv("SCREWOPS_TRAINER_PARAMS__FILTERS", "[8,16]")
    monkeypatch.setenv("SCREWOPS_TRAINER_INTRA_OP_THREADS", "1")
    settings = TrainerSettings()
    assert settings.params == TrainingParams(epochs=3, filters=(8, 16))
    assert settings.intra_op_threads == 1


def test_an_unknown_param_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCREWOPS_TRAINER_PARAMS__EPOCS", "3")
    with pytest.raises(ValueError, match="epocs"):
        TrainerSettings()


@pytest.mark.usefixtures("clean_environment")
def test_a_good_only_trainer_gets_its_kinds_model_and_full_resolution_strips(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCREWOPS_TRAINER_MODEL_KIND", "good_only")
    params = TrainerSettings().rules().params
    assert params.architecture == GOOD_ONLY_ARCHITECTURE
    assert params.strip_pixels == 820

    monkeypatch.setenv("SCREWOPS_TRAINER_PARAMS__STRIP_PIXELS", "512")
    assert TrainerSettings().rules().params.strip_pixels == 512
    monkeypatch.setenv("SCREWOPS_TRAINER_MODEL_KIND", "supervised")
    supervised = TrainerSettings().rules().params
    # The kind's architecture whatever was set: a run id says which kind trained it.
    assert (supervised.architecture, supervised.strip_pixels) == (ARCHITECTURE, 512)


@pytest.mark.usefixtures("clean_environment")
def test_the_rules_carry_the_model_its_params_its_threshold_concurrency_and_run_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "MODEL_NAME": "bolt-classifier",
        "PARAMS__EPOCHS": "3",
        "MODEL_KIND": "supervised",
        "THRESHOLD__MIN_RECALL": "0.9",
        "IMAGE_CONCURRENCY": "2",
        "MAX_RUN_S": "900",
    }.items():
        monkeypatch.setenv(f"SCREWOPS_TRAINER_{name}", value)

    assert TrainerSettings().rules() == Rules(
        model_name="bolt-classifier",
        params=TrainingParams(epochs=3),
        model_kind=ModelKind.SUPERVISED,
        threshold_rules=ThresholdRules(min_recall=0.9),
        concurrency=2,
        claims=ClaimTimes(max_run_s=900),
    )
