"""In-memory stand-ins for the evaluator's store, MinIO's directories and Triton (unit tests).

The fake Triton reads the real model repository on disk (the service exports into ``tmp_path``
with ``screwops_serving``), and what a version answers is written in its ``saved_model.pb``:
``cutoff:<x>`` answers as the models of :mod:`tests.unit.evaluator.builders`, ``constant:<p>``
answers ``p`` for everything, ``nan`` answers NaN, and ``broken`` fails to load while the model's
other versions keep serving, as the real Triton does (seen on 2.51).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel
from screwops_contracts import Event
from screwops_contracts.datasets import Bucket
from screwops_errors import (
    FailedPreconditionError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from screwops_evaluator.store import Champion, EvaluationRecord
from screwops_serving import SAVED_MODEL_DIR, versions_present
from screwops_storage import StoredObject, sha256_hex

from tests.fakes import FakeObjects
from tests.unit.evaluator.builders import defect_probability

P = TypeVar("P", bound=BaseModel)


class FakeStore:
    """:class:`EvaluatorStore` in memory, with the compare-and-set on the champion's time."""

    def __init__(self) -> None:
        self.evaluations: dict[str, EvaluationRecord] = {}
        self.champions: dict[str, Champion] = {}
        self.runs: dict[tuple[str, int], str] = {}

    async def ensure_indexes(self) -> None:
        return None

    async def get_evaluation(self, evaluation_id: str) -> EvaluationRecord | None:
        return self.evaluations.get(evaluation_id)

    async def save_evaluation(self, record: EvaluationRecord) -> None:
        self.evaluations[record.evaluation_id] = record

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


class Objects(FakeObjects):
    """MinIO in memory, with the directories SavedModels are stored as."""

    def put_saved_model(self, prefix: str, behaviour: bytes) -> str:
        """What the trainer leaves in the models bucket: a SavedModel directory."""
        self.objects[(Bucket.MODELS, f"{prefix}/saved_model.pb")] = behaviour
        self.objects[(Bucket.MODELS, f"{prefix}/variables/variables.index")] = b"index"
        return prefix

    async def get_directory(self, bucket: str, prefix: str, root: Path) -> list[StoredObject]:
        keys = sorted(k for b, k in self.objects if b == bucket and k.startswith(f"{prefix}/"))
        if not keys:
            raise NotFoundError(f"nothing stored under {bucket}/{prefix}/")
        stored = []
        for key in keys:
            path = root / key.removeprefix(f"{prefix}/")
            path.parent.mkdir(parents=True, exist_ok=True)
            data = self.objects[(bucket, key)]
            path.write_bytes(data)
            stored.append(StoredObject(key, sha256_hex(data), len(data)))
        return stored


@dataclass
class FakeTriton:
    """Triton with explicit model control over a real repository directory."""

    repository: Path
    max_batch_size: int = 32
    loaded: dict[str, dict[int, bytes]] = field(default_factory=dict)
    loads: list[tuple[str, frozenset[int]]] = field(default_factory=list)
    inferences: list[tuple[str, int | None, int]] = field(default_factory=list)
    down: bool = False

    def _answer(self) -> None:
        if self.down:
            raise UnavailableError("Triton did not answer")

    def behaviour(self, name: str, version: int) -> bytes:
        graph = self.repository / name / str(version) / SAVED_MODEL_DIR / "saved_model.pb"
        return graph.read_bytes()

    async def load(self, name: str) -> None:
        self._answer()
        present = versions_present(self.repository, name=name)
        if not present:
            raise FailedPreconditionError(f"loading {name}: no version to load")
        answers = {v: self.behaviour(name, v) for v in present}
        self.loaded[name] = {v: b for v, b in answers.items() if b != b"broken"}
        self.loads.append((name, frozenset(self.loaded[name])))
        broken = [v for v, b in answers.items() if b == b"broken"]
        if broken:
            raise FailedPreconditionError(f"loading {name}: version {broken[0]} failed to load")

    async def unload(self, name: str) -> None:
        self._answer()
        self.loaded.pop(name, None)

    async def ready(self, name: str, version: int | None = None) -> bool:
        self._answer()
        served = self.loaded.get(name, {})
        return bool(served) if version is None else version in served

    async def check(self, name: str, version: int, *, timeout_s: float) -> float:
        if not await self.ready(name, version):
            raise FailedPreconditionError(f"{name} version {version} is not ready in Triton")
        blank = np.zeros((1, 128, 128, 1), dtype=np.float32)
        return float((await self.infer(name, version, blank, timeout_s=timeout_s))[0])

    async def infer(
        self, name: str, version: int | None, batch: npt.NDArray[np.float32], *, timeout_s: float
    ) -> npt.NDArray[np.float32]:
        self._answer()
        if len(batch) > self.max_batch_size:
            raise InvalidInputError(f"batch-size must be <= {self.max_batch_size}")
        served = self.loaded.get(name, {})
        chosen = max(served) if version is None and served else version
        if chosen not in served:
            raise NotFoundError(f"{name} version {version} is not loaded")
        self.inferences.append((name, version, len(batch)))
        kind, _, value = served[chosen].decode().partition(":")
        if kind == "cutoff":
            return defect_probability(batch, float(value))
        if kind == "constant":
            return np.full(len(batch), float(value), dtype=np.float32)
        return np.full(len(batch), np.nan, dtype=np.float32)


class Emitted(list[Event[Any]]):
    """Collects what the service emits, as the bus would build it."""

    async def __call__(
        self, event_type: type[Event[P]], payload: P, /, *, cause: Event[Any]
    ) -> None:
        self.append(event_type.caused_by(cause, payload, producer="evaluator"))
