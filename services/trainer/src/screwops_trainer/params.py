"""A run's hyper-parameters, apart from TensorFlow.

Settings, the run record and the run id all need :class:`TrainingParams`; keeping it free of
TensorFlow lets them be read without paying for TensorFlow's import.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ARCHITECTURE", "Architecture", "TrainingParams"]

Architecture = Literal["cnn4-std-bn-gmp-v2"]

ARCHITECTURE: Final[Architecture] = "cnn4-std-bn-gmp-v2"
"""Names :func:`screwops_trainer.model.build_model`'s network; change it whenever the network
changes, so that a run of the new network is never mistaken for a finished run of the old one (it
is in the run id)."""


class TrainingParams(BaseModel):
    """The hyper-parameters of a run: with the data's digest and the model name, its identity.

    Every field is recorded with the run and hashed into its id, so two runs with equal params on
    equal data are the same run.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Architecture = Field(
        ARCHITECTURE, description="The network of build_model; see ARCHITECTURE."
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
    augment_flip: bool = Field(True, description="Random horizontal and vertical flips.")
    augment_rotation: float = Field(
        0.0,
        ge=0.0,
        lt=0.5,
        description="Largest random rotation, as a fraction of a full turn; 0: off. preprocess "
        "has already aligned the screw, so this only covers its small errors.",
    )
    augment_translation: float = Field(
        0.0, ge=0.0, lt=1.0, description="Largest random shift, as a fraction of the side; 0: off."
    )
    deterministic: bool = Field(
        True, description="TensorFlow's deterministic ops: the same run twice gives one model."
    )
