"""The Triton sidecar's sync: each replica ends up serving what the shared repository holds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from screwops_contracts.models import MODEL_NAME, STAGING_MODEL_NAME
from screwops_errors import FailedPreconditionError, UnavailableError
from screwops_serving import CONFIG_FILE
from screwops_serving.sync import RepositorySync, models_present

from tests.support import eventually


class FakeTriton:
    """One replica: loading a model serves every version on disk (as explicit mode does)."""

    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self.models: dict[str, list[int]] = {}
        self.calls: list[tuple[str, str]] = []
        self.broken: set[str] = set()
        self.down = False
        self.refused = 0

    async def served(self) -> dict[str, list[int]]:
        if self.down:
            self.refused += 1
            raise UnavailableError("triton is down")
        return {name: list(v) for name, v in self.models.items() if v}

    async def load(self, name: str) -> None:
        self.calls.append(("load", name))
        if name in self.broken:
            raise FailedPreconditionError(f"{name} failed to load")
        self.models[name] = models_present(self.repository).get(name, [])

    async def unload(self, name: str) -> None:
        self.calls.append(("unload", name))
        self.models.pop(name, None)


def place(repository: Path, name: str, *versions: int) -> None:
    (repository / name).mkdir(parents=True, exist_ok=True)
    (repository / name / CONFIG_FILE).write_text("backend: 'python'\n")
    for version in versions:
        (repository / name / str(version)).mkdir(exist_ok=True)


def remove(repository: Path, name: str, version: int) -> None:
    (repository / name / str(version)).rmdir()


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return tmp_path / "models"


async def test_a_fresh_replica_loads_every_model_present(repository: Path) -> None:
    place(repository, MODEL_NAME, 1, 2)
    triton = FakeTriton(repository)
    assert await RepositorySync(triton, repository).once() == [MODEL_NAME]
    assert triton.models == {MODEL_NAME: [1, 2]}


async def test_a_replica_in_sync_is_left_alone(repository: Path) -> None:
    place(repository, MODEL_NAME, 1)
    triton = FakeTriton(repository)
    sync = RepositorySync(triton, repository)
    await sync.once()
    triton.calls.clear()
    assert await sync.once() == []
    assert triton.calls == []


async def test_a_version_added_or_evicted_elsewhere_reloads_the_model(repository: Path) -> None:
    place(repository, MODEL_NAME, 1, 2)
    triton = FakeTriton(repository)
    sync = RepositorySync(triton, repository)
    await sync.once()
    place(repository, MODEL_NAME, 3)  # the registry deployed 3 through another replica
    remove(repository, MODEL_NAME, 1)  # and evicted 1
    assert await sync.once() == [MODEL_NAME]
    assert triton.models[MODEL_NAME] == [2, 3]


async def test_a_model_with_no_version_left_is_unloaded(repository: Path) -> None:
    place(repository, MODEL_NAME, 1)
    triton = FakeTriton(repository)
    sync = RepositorySync(triton, repository)
    await sync.once()
    remove(repository, MODEL_NAME, 1)
    await sync.once()
    assert triton.calls[-1] == ("unload", MODEL_NAME)
    assert triton.models == {}


async def test_a_model_served_but_gone_from_disk_is_unloaded(repository: Path) -> None:
    triton = FakeTriton(repository)
    triton.models = {"old-model": [4]}
    await RepositorySync(triton, repository).once()
    assert triton.calls == [("unload", "old-model")]


async def test_the_evaluators_staging_model_is_not_synced(repository: Path) -> None:
    place(repository, STAGING_MODEL_NAME, 7)
    triton = FakeTriton(repository)
    assert await RepositorySync(triton, repository).once() == []
    assert triton.calls == []


async def test_a_failed_load_waits_until_the_versions_change(repository: Path) -> None:
    place(repository, MODEL_NAME, 1)
    triton = FakeTriton(repository)
    triton.broken.add(MODEL_NAME)
    sync = RepositorySync(triton, repository)
    assert await sync.once() == []
    assert await sync.once() == []
    assert triton.calls == [("load", MODEL_NAME)]  # not retried while nothing changed
    triton.broken.clear()
    place(repository, MODEL_NAME, 2)
    assert await sync.once() == [MODEL_NAME]
    assert triton.models[MODEL_NAME] == [1, 2]


def test_only_directories_with_a_config_are_models(repository: Path) -> None:
    place(repository, MODEL_NAME, 1)
    (repository / "lost+found").mkdir()
    (repository / ".staging").mkdir()
    (repository / "empty").mkdir()
    assert models_present(repository) == {MODEL_NAME: [1]}
    assert models_present(repository / "missing") == {}


async def test_the_ready_file_waits_for_a_pass_that_reached_triton(
    repository: Path, tmp_path: Path
) -> None:
    place(repository, MODEL_NAME, 1)
    triton = FakeTriton(repository)
    triton.down = True
    ready = tmp_path / "synced"
    sync = RepositorySync(triton, repository)

    async def three_refused() -> bool | None:
        return triton.refused >= 3 or None

    async def touched() -> bool | None:
        return ready.exists() or None

    async def sync_until(probe: Callable[[], Awaitable[bool | None]], what: str) -> None:
        task = asyncio.create_task(sync.run(every_s=0.01, ready_file=ready))
        try:
            await eventually(probe, within=5, what=what, interval=0.01)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    await sync_until(three_refused, "three passes Triton refused")
    assert not ready.exists()
    triton.down = False
    await sync_until(touched, "the ready file after Triton answered")
    assert triton.models == {MODEL_NAME: [1]}
