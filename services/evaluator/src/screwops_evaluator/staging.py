"""Infra validation: a candidate served by the real Triton under the staging name, then removed.

Each evaluation gets a version number of its own under the staging model (derived from its
evaluation id), so evaluators running side by side never overwrite each other's files; within one
process evaluations run one at a time (the service's lock). Triton loads a model as a whole, so:

* a load that fails because *another* staging version is broken is not held against this one:
  what decides is whether this version became ready;
* taking this version away reloads the staging model when other versions are still present
  (they keep serving, unchanged) and unloads it only when none are left, so Triton's memory does
  not grow with every candidate;
* a version that disappears while it is being scored was removed by someone else (an operator,
  another evaluator's unload racing this load): that is transient, and the evaluation is redone.

A candidate that cannot be served (no SavedModel, a load or warm-up that fails, answers that are
not probabilities) is an outcome, :class:`Unservable`; Triton not answering is a transient error
for the bus to retry.

The staging model's config (its frame size) is the model's, shared by the versions staged side by
side: evaluations of candidates of different frame sizes at the same moment would reload each
other's config. One frame size per deployment is assumed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
from screwops_contracts.datasets import Bucket
from screwops_errors import (
    FailedPreconditionError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from screwops_metrics import Probabilities
from screwops_serving import Scores, export_version, remove_version, versions_present

from screwops_evaluator.config import Staging
from screwops_evaluator.store import Objects

log = logging.getLogger("screwops.evaluator")

Frames = npt.NDArray[np.uint8]
# Triton versions are positive int64s; 31 bits keep them readable and JavaScript-safe.
_VERSION_SPACE = 2**31 - 1


class Triton(Protocol):
    """The part of :class:`screwops_serving.TritonModels` the evaluator uses."""

    async def load(self, name: str, *, timeout_s: float) -> None: ...

    async def unload(self, name: str, *, timeout_s: float) -> None: ...

    async def ready(self, name: str, version: int | None = None) -> bool: ...

    async def check(
        self, name: str, version: int, *, frame_size: int, timeout_s: float
    ) -> Scores: ...

    async def infer(
        self, name: str, version: int | None, frames: Frames, *, timeout_s: float
    ) -> Scores: ...


class Unservable(Exception):  # noqa: N818 (an outcome, not a fault)
    """The candidate cannot be served; ``reason`` says why, for the rejection."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Scored:
    """A model's defect probability for every test image, and how many of them held no screw
    it could find (scored 1.0: see :func:`score`)."""

    probabilities: Probabilities
    no_part: int


@dataclass(frozen=True)
class Staged:
    """A candidate that served: its warm-up answer, its scores and how long each took."""

    check_probability: float
    scored: Scored
    load_seconds: float
    scoring_seconds: float


