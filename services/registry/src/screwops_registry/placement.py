"""Placement: a version put where Triton serves it, or taken away again.

A version is served from Triton's model repository (``screwops_serving.repository``): placing it
exports its SavedModel there as that version number, Triton loads the model, and one real
inference checks that the version answers with a probability (readiness alone does not prove
it). The files of a version that passed are kept in object storage (``triton/<name>/<N>/``, the
repository's source of truth), so a version evicted from the repository, or a repository lost
with its volume, comes back from there unchanged.

Triton loads a model as a whole: taking a version out of the repository reloads the model while
other versions are left (they keep serving) and unloads it only when none are. Which versions the
registry needs kept, and which version is production, is the service's business; this module only
keeps the newest ``keep_versions`` besides those it is told to.

Triton's ``config.pbtxt`` is the model name's, not a version's, and it declares the frame size:
every version of a name is served with one. Placing a version of another frame size would rewrite
that config under the versions already in the repository (production, the versions kept for a
rollback), and they would be fed frames of a size they were not built for. Such a version is
refused before anything is placed, saying so (the service marks it FAILED with that reason): a
model whose frames change size is served under a new name, or retrained at the name's size.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from screwops_contracts.datasets import Bucket
from screwops_contracts.models import frame_size_problem
from screwops_errors import FailedPreconditionError, PermanentError, ScrewOpsError
from screwops_serving import (
    Scores,
    config_frame_size,
    export_version,
    remove_version,
    restore_version,
    versions_present,
)

from screwops_registry.config import Deployment
from screwops_registry.store import Objects, VersionRecord, VersionStatus

log = logging.getLogger("screwops.registry")

TRITON_PREFIX = "triton"


def triton_prefix(model_name: str, version: int) -> str:
    """Where a deployed version's Triton files are kept (bucket ``models``)."""
    return f"{TRITON_PREFIX}/{model_name}/{version}"


class Triton(Protocol):
    """The part of :class:`screwops_serving.TritonModels` placement uses."""

    async def load(self, name: str, *, timeout_s: float) -> None: ...

    async def unload(self, name: str, *, timeout_s: float) -> None: ...

    async def ready(self, name: str, version: int | None = None) -> bool: ...

    async def check(
        self, name: str, version: int, *, frame_size: int, timeout_s: float
    ) -> Scores: ...


