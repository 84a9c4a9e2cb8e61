"""Keep one Triton replica serving what the shared model repository holds.

In Kubernetes (``deploy/k8s``) Triton runs as several replicas reading one model repository, a
ReadWriteMany volume the registry and the evaluator also mount. They write a version into it and
then ask Triton to load the model through the repository API, and that call reaches one replica
only: whichever one the ``triton`` Service connected them to. So every Triton pod runs this loop
beside the server (a sidecar, talking to its own Triton on localhost): every few seconds it
compares, model by model, the versions present in the repository with the versions its replica
serves, and loads the model when they differ (Triton then loads added versions and unloads
removed ones; unchanged versions keep serving) or unloads it when no version is left. A fresh
replica loads everything present before it reports ready (``--ready-file``), so it joins the
Service already serving production.

What it leaves alone:

* the evaluator's staging model (``STAGING_MODEL_NAME``): a candidate is loaded, scored and
  removed through one connection to one replica, and loading it everywhere would only cost memory;
* a model whose load failed, until its versions on disk change (the registry removes a version it
  could not load, which is such a change), so a broken artifact is not retried every few seconds.

Run as ``python -m screwops_serving.sync --repository /models --triton 127.0.0.1:8001``, with the
stack's model-control key in ``SCREWOPS_TRITON__MODEL_CONTROL_KEY`` (the registry's and the
evaluator's setting of the same name): Triton refuses to load or unload for anyone without it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from screwops_contracts.models import STAGING_MODEL_NAME
from screwops_errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)

from screwops_serving.client import TritonModels
from screwops_serving.repository import CONFIG_FILE, versions_present

__all__ = ["RepositorySync", "main", "models_present"]

log = logging.getLogger("screwops.serving.sync")

MODEL_CONTROL_KEY_ENV = "SCREWOPS_TRITON__MODEL_CONTROL_KEY"
"""The variable the sidecar reads the model-control key from: a variable, not an argument, so the
key is not on its command line."""


class Triton(Protocol):
    """What the sync needs of one Triton replica (:class:`TritonModels` has it)."""

    async def served(self) -> dict[str, list[int]]: ...

    async def load(self, name: str) -> None: ...

    async def unload(self, name: str) -> None: ...


def models_present(repository: Path) -> dict[str, list[int]]:
    """Each model in ``repository`` (a directory with a ``config.pbtxt``) and its versions.

    Anything else at the top of the volume (``lost+found``, a hidden file) is not a model.
    """
    models: dict[str, list[int]] = {}
    if not repository.is_dir():
        return models
    for entry in sorted(repository.iterdir()):
        if entry.name.startswith(".") or not (entry / CONFIG_FILE).is_file():
            continue
        try:
            models[entry.name] = versions_present(repository, name=entry.name)
        except InvalidInputError:
            continue
    return models


@dataclass
class RepositorySync:
    """Makes one replica's served versions match the repository; see the module docstring."""

    triton: Triton
    repository: Path
    ignore: frozenset[str] = frozenset({STAGING_MODEL_NAME})
    _failed: dict[str, list[int]] = field(default_factory=dict, repr=False)

    async def once(self) -> list[str]:
        """One pass: load or unload what differs; the models it changed, by name.

        Raises:
            UnavailableError, DeadlineExceededError: Triton did not answer (the pass is retried).
        """
        present = models_present(self.repository)
        served = await self.triton.served()
        changed = []
        for name in sorted((set(present) | set(served)) - self.ignore):
            versions = present.get(name, [])
            if versions == served.get(name, []):
                self._failed.pop(name, None)
                continue
            if self._failed.get(name) == versions:
                continue
            try:
                if versions:
                    on_disk, loaded = versions, served.get(name, [])
                    log.info("loading %s: versions %s on disk, %s served", name, on_disk, loaded)
                    await self.triton.load(name)
                else:
                    log.info("unloading %s: no version left on disk", name)
                    await self.triton.unload(name)
            except (FailedPreconditionError, NotFoundError, InvalidInputError) as error:
                log.warning("%s: %s; waiting for its versions to change", name, error.message)
                self._failed[name] = versions
                continue
            self._failed.pop(name, None)
            changed.append(name)
        return changed

    async def run(self, *, every_s: float, ready_file: Path | None = None) -> None:
        """Sync every ``every_s`` seconds until cancelled; touch ``ready_file`` after the first
        pass that reached Triton (the replica serves what was present when it started)."""
        ready = False
        while True:
            try:
                await self.once()
            except (UnavailableError, DeadlineExceededError) as error:
                log.warning("triton did not answer: %s", error.message)
            else:
                if ready_file is not None and not ready:
                    await asyncio.to_thread(ready_file.touch)
                    ready = True
                    log.info("in sync with %s", self.repository)
            await asyncio.sleep(every_s)


def main(argv: list[str] | None = None) -> int:
    """The sidecar's entry point."""
    parser = argparse.ArgumentParser(prog="python -m screwops_serving.sync", description=__doc__)
    parser.add_argument("--repository", type=Path, required=True, help="the model repository")
    parser.add_argument("--triton", default="127.0.0.1:8001", help="this replica's gRPC address")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between passes")
    parser.add_argument("--ready-file", type=Path, help="touched once the replica is in sync")
    parser.add_argument("--load-timeout", type=float, default=300.0, help="seconds per load")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    triton = TritonModels(
        args.triton,
        load_timeout_s=args.load_timeout,
        model_control_key=os.environ.get(MODEL_CONTROL_KEY_ENV),
    )
    sync = RepositorySync(triton, args.repository)
    try:
        asyncio.run(sync.run(every_s=args.every, ready_file=args.ready_file))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