def staging_version(evaluation_id: str) -> int:
    """The staging version of an evaluation: the same on every retry, distinct across them."""
    digest = hashlib.sha256(evaluation_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % _VERSION_SPACE + 1


async def score(
    triton: Triton,
    name: str,
    version: int,
    inputs: Frames,
    *,
    max_batch_size: int,
    timeout_s: float,
) -> Scored:
    """Defect probabilities of every frame from ``version`` of ``name``, in batches.

    A frame in which the model finds no screw is scored 1.0, a defect at any threshold: on the
    line the gateway gives it no verdict and the part is not passed, so counting it good would
    overstate the model, and the probability it computed on background means nothing.

    Raises:
        FailedPreconditionError: the model failed, or answered something not a probability.
        NotFoundError: the version is not loaded.
        InvalidInputError: Triton refused the batch (another shape or batch limit).
        UnavailableError, DeadlineExceededError: Triton did not answer in time.
    """
    parts = [
        await triton.infer(
            name, version, inputs[start : start + max_batch_size], timeout_s=timeout_s
        )
        for start in range(0, len(inputs), max_batch_size)
    ]
    found = np.concatenate([part.part_found for part in parts])
    probabilities: Probabilities = np.where(
        found, np.concatenate([part.probability for part in parts]), np.float32(1.0)
    ).astype(np.float32)
    bad = [float(p) for p in probabilities if not (math.isfinite(p) and 0.0 <= p <= 1.0)]
    if bad:
        raise FailedPreconditionError(
            f"{name} version {version} answered {len(bad)} value(s) that are not probabilities, "
            f"e.g. {bad[0]!r}"
        )
    return Scored(probabilities, no_part=int((~found).sum()))


class StagingArea:
    """Stages, validates and scores candidates in Triton (see the module docstring)."""

    def __init__(self, triton: Triton, objects: Objects, staging: Staging) -> None:
        self.triton = triton
        self.staging = staging
        self._objects = objects

    async def serve_and_score(
        self, artifact_key: str, version: int, frame_size: int, inputs: Frames
    ) -> Staged:
        """Export the SavedModel under ``artifact_key`` as ``version`` of the staging model,
        taking frames of ``frame_size`` (``inputs`` are fitted to it), load it, check it, score
        ``inputs`` with it, and take it away again, whatever happened.

        Raises:
            Unservable: the candidate cannot be served.
            TransientError: Triton or MinIO did not answer; nothing is left loaded.
        """
        name = self.staging.model
        try:
            started = time.perf_counter()
            await self._place(artifact_key, version, frame_size)
            await self._load(version)
            try:
                checked = await self.triton.check(
                    name, version, frame_size=frame_size, timeout_s=self.staging.check_timeout_s
                )
            except FailedPreconditionError as failure:
                raise Unservable(f"failed its warm-up inference: {failure.message}") from failure
            loaded = time.perf_counter()
            try:
                scored = await score(
                    self.triton,
                    name,
                    version,
                    inputs,
                    max_batch_size=self.staging.max_batch_size,
                    timeout_s=self.staging.infer_timeout_s,
                )
            except NotFoundError as vanished:
                raise UnavailableError(
                    f"{name} version {version} left Triton while it was scored; evaluating "
                    f"again: {vanished.message}"
                ) from vanished
            except (FailedPreconditionError, InvalidInputError) as failure:
                raise Unservable(f"failed while scoring the test split: {failure.message}") from (
                    failure
                )
            return Staged(
                check_probability=float(checked.probability[0]),
                scored=scored,
                load_seconds=loaded - started,
                scoring_seconds=time.perf_counter() - loaded,
            )
        finally:
            await self._discard(version)

    async def _place(self, artifact_key: str, version: int, frame_size: int) -> None:
        with tempfile.TemporaryDirectory(prefix="screwops-evaluator-") as scratch:
            try:
                await self._objects.get_directory(Bucket.MODELS, artifact_key, Path(scratch))
                await asyncio.to_thread(
                    export_version,
                    Path(scratch),
                    self.staging.repository,
                    name=self.staging.model,
                    version=version,
                    frame_size=frame_size,
                    max_batch_size=self.staging.max_batch_size,
                )
            except (NotFoundError, InvalidInputError, IntegrityError) as unusable:
                raise Unservable(
                    f"no usable SavedModel at {Bucket.MODELS}/{artifact_key}: {unusable.message}"
                ) from unusable

    async def _load(self, version: int) -> None:
        name = self.staging.model
        try:
            await self.triton.load(name, timeout_s=self.staging.load_timeout_s)
        except FailedPreconditionError as failure:
            if await self.triton.ready(name, version):
                log.warning("another staging version failed to load: %s", failure.message)
                return
            raise Unservable(f"failed to load: {failure.message}") from failure

    async def _discard(self, version: int) -> None:
        """Take this version out of the repository and out of Triton; leave the others."""
        name, repository = self.staging.model, self.staging.repository
        if not await asyncio.to_thread(remove_version, repository, name=name, version=version):
            return
        try:
            if await asyncio.to_thread(versions_present, repository, name=name):
                await self.triton.load(name, timeout_s=self.staging.load_timeout_s)
            else:
                await self.triton.unload(name, timeout_s=self.staging.load_timeout_s)
        except FailedPreconditionError as failure:
            log.warning("reloading %s after removing version %d: %s", name, version, failure)
