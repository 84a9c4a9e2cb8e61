"""Placement on its own, over versions the service deployed: evicted, discarded and brought
back without the service, so no alias moves and no record changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from screwops_contracts.datasets import Bucket
from screwops_errors import NotFoundError
from screwops_registry.config import Deployment
from screwops_registry.placement import Placement
from screwops_registry.store import VersionStatus

from tests.unit.registry.fakes import Harness, harness


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return harness(tmp_path / "repository", keep_versions=3)


def placement(h: Harness, *, keep_versions: int) -> Placement:
    """A placement over the harness's repository, Triton and object store."""
    return Placement(
        h.objects, h.triton, Deployment(repository=h.repository, keep_versions=keep_versions)
    )


async def test_eviction_keeps_the_newest_and_what_it_is_told_to(h: Harness) -> None:
    await h.deploy("run-1", "run-2", "run-3")

    await placement(h, keep_versions=1).evict(h.model, keep=[1])

    assert h.present() == [1, 3]
    assert set(h.triton.loaded[h.model]) == {1, 3}


async def test_discarding_reloads_the_rest_and_unloads_the_last(h: Harness) -> None:
    await h.deploy("run-1", "run-2")
    place = placement(h, keep_versions=3)

    await place.discard(h.model, 1)
    assert h.present() == [2]
    assert set(h.triton.loaded[h.model]) == {2}

    await place.discard(h.model, 2)
    assert h.present() == []
    assert h.model not in h.triton.loaded
    loads = len(h.triton.loads)
    await place.discard(h.model, 2)
    assert len(h.triton.loads) == loads, "a version already gone changes nothing"


async def test_a_deployed_version_comes_back_from_its_kept_copy(h: Harness) -> None:
    await h.deploy("run-1", "run-2")
    record = await h.store.get_version(h.model, 1)
    assert record is not None
    assert record.status is VersionStatus.DEPLOYED
    place = placement(h, keep_versions=3)
    await place.discard(h.model, 1)
    for key in h.objects.keys(Bucket.MODELS, record.artifact_key):
        del h.objects.objects[(Bucket.MODELS, key)]
    puts = h.objects.puts

    await place.bring_up(record)

    assert h.present() == [1, 2]
    assert set(h.triton.loaded[h.model]) == {1, 2}
    assert h.objects.puts == puts, "its files were kept once, when it was first served"


async def test_a_version_that_cannot_be_placed_raises_and_marks_nothing(h: Harness) -> None:
    await h.deploy("run-1")
    record = await h.store.get_version(h.model, 1)
    assert record is not None
    await placement(h, keep_versions=3).discard(h.model, 1)
    h.objects.objects.clear()

    with pytest.raises(NotFoundError, match="nothing stored"):
        await placement(h, keep_versions=3).bring_up(record)

    assert h.present() == []
    kept = await h.store.get_version(h.model, 1)
    assert kept is not None
    assert kept.status is VersionStatus.DEPLOYED
