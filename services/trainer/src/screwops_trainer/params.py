"""A run's hyper-parameters, apart from TensorFlow.

Settings, the run record and the run id all need :class:`TrainingParams`; keeping it free of
TensorFlow lets them be read without paying for TensorFlow's import.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ARCHITECTURE",
    "GOOD_ONLY_ARCHITECTURE",
    "Architecture",
    "TrainingParams",
    "for_kind",
]

Architecture = Literal["cnn4-strip-v3", "lite0-patch-knn-v2"]

ARCHITECTURE: Final[Architecture] = "cnn4-strip-v3"
"""Names :func:`screwops_trainer.model.build_model`'s network (the supervised kind); change it
whenever the network changes, so that a run of the new network is never mistaken for a finished
run of the old one (it is in the run id)."""
GOOD_ONLY_ARCHITECTURE: Final[Architecture] = "lite0-patch-knn-v2"
"""Names :mod:`screwops_trainer.goodonly`'s model (ImageNet features, a bank of good patches)."""

# What each kind changes in the defaults: its architecture always (a run's id then says which
# kind trained it), and the strip's resolution unless an operator chose one. The good-only model
# compares patches one strip pixel per frame pixel (a hairline is a few pixels); the supervised
# network trains on 2 cores within minutes only on a coarser strip.
_KIND_DEFAULTS: Final[dict[str, dict[str, object]]] = {
    "supervised": {"architecture": ARCHITECTURE, "strip_pixels": 384},
    "good_only": {"architecture": GOOD_ONLY_ARCHITECTURE, "strip_pixels": 820},
}


class TrainingParams(BaseModel):
    """The hyper-parameters of a run: with the data's digest and the model name, its identity.

    Every field is recorded with the run and hashed into its id, so two runs with equal params on
    equal data are the same run.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Architecture = Field(
        ARCHITECTURE, description="The model trained; set from the model kind (for_kind)."
    )
    strip_pixels: int = Field(
        384,
        ge=32,
        le=2048,
        description="Most pixels along the screw's strip; fewer than the frame's own are area "
        "averaged down (the good-only kind's default is 820: every pixel of a 1024-px frame).",
    )
    bank_size: int = Field(
        240, ge=1, description="Good-only: most good screws kept in the bank (its size bound)."
    )
    feature_dims: int = Field(
        64, ge=1, description="Good-only: dimensions the patch features are projected to."
    )
    neighbours: int = Field(
        32, ge=1, description="Good-only: bank screws, most like the query, searched per query."
    )
    reach_along: float = Field(
        0.04,
        gt=0.0,
        lt=1.0,
        description="Good-only: how far along the strip (a fraction of its length) a patch "
        "looks for its match: about half a thread pitch, so any thread phase is found.",
    )
    epochs: int = Field(60, ge=1, description="Most epochs; early stopping usually ends sooner.")
    batch_size: int = Field(16, ge=1, description="Images per gradient step.")
    learning_rate: float = Field(2e-3, gt=0.0, description="Adam's initial step size.")
    patience: int = Field(
        15, ge=1, description="Epochs without a better validation loss before stopping."
    )
    lr_patience: int = Field(
        5, ge=1, description="Epochs without a better validation loss before halving the step."
    )
    seed: int = Field(7, ge=0, description="Seeds weights, shuffling and augmentation.")
    filters: tuple[int, ...] = Field(
        (16, 32, 64, 128), min_length=1, description="Channels of each conv block."
    )
    dropout: float = Field(0.3, ge=0.0, lt=1.0, description="Dropout before the classifier.")
    augment_flip: bool = Field(True, description="Random mirror of the strip across its axis.")
    augment_rotation: float = Field(
        0.0,
        ge=0.0,
        lt=0.5,
        description="Largest random rotation, as a fraction of a full turn; 0: off. The strip "
        "is already aligned, so this only covers the alignment's small errors.",
    )
    augment_translation: float = Field(
        0.0, ge=0.0, lt=1.0, description="Largest random shift, as a fraction of the side; 0: off."
    )
    deterministic: bool = Field(
        True, description="TensorFlow's deterministic ops: the same run twice gives one model."
    )


def for_kind(params: TrainingParams, kind: str) -> TrainingParams:
    """``params`` with ``kind``'s defaults for what the operator did not set."""
    defaults = _KIND_DEFAULTS[kind]
    chosen = params.model_fields_set - {"architecture"}
    return params.model_copy(update={k: v for k, v in defaults.items() if k not in chosen})
