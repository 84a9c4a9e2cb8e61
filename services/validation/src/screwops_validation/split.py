"""Near-duplicate groups and the stable stratified split.

Near-duplicates are found by the Hamming distance of 64-bit perceptual hashes, a block of rows at a
time; images chained by near-duplicate pairs (or with identical pixels) form one group, and a
group always lands in one split, so no picture is trained on and tested on at once.

An image's split is decided once and then kept: every image the version's predecessor split
keeps that split, so an image tested once is never trained on by a later version and a champion
is never scored on its own training images. Only the new images are placed, in an order fixed by
their content hashes, each into the split furthest below its share.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from screwops_contracts import SplitCounts
from screwops_contracts.datasets import Label, OriginSplit, SplitName
from screwops_contracts.models import ModelKind

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
    """What the split needs of an image: its stratum, its near-duplicate group and the split
    its provider put it in."""

    sha256: str
    label: str
    defect_type: str | None
    group: int
    origin_split: OriginSplit | None = None


HELD_OUT = (SplitName.VALIDATION, SplitName.TEST)


def stratified_split(
    units: Sequence[SplitUnit],
    fractions: Sequence[float],
    seed: int,
    *,
    previous: Mapping[str, SplitName] | None = None,
    model_kind: ModelKind = ModelKind.SUPERVISED,
) -> dict[str, SplitName]:
    """Assign each image to train, validation or test: the images ``previous`` (the split of an
    earlier version) names keep their split; the others are placed once, by content hash.

    A near-duplicate group moves as one (to the stratum of its first member). A group with an
    image ``previous`` names goes where that image is; where its earlier images sit in several
    splits (a new image joined them), its new images go to the one furthest from training (test,
    then validation), and the near-duplicate check reports the pair across splits.

    The new groups of each class are taken held-out ones first, then stratum (label, defect
    type) by stratum, each in the order of ``sha256(seed:first sha256)``; each goes to the
    split, of those it may enter, furthest below its share of the class so far, which keeps every
    class within one image of its fractions (for single-image groups) and each stratum close to
    them. A group is held out of training (validation or test only) when

    - ``model_kind`` is good-only and it is defective: a good-only model learns the good screw
      alone, and needs defects only to choose and check its threshold;
    - its provider put it in ``test/`` and put images of its class in ``train/`` as well: the
      provider's held-out images stay held out wherever the provider gave others to learn from.
      (MVTec's ``train/`` holds no defect, so a supervised model still learns from its ``test/``
      defects.)
    """
    kept = dict(previous or {})
    members: dict[int, list[SplitUnit]] = defaultdict(list)
    for unit in units:
        members[unit.group].append(unit)
    provided = {u.label for u in units if u.origin_split == "train"}
    assignments: dict[str, SplitName] = {}
    placed: dict[str, list[int]] = defaultdict(lambda: [0] * len(SPLITS))
    fresh: dict[str, list[tuple[bool, str, str, list[SplitUnit]]]] = defaultdict(list)
    for group in members.values():
        ordered = sorted(group, key=lambda u: u.sha256)
        head = ordered[0]
        earlier = {kept[u.sha256] for u in ordered if u.sha256 in kept}
        if earlier:
            latest = max(earlier, key=SPLITS.index)
            for unit in ordered:
                split = kept.get(unit.sha256, latest)
                assignments[unit.sha256] = split
                placed[unit.label][SPLITS.index(split)] += 1
            continue
        held_out = any(
            (model_kind == ModelKind.GOOD_ONLY and u.label == Label.BAD.value)
            or (u.origin_split == "test" and u.label in provided)
            for u in ordered
        )
        key = hashlib.sha256(f"{seed}:{head.sha256}".encode()).hexdigest()
        fresh[head.label].append((not held_out, head.defect_type or "", key, ordered))
    for label in sorted(fresh):
        assigned = placed[label]
        for free, _, _, group in sorted(fresh[label], key=lambda g: g[:3]):
            total = sum(assigned) + len(group)
            deficits = [f * total - n for f, n in zip(fractions, assigned, strict=True)]
            allowed = SPLITS if free else HELD_OUT
            chosen = max(allowed, key=lambda k: (deficits[SPLITS.index(k)], -SPLITS.index(k)))
            assigned[SPLITS.index(chosen)] += len(group)
            assignments.update((u.sha256, chosen) for u in group)
    return assignments


def split_counts(assignments: Mapping[str, SplitName]) -> SplitCounts:
    """Images per split."""
    counted = Counter(assignments.values())
    return SplitCounts(**{name.value: counted.get(name, 0) for name in SPLITS})


__all__ = [
    "HELD_OUT",
    "SPLITS",
    "SplitUnit",
    "cluster",
    "find_near_duplicates",
    "split_counts",
    "stratified_split",
]
