"""Near-duplicate groups and the deterministic stratified split.

Near-duplicates are found by the Hamming distance of 64-bit perceptual hashes, a block of rows at a
time; images chained by near-duplicate pairs (or with identical pixels) form one group, and a
group always lands in one split, so no picture is trained on and tested on at once.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from screwops_contracts import SplitCounts
from screwops_contracts.datasets import SplitName

from screwops_validation.measures import Sample
from screwops_validation.report import NearDuplicatePair, NearDuplicates

SPLITS = (SplitName.TRAIN, SplitName.VALIDATION, SplitName.TEST)
_PAIR_BLOCK = 256  # rows of the pairwise Hamming matrix computed at once (bounds memory)
_POPCOUNT = np.array([bin(byte).count("1") for byte in range(256)], dtype=np.uint8)


def _hamming_blocks(
    hashes: Sequence[int], max_distance: int
) -> Iterator[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp]]]:
    """Pairs (i < j) within ``max_distance``, a block of rows at a time: memory stays bounded
    by the block, never the whole n x n matrix."""
    values = np.array(hashes, dtype=np.uint64)
    for start in range(0, len(values), _PAIR_BLOCK):
        rows = values[start : start + _PAIR_BLOCK]
        xor = rows[:, None] ^ values[None, :]
        distance = _POPCOUNT[xor.view(np.uint8)].reshape(len(rows), len(values), 8).sum(axis=2)
        i, j = np.nonzero(distance <= max_distance)
        keep = j > i + start
        i, j = i[keep], j[keep]
        yield i + start, j, distance[i, j].astype(np.intp)


def cluster(hashes: Sequence[int], pixel_digests: Sequence[str], max_distance: int) -> list[int]:
    """A group per image: images chained by near-duplicate pHashes or equal pixels share one.

    The group is named by its first member's index, so sorting the inputs fixes the groups.
    """
    parent = list(range(len(hashes)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    def join(a: int, b: int) -> None:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    for i, j, _ in _hamming_blocks(hashes, max_distance):
        for a, b in zip(i.tolist(), j.tolist(), strict=True):
            join(a, b)
    first: dict[str, int] = {}
    for index, digest in enumerate(pixel_digests):
        join(first.setdefault(digest, index), index)
    return [root(index) for index in range(len(hashes))]


def find_near_duplicates(
    samples: Sequence[Sample],
    groups: Sequence[int],
    assignments: Mapping[str, SplitName],
    *,
    max_distance: int,
    listed: int,
) -> NearDuplicates:
    """Every near-duplicate pair (equal pictures are exact duplicates, counted elsewhere),
    counted within and across splits; the first ``listed`` pairs are kept for the report."""
    measured = [(s, s.measure) for s in samples if s.measure is not None]
    split_index = np.array(
        [SPLITS.index(assignments[s.image.sha256]) for s, _ in measured], dtype=np.intp
    )
    digests = [m.pixel_digest for _, m in measured]
    total = across = 0
    pairs: list[NearDuplicatePair] = []
    for i, j, distance in _hamming_blocks([m.phash for _, m in measured], max_distance):
        distinct = np.array([digests[a] != digests[b] for a, b in zip(i, j, strict=True)], bool)
        i, j, distance = i[distinct], j[distinct], distance[distinct]
        total += len(i)
        across += int(np.count_nonzero(split_index[i] != split_index[j]))
        for a, b, d in zip(i.tolist(), j.tolist(), distance.tolist(), strict=True):
            if len(pairs) >= listed:
                break
            pairs.append(
                NearDuplicatePair(
                    a=measured[a][0].image.filename,
                    b=measured[b][0].image.filename,
                    a_sha256=measured[a][0].image.sha256,
                    b_sha256=measured[b][0].image.sha256,
                    distance=d,
                    a_split=SPLITS[split_index[a]],
                    b_split=SPLITS[split_index[b]],
                )
            )
    sizes = Counter(groups)
    return NearDuplicates(
        max_distance=max_distance,
        total=total,
        within_split=total - across,
        across_splits=across,
        largest_group=max(sizes.values(), default=0),
        pairs=pairs,
    )


@dataclass(frozen=True)
class SplitUnit:
    """What the split needs of an image: its stratum and the near-duplicate group it is in."""

    sha256: str
    label: str
    defect_type: str | None
    group: int


def stratified_split(
    units: Sequence[SplitUnit], fractions: Sequence[float], seed: int
) -> dict[str, SplitName]:
    """Assign each image to train, validation or test, deterministically.

    A near-duplicate group moves as one (to the stratum of its first member), so no group
    straddles two splits. Within each class the strata (label, defect type) are taken in order,
    and the groups of a stratum are sorted by their first sha256 and shuffled by a generator
    seeded from ``seed`` and the stratum (so one stratum's shuffle does not depend on the
    others'). Each group then goes to the split furthest below its share of the class so far,
    which keeps every class within one image of its fractions (for single-image groups) and each
    stratum close to them.
    """
    members: dict[int, list[SplitUnit]] = defaultdict(list)
    for unit in units:
        members[unit.group].append(unit)
    strata: dict[str, dict[str, list[list[SplitUnit]]]] = defaultdict(lambda: defaultdict(list))
    for group in members.values():
        head = min(group, key=lambda u: u.sha256)
        strata[head.label][head.defect_type or ""].append(sorted(group, key=lambda u: u.sha256))
    assignments: dict[str, SplitName] = {}
    for label in sorted(strata):
        assigned = [0] * len(SPLITS)
        for defect_type in sorted(strata[label]):
            groups = sorted(strata[label][defect_type], key=lambda g: g[0].sha256)
            order = _stratum_rng(seed, label, defect_type).permutation(len(groups))
            for position in order.tolist():
                group = groups[position]
                total = sum(assigned) + len(group)
                deficits = [f * total - n for f, n in zip(fractions, assigned, strict=True)]
                chosen = max(range(len(SPLITS)), key=lambda k: (deficits[k], -k))
                assigned[chosen] += len(group)
                assignments.update((u.sha256, SPLITS[chosen]) for u in group)
    return assignments


def _stratum_rng(seed: int, label: str, defect_type: str) -> np.random.Generator:
    stratum = int.from_bytes(hashlib.sha256(f"{label}/{defect_type}".encode()).digest()[:8], "big")
    return np.random.default_rng([seed, stratum])


def split_counts(assignments: Mapping[str, SplitName]) -> SplitCounts:
    """Images per split."""
    counted = Counter(assignments.values())
    return SplitCounts(**{name.value: counted.get(name, 0) for name in SPLITS})


__all__ = [
    "SPLITS",
    "SplitUnit",
    "cluster",
    "find_near_duplicates",
    "split_counts",
    "stratified_split",
]