class Placement:
    """Puts versions where Triton serves them and takes them away (see the module docstring).

    It changes the repository without locking: the caller makes one change per model at a time.
    """

    def __init__(self, objects: Objects, triton: Triton, deployment: Deployment) -> None:
        self._objects = objects
        self._triton = triton
        self._deployment = deployment

    async def ready(self, model_name: str, version: int) -> bool:
        """Whether Triton reports the version ready (loaded, not necessarily answering)."""
        return await self._triton.ready(model_name, version)

    async def bring_up(self, record: VersionRecord) -> None:
        """Place the version in the repository, load it and check it; the files of a version
        never served before are kept in object storage once it answered.

        Raises:
            PermanentError: it cannot be served (a version from before frame input, frame size
                0, or one of another frame size than the versions of its name in the repository
                is refused before anything is placed); nothing is taken away (see
                :meth:`discard`).
            TransientError: Triton or storage did not answer.
        """
        problem = frame_size_problem(record.frame_size)
        if problem is not None:
            raise FailedPreconditionError(problem)
        await asyncio.to_thread(self._check_frame_size, record)
        await self._place(record)
        await self._triton.load(record.model_name, timeout_s=self._deployment.load_timeout_s)
        await self.check(record)
        if record.status is VersionStatus.REGISTERED:
            await self._objects.put_directory(
                Bucket.MODELS,
                self._deployment.repository / record.model_name / str(record.version),
                prefix=triton_prefix(record.model_name, record.version),
            )

    async def check(self, record: VersionRecord) -> None:
        """One real inference through Triton: readiness alone does not prove the version answers.

        Raises:
            FailedPreconditionError: it did not answer a blank frame of its size with a
                probability.
        """
        try:
            scores = await self._triton.check(
                record.model_name,
                record.version,
                frame_size=record.frame_size,
                timeout_s=self._deployment.check_timeout_s,
            )
        except PermanentError as error:
            raise FailedPreconditionError(
                f"{record.id} failed its check: {error.message}"
            ) from error
        log.info(
            "%s answered a blank frame: probability %.4f, part found %.0f",
            record.id,
            scores.probability[0],
            scores.found[0],
        )

    async def discard(self, model_name: str, version: int) -> None:
        """Take a version out of the repository and reload: the versions left keep serving."""
        repository = self._deployment.repository
        if not await asyncio.to_thread(
            remove_version, repository, name=model_name, version=version
        ):
            return
        if await asyncio.to_thread(versions_present, repository, name=model_name):
            await self._triton.load(model_name, timeout_s=self._deployment.load_timeout_s)
        else:
            await self._triton.unload(model_name, timeout_s=self._deployment.load_timeout_s)

    async def evict(self, model_name: str, *, keep: Iterable[int]) -> None:
        """Keep the newest versions and those in ``keep``; remove the rest.

        Housekeeping: Triton keeps serving removed versions until the reload, and a failed
        reload is logged and done again after the next deployment, never failing a move.
        """
        repository = self._deployment.repository
        present = await asyncio.to_thread(versions_present, repository, name=model_name)
        kept = {*present[-self._deployment.keep_versions :], *keep}
        stale = [version for version in present if version not in kept]
        if not stale:
            return
        for version in stale:
            await asyncio.to_thread(remove_version, repository, name=model_name, version=version)
        log.info("evicting versions %s of %s from Triton", stale, model_name)
        try:
            await self._triton.load(model_name, timeout_s=self._deployment.load_timeout_s)
        except ScrewOpsError as error:
            log.warning("reloading %s after eviction failed: %s", model_name, error.message)

    def _check_frame_size(self, record: VersionRecord) -> None:
        """Refuse a version whose frame size differs from the one the versions of its name in
        the repository are served with (see the module docstring)."""
        name, repository = record.model_name, self._deployment.repository
        others = [v for v in versions_present(repository, name=name) if v != record.version]
        served = config_frame_size(repository, name=name) if others else None
        if served is not None and served != record.frame_size:
            listed = ", ".join(str(v) for v in others)
            raise FailedPreconditionError(
                f"{record.id} takes frames of {record.frame_size} px, but versions {listed} of "
                f"{name} in Triton take {served} px, and Triton's config (the frame size among "
                f"it) is one for every version of a name: placing it would break them. Serve it "
                f"under another model name, or retrain it at {served} px "
                "(the trainer's SCREWOPS_TRAINER_FRAME_SIZE)"
            )

    async def _place(self, record: VersionRecord) -> None:
        """Put the version's files in Triton's repository.

        A version never served is exported afresh from its SavedModel (replacing whatever a
        crashed attempt left); a deployed one comes back, unchanged, from the copy kept when it
        was first checked, unless it is still there.
        """
        name, version = record.model_name, record.version
        repository = self._deployment.repository
        deployed = record.status is VersionStatus.DEPLOYED
        if deployed and version in await asyncio.to_thread(versions_present, repository, name=name):
            return
        place = functools.partial(
            restore_version if deployed else export_version,
            repository=repository,
            name=name,
            version=version,
            frame_size=record.frame_size,
            max_batch_size=self._deployment.max_batch_size,
            queue_delay_us=self._deployment.queue_delay_us,
        )
        source = triton_prefix(name, version) if deployed else record.artifact_key
        with tempfile.TemporaryDirectory(prefix="screwops-registry-") as scratch:
            await self._objects.get_directory(Bucket.MODELS, source, Path(scratch))
            await asyncio.to_thread(place, Path(scratch))
