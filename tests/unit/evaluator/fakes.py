"""In-memory stand-ins for the evaluator's store, MinIO's directories and Triton (unit tests).

The fake Triton reads the real model repository on disk (the service exports into ``tmp_path``
with ``screwops_serving``), and what a version answers is written in its ``saved_model.pb``:
``cutoff:<x>`` answers as the models of :mod:`tests.unit.evaluator.builders`, ``constant:<p>``
answers ``p`` for everything, ``blind:<p>`` answers ``p`` but finds no screw in a frame whose
brightest pixel is below half white (the plain defects' dark discs), ``nan`` answers NaN, and
``broken`` fails to load while the model's other versions keep serving, as the real Triton does
(seen on 2.51). A part is found in every frame but a blank one unless the graph says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from screwops_errors import (
    FailedPreconditionError,
    InvalidInputError,
    NotFoundError,
)
from screwops_evaluator.store import Champion, EvaluationRecord
from screwops_serving import Scores, frame_shape
from screwops_storage import ClaimTimes, Held
from screwops_storage.claims import AttemptObjects

from tests.fakes import RepositoryTriton
from tests.unit.evaluator.builders import brightest, defect_probability


class FakeStore:
    """:class:`EvaluatorStore` in memory, with the compare-and-set on the champion's time and the
    claim and completion of evaluations."""

    def __init__(self) -> None:
        self.evaluations: dict[str, EvaluationRecord] = {}
        self.attempts: dict[str, int] = {}
        self.live: set[str] = set()
        """Evaluations a live attempt holds: a claim answers :class:`Held`; any other claim
        takes the evaluation (over) with the next number."""
        self.champions: dict[str, Champion] = {}
        self.runs: dict[tuple[str, int], str] = {}

    async def ensure_indexes(self) -> None:
        return None

    async def get_evaluation(self, evaluation_id: str) -> EvaluationRecord | None:
        return self.evaluations.get(evaluation_id)

    async def claim_evaluation(
        self, evaluation_id: str, model_name: str, run_id: str, *, times: ClaimTimes
    ) -> int | Held | EvaluationRecord:
        done = self.evaluations.get(evaluation_id)
        if done is not None:
            return done
        if evaluation_id in self.live:
            return Held(self.attempts[evaluation_id])
        self.attempts[evaluation_id] = self.attempts.get(evaluation_id, 0) + 1
        return self.attempts[evaluation_id]

    async def renew_evaluation(self, evaluation_id: str, attempt: int) -> bool:
        return evaluation_id not in self.evaluations and self.attempts.get(evaluation_id) == attempt

    async def complete_evaluation(self, record: EvaluationRecord, attempt: int) -> bool:
        if (
            record.evaluation_id in self.evaluations
            or self.attempts.get(record.evaluation_id) != attempt
        ):
            return False
        self.evaluations[record.evaluation_id] = record
        return True

    async def sweep_attempts(
        self,
        objects: AttemptObjects,
        attempt_of: Callable[[str], tuple[str, int] | None],
        *,
        min_age_s: float,
    ) -> list[str]:
        raise NotImplementedError("the sweep's decisions are tested on MongoEvaluatorStore")

    async def get_champion(self, model_name: str) -> Champion | None:
        return self.champions.get(model_name)

    async def set_champion(self, champion: Champion) -> bool:
        current = self.champions.get(champion.model_name)
        if current is not None and current.since >= champion.since:
            return False
        self.champions[champion.model_name] = champion
        return True

    async def record_served_run(self, model_name: str, version: int, run_id: str) -> None:
        self.runs[(model_name, version)] = run_id

    async def served_run(self, model_name: str, version: int) -> str | None:
        return self.runs.get((model_name, version))


class FakeTriton(RepositoryTriton):
    """The shared repository Triton, answering inferences as each version's graph says."""

    def __init__(self, repository: Path, *, max_batch_size: int = 32) -> None:
        super().__init__(repository)
        self.max_batch_size = max_batch_size
        self.inferences: list[tuple[str, int | None, int]] = []

    async def check(self, name: str, version: int, *, frame_size: int, timeout_s: float) -> Scores:
        if not await self.ready(name, version):
            raise FailedPreconditionError(f"{name} version {version} is not ready in Triton")
        blank = np.zeros((1, *frame_shape(frame_size)), dtype=np.uint8)
        return await self.infer(name, version, blank, timeout_s=timeout_s)

    async def infer(
        self, name: str, version: int | None, batch: npt.NDArray[np.uint8], *, timeout_s: float
    ) -> Scores:
        self._answer()
        if len(batch) > self.max_batch_size:
            raise InvalidInputError(f"batch-size must be <= {self.max_batch_size}")
        served = self.loaded.get(name, {})
        chosen = max(served) if version is None and served else version
        if chosen not in served:
            raise NotFoundError(f"{name} version {version} is not loaded")
        self.inferences.append((name, version, len(batch)))
        kind, _, value = served[chosen].decode().partition(":")
        found = (brightest(batch) > 0).astype(np.float32)
        if kind == "cutoff":
            probability = defect_probability(batch, float(value))
        elif kind == "constant":
            probability = np.full(len(batch), float(value), dtype=np.float32)
        elif kind == "blind":
            probability = np.full(len(batch), float(value), dtype=np.float32)
            found = (brightest(batch) >= 0.5).astype(np.float32)
        else:
            probability = np.full(len(batch), np.nan, dtype=np.float32)
        return Scores(probability=probability, found=found)
