"""One synthetic screw photo: a metal screw lying on a table, seen from above.

The screw is built in its own frame (``u`` along the axis from the head's end to the tip, ``v``
across it), so every part and every defect is a statement about ``u`` and ``v``. Outlines and
marks are polygons and strokes drawn by Pillow at twice the size and reduced for antialiasing; the
metal's shading, the thread grooves, the lighting, blur and sensor noise are numpy on the final
pixel grid.

A picture draws its randomness from four independent streams spawned from the caller's
generator: the screw's shape and place, its look, the sensor noise, and the defect. A defective
screw is therefore the same screw, in the same place and light, as the good one the same
generator state gives, which is what lets the tests (and a person) see exactly what a defect
changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

DEFECT_TYPES = (
    "manipulated_front",
    "scratch_head",
    "scratch_neck",
    "thread_side",
    "thread_top",
)

DefectLook = Literal["obvious", "subtle"]
"""How a defect looks: ``obvious`` (large, high-contrast; what the demo trains on) or ``subtle``
(as small and faint as the real MVTec screw defects: a few hundred pixels of a 1024-px frame)."""
DEFECT_LOOKS: tuple[DefectLook, ...] = get_args(DefectLook)

_SUPERSAMPLE = 2
_FRAME_MARGIN = 0.03  # of the frame, kept free around the screw
_MIN_SIZE = 32
_MAX_BEND = 0.13  # of the screw's length: how far a bent tip may move sideways
# Real screws of one type differ by a few per cent; a style may not stray further than this.
_DIMENSION_TOLERANCE = 0.1

# Grey levels (before lighting) of what a defect paints onto the metal.
_SCRATCH_RIM = 30.0
_SCRATCH_CORE = 235.0
_GOUGE = 40.0
_TORN = 190.0
_CUT_FACE = 210.0

Point = tuple[float, float]
FloatArray = NDArray[np.float32]


@dataclass(frozen=True)
class Style:
    """The photographic conditions a picture is drawn from; a shifted style simulates drift.

    Ranges are ``(low, high)`` and each picture draws its own value from them. Grey levels are on
    the 0-255 scale; blur radii are in pixels of a 256-pixel picture and scale with the size.
    ``lighting_shift`` is a relative change of exposure (0.2: everything 20% brighter).
    ``length_scale``, ``head_scale`` and ``pitch_scale`` scale the screw's length, its head (length
    and radius) and its thread pitch from their nominal values, within the tolerance of a real
    batch (at most 10% either way): a new supplier's screws, not another kind of screw.
    ``dimension_spread`` is the share of the renderer's whole range of screw shapes that one batch
    spans around the nominal screw: 1.0 draws every screw as a different product (lengths +-12%,
    8 to 11 turns), as the demo's set does; a real line makes one product, whose screws differ by
    a per cent or two (0.1), which is what lets a model learn the good screw from good screws
    alone. The thread's phase and the pose stay random whatever the spread.
    """

    background: tuple[float, float] = (150.0, 215.0)
    screw_brightness: float = 1.0
    gradient: float = 0.12
    vignette: float = 0.12
    noise_sigma: tuple[float, float] = (1.5, 4.0)
    blur_radius: tuple[float, float] = (0.0, 0.9)
    lighting_shift: float = 0.0
    length_scale: float = 1.0
    head_scale: float = 1.0
    pitch_scale: float = 1.0
    dimension_spread: float = 1.0

    def __post_init__(self) -> None:
        for name in ("background", "noise_sigma", "blur_radius"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"Style.{name} must be 0 <= low <= high, got {(low, high)}")
        if self.screw_brightness <= 0:
            raise ValueError(f"Style.screw_brightness must be > 0, got {self.screw_brightness}")
        if self.lighting_shift <= -1:
            raise ValueError(f"Style.lighting_shift must be > -1, got {self.lighting_shift}")
        if not 0 <= self.dimension_spread <= 1:
            raise ValueError(
                f"Style.dimension_spread must be in [0, 1], got {self.dimension_spread}"
            )
        for name in ("length_scale", "head_scale", "pitch_scale"):
            scale = getattr(self, name)
            if abs(scale - 1) > _DIMENSION_TOLERANCE:
                raise ValueError(
                    f"Style.{name} must be within {_DIMENSION_TOLERANCE:.0%} of 1, got {scale}"
                )

    def shifted(self, amount: float) -> Style:
        """A style whose light has drifted, for monitoring to detect.

        ``amount`` is the relative change of exposure (0.3: a scene 30% brighter, -0.3: darker);
        the uneven part of the light grows with ``abs(amount)`` too, because a lamp that drifts
        rarely dims evenly.
        """
        return replace(
            self,
            lighting_shift=self.lighting_shift + amount,
            gradient=self.gradient + abs(amount) / 2,
        )


SHIFTED_STYLE = Style(
    background=(115.0, 170.0),
    screw_brightness=0.92,
    gradient=0.22,
    vignette=0.2,
    noise_sigma=(2.0, 4.5),
    blur_radius=(0.2, 1.0),
    lighting_shift=-0.06,
    length_scale=0.96,
    head_scale=1.05,
    pitch_scale=1.04,
)
"""Another line's photos of another batch: a darker table under dimmer, more uneven light, a
softer lens and a noisier sensor, and screws 4% shorter with a 5% bigger head and a 4% coarser
thread, all within what a real batch and camera vary by. The hold-out set's style-shifted copy."""

STYLES = {"default": Style(), "shifted": SHIFTED_STYLE}


@dataclass(frozen=True)
class Sample:
    """A picture and where its defect is (all black for a good screw), as MVTec ships them."""

    image: Image.Image
    mask: Image.Image


@dataclass(frozen=True)
class _Screw:
    """Shape of one screw in its own frame, in pixels of the final picture."""

    length: float
    head_length: float
    head_radius: float
    dome: float
    slot_width: float
    slot_depth: float
    neck_radius: float
    thread_start: float
    major: float
    minor: float
    pitch: float
    phase: float
    slope: float
    tip_length: float

    @property
    def chamfer(self) -> float:
        return 0.15 * self.head_radius

    @property
    def shank_end(self) -> float:
        return self.length - self.tip_length


@dataclass(frozen=True)
class _Pose:
    """Where the screw lies: its middle and the direction of its axis."""

    cx: float
    cy: float
    angle: float


@dataclass(frozen=True)
class _Bend:
    """A tip bent sideways: ``offset`` across the axis at the tip, growing from ``start``."""

    start: float
    end: float
    offset: float

    def at(self, u: FloatArray) -> FloatArray:
        t = np.clip((u - np.float32(self.start)) / np.float32(self.end - self.start), 0.0, 1.0)
        return np.asarray(self.offset * t * np.sqrt(t), dtype=np.float32)


@dataclass(frozen=True)
class _Mark:
    """Something a defect paints onto the metal: a filled polygon, or a stroke when ``width``."""

    points: list[Point]
    level: float
    width: float = 0.0
    span: tuple[float, float] | None = None  # the part of the axis it stays on
    opacity: float = 1.0  # how far the metal goes towards ``level``: a faint mark stays below 1


@dataclass
class _Flaw:
    """What a defect does: a changed outline, maybe a bent tip, and marks on the metal."""

    outline: list[Point]
    bend: _Bend | None = None
    marks: list[_Mark] = field(default_factory=list)


def render_screw(
    rng: np.random.Generator,
    *,
    size: int,
    defect: str | None,
    style: Style | None = None,
    look: DefectLook = "obvious",
) -> Image.Image:
    """A picture of a good or defective screw, for callers that do not need the defect's mask."""
    return render_sample(rng, size=size, defect=defect, style=style, look=look).image


def render_sample(
    rng: np.random.Generator,
    *,
    size: int,
    defect: str | None,
    style: Style | None = None,
    look: DefectLook = "obvious",
) -> Sample:
    """A picture and its defect mask, both ``size`` x ``size`` 8-bit grayscale.

    Everything random comes from ``rng``, so a seeded generator makes the picture reproducible,
    and the same generator state gives the same screw whatever ``defect`` and ``look`` are.

    Raises:
        ValueError: ``defect`` is not one of ``DEFECT_TYPES``, ``look`` not one of
            ``DEFECT_LOOKS``, or ``size`` is below 32 pixels.
    """
    if defect is not None and defect not in DEFECT_TYPES:
        raise ValueError(f"unknown defect {defect!r}; known: {', '.join(DEFECT_TYPES)}")
    if look not in DEFECT_LOOKS:
        raise ValueError(f"unknown defect look {look!r}; known: {', '.join(DEFECT_LOOKS)}")
    if size < _MIN_SIZE:
        raise ValueError(f"size must be at least {_MIN_SIZE} pixels, got {size}")
    style = style or Style()
    shape_rng, look_rng, noise_rng, flaw_rng = rng.spawn(4)
    screw = _sample_screw(shape_rng, size, style)
    good_outline = _outline(screw, _end_face(screw), {})
    pose = _sample_pose(shape_rng, screw, good_outline, size)
    flaws = _SUBTLE_FLAWS if look == "subtle" else _FLAWS
    flaw = flaws[defect](flaw_rng, screw) if defect else _Flaw(good_outline)

    u, v = _local_coordinates(pose, screw, size)
    if flaw.bend is not None:
        v = v - flaw.bend.at(u)
    alpha = _fill(_to_image(flaw.outline, pose, screw, flaw.bend), size)
    metal = _metal(look_rng, screw, u, v, style)
    mask = np.zeros((size, size), dtype=np.float32)
    for mark in flaw.marks:
        coverage = _paint(mark, pose, screw, flaw.bend, u, size) * alpha
        metal += (mark.level * style.screw_brightness - metal) * coverage * mark.opacity
        mask = np.maximum(mask, coverage)
    if defect:
        good_alpha = _fill(_to_image(good_outline, pose, screw, None), size)
        mask = np.maximum(mask, np.abs(alpha - good_alpha))

    scene = _compose(look_rng, alpha, metal, size, style)
    image = _develop(look_rng, noise_rng, scene, size, style)
    threshold = 0.3
    if defect and look == "subtle":
        # A defect smaller than a pixel of a small frame still marks the pixel it covers most.
        threshold = min(threshold, 0.99 * float(mask.max()))
    mask_image = Image.fromarray(np.where(mask > threshold, 255, 0).astype(np.uint8), mode="L")
    if defect:
        mask_image = mask_image.filter(ImageFilter.MaxFilter(3))
    return Sample(image, mask_image)


def _sample_screw(rng: np.random.Generator, size: int, style: Style) -> _Screw:
    spread = style.dimension_spread

    def draw(low: float, high: float) -> float:
        value = float(rng.uniform(low, high))
        if spread == 1.0:  # the whole range, drawn exactly as before the spread existed
            return value
        middle = (low + high) / 2
        return middle + (value - middle) * spread

    length = size * draw(0.52, 0.66) * style.length_scale
    head_length = length * draw(0.12, 0.16) * style.head_scale
    # The neck follows the nominal head, so a bigger head does not thicken the shank.
    nominal_head = length * draw(0.105, 0.13)
    neck_radius = nominal_head * draw(0.5, 0.58)
    thread_start = head_length + length * draw(0.14, 0.2)
    tip_length = length * draw(0.1, 0.14)
    major = neck_radius * draw(1.0, 1.08)
    pitch = (length - thread_start) / draw(8.0, 11.0) * style.pitch_scale
    head_radius = nominal_head * style.head_scale
    return _Screw(
        length=length,
        head_length=head_length,
        head_radius=head_radius,
        dome=head_length * draw(0.15, 0.3),
        slot_width=head_radius * draw(0.35, 0.5),
        slot_depth=head_length * draw(0.3, 0.45),
        neck_radius=neck_radius,
        thread_start=thread_start,
        major=major,
        minor=major * draw(0.68, 0.76),
        pitch=pitch,
        phase=thread_start + pitch * rng.uniform(0.2, 0.6),
        # Half a pitch of slant across the diameter: a helix seen from the side.
        slope=pitch / (4 * major),
        tip_length=tip_length,
    )


def _sample_pose(
    rng: np.random.Generator, screw: _Screw, outline: Sequence[Point], size: int
) -> _Pose:
    angle = rng.uniform(0.0, 2 * math.pi)
    cos, sin = math.cos(angle), math.sin(angle)
    half = screw.length / 2
    xs = [cos * (u - half) - sin * v for u, v in outline]
    ys = [sin * (u - half) + cos * v for u, v in outline]
    # Room for the widest defect (a bent tip), so the same screw lands in the same place whether
    # or not it is defective.
    room = _FRAME_MARGIN * size + _MAX_BEND * screw.length
    cx = rng.uniform(room - min(xs), size - room - max(xs))
    cy = rng.uniform(room - min(ys), size - room - max(ys))
    return _Pose(cx, cy, angle)


def _end_face(screw: _Screw) -> list[Point]:
    """The head's domed end, from the -v side to the +v side, with the slot cut into it."""
    hw, half_slot = screw.head_radius, screw.slot_width / 2
    points: list[Point] = []
    for v in np.linspace(-hw, hw, 15):
        if abs(v) < half_slot:
            continue
        if v > 0 and points[-1][1] < 0:
            points += _slot(screw)
        points.append((_dome(screw, float(v)), float(v)))
    return points


def _dome(screw: _Screw, v: float) -> float:
    ratio = min(abs(v) / screw.head_radius, 1.0)
    return screw.dome * (1 - math.sqrt(1 - ratio * ratio))


def _slot(screw: _Screw) -> list[Point]:
    half = screw.slot_width / 2
    return [
        (_dome(screw, -half), -half),
        (screw.slot_depth, -half),
        (screw.slot_depth, half),
        (_dome(screw, half), half),
    ]


def _outline(
    screw: _Screw, end_face: list[Point], damage: dict[int, tuple[float, float, list[Point]]]
) -> list[Point]:
    """The whole silhouette: end face, the +v side to the tip, the -v side back to the head.

    ``damage`` maps a side (+1 or -1) to a stretch of the axis whose thread is replaced by
    the given points.
    """
    top = _side(screw, 1, damage.get(1))
    bottom = _side(screw, -1, damage.get(-1))
    return [*end_face, *top, (screw.length, 0.0), *reversed(bottom)]


def _side(screw: _Screw, sign: int, damage: tuple[float, float, list[Point]] | None) -> list[Point]:
    hw, hl, ch = screw.head_radius, screw.head_length, screw.chamfer
    points: list[Point] = [
        (screw.dome, sign * hw),
        (hl - ch, sign * hw),
        (hl, sign * (hw - ch)),
        (hl, sign * screw.neck_radius),
        (screw.thread_start, sign * screw.neck_radius),
    ]
    thread: list[Point] = []
    k = math.floor((screw.thread_start - screw.phase) / screw.pitch) - 1
    while True:
        crest = screw.phase + sign * screw.slope * screw.major + k * screw.pitch
        root = screw.phase + sign * screw.slope * screw.minor + (k + 0.5) * screw.pitch
        for u, r in ((crest, screw.major), (root, screw.minor)):
            if screw.thread_start < u < screw.length:
                taper = min(1.0, (screw.length - u) / screw.tip_length)
                thread.append((u, sign * r * taper))
        if crest >= screw.length:
            break
        k += 1
    if damage is not None:
        start, end, replacement = damage
        thread = [
            *(p for p in thread if p[0] < start),
            *replacement,
            *(p for p in thread if p[0] > end),
        ]
    return points + thread


def _clip(points: Sequence[Point], normal: Point, offset: float) -> list[Point]:
    """The part of a polygon where ``normal · p <= offset`` (one Sutherland-Hodgman pass)."""
    kept: list[Point] = []
    for i, current in enumerate(points):
        previous = points[i - 1]
        d_cur = normal[0] * current[0] + normal[1] * current[1] - offset
        d_prev = normal[0] * previous[0] + normal[1] * previous[1] - offset
        if (d_cur <= 0) != (d_prev <= 0):
            t = d_prev / (d_prev - d_cur)
            kept.append(
                (
                    previous[0] + t * (current[0] - previous[0]),
                    previous[1] + t * (current[1] - previous[1]),
                )
            )
        if d_cur <= 0:
            kept.append(current)
    return kept


def _scratch(rng: np.random.Generator, span: tuple[float, float], radius: float) -> list[_Mark]:
    """A stroke across a part: a bright gash with a dark rim, so it shows on any shade of metal."""
    start, end = span
    length = end - start
    sign = rng.choice((-1.0, 1.0))
    a = (start + length * rng.uniform(0.05, 0.4), -sign * radius * 1.3)
    b = (start + length * rng.uniform(0.6, 0.95), sign * radius * 1.3)
    bow = radius * rng.uniform(-0.3, 0.3)
    middle = ((a[0] + b[0]) / 2 + bow, (a[1] + b[1]) / 2 + rng.uniform(-0.2, 0.2) * radius)
    core = max(1.3, radius * rng.uniform(0.16, 0.24))
    rim = core + max(1.2, radius * 0.14)
    points = [a, middle, b]
    return [
        _Mark(points, _SCRATCH_RIM, width=rim, span=span),
        _Mark(points, _SCRATCH_CORE, width=core, span=span),
    ]


def _scratch_head(rng: np.random.Generator, screw: _Screw) -> _Flaw:
    marks = _scratch(rng, (0.0, screw.head_length), screw.head_radius)
    return _Flaw(_outline(screw, _end_face(screw), {}), marks=marks)


def _scratch_neck(rng: np.random.Generator, screw: _Screw) -> _Flaw:
    span = (screw.head_length, screw.thread_start)
    marks = _scratch(rng, span, screw.neck_radius)
    return _Flaw(_outline(screw, _end_face(screw), {}), marks=marks)


def _thread_side(rng: np.random.Generator, screw: _Screw) -> _Flaw:
    """A few turns of thread torn off one side: a bite out of the outline, bright torn metal."""
    sign = int(rng.choice((-1, 1)))
    half = screw.pitch * rng.uniform(1.2, 2.0)
    # Clear of the tip, which is thread_top's place.
    centre = rng.uniform(
        screw.thread_start + half + screw.pitch, screw.shank_end - half - screw.pitch
    )
    start, end = centre - half, centre + half
    count = max(5, round(2 * half / (screw.pitch / 3)))
    us = np.sort(np.linspace(start, end, count) + rng.uniform(-0.1, 0.1, count) * screw.pitch)
    depth = rng.uniform(0.3, 0.6, count)
    depth[0] = depth[-1] = 0.9  # the bite's ends meet the intact thread
    edge = [(float(u), sign * screw.minor * float(d)) for u, d in zip(us, depth, strict=True)]
    inner = [
        (float(u), sign * screw.minor * rng.uniform(-0.1, 0.2))
        for u in np.linspace(end - 0.3 * half, start + 0.3 * half, 3)
    ]
    torn = _Mark([(u, v * 1.1) for u, v in edge] + inner, _TORN)
    cracks = [
        _Mark(
            [
                (u, sign * screw.minor * 0.1),
                (u + rng.uniform(-0.5, 0.5) * screw.pitch, sign * screw.minor * 0.7),
            ],
            _GOUGE,
            width=max(1.0, 0.12 * screw.major),
        )
        for u in rng.uniform(start + 0.3 * half, end - 0.3 * half, int(rng.integers(1, 3)))
    ]
    outline = _outline(screw, _end_face(screw), {sign: (start, end, edge)})
    return _Flaw(outline, marks=[torn, *cracks])


def _thread_top(rng: np.random.Generator, screw: _Screw) -> _Flaw:
    """A damaged tip: bent sideways, or flattened into a blunt, bulging end."""
    sign = float(rng.choice((-1.0, 1.0)))
    good = _outline(screw, _end_face(screw), {})
    if rng.random() < 0.5:
        start = screw.shank_end - screw.pitch * rng.uniform(1.0, 2.0)
        offset = sign * screw.length * rng.uniform(0.8, 1.0) * _MAX_BEND
        return _Flaw(good, bend=_Bend(start, screw.length, offset))
    cut = screw.shank_end - screw.pitch * rng.uniform(0.3, 1.3)
    width = 1.5 * screw.pitch
    end_radius = screw.major * rng.uniform(1.05, 1.3)
    squashed: list[Point] = []
    for u, v in good:
        t = min(1.0, max(0.0, (u - (cut - width)) / width)) ** 2
        squashed.append((u, v * (1 - t) + math.copysign(end_radius, v) * t))
    face_u = cut - 0.3 * screw.pitch
    face = _Mark(
        [(face_u, -end_radius * 1.2), (face_u, end_radius * 1.2)],
        _CUT_FACE,
        width=max(1.5, 0.6 * screw.pitch),
    )
    return _Flaw(_clip(squashed, (1.0, 0.0), cut), marks=[face])


def _manipulated_front(rng: np.random.Generator, screw: _Screw) -> _Flaw:
    """A deformed head: a corner cut off, showing a bright cut face, or the end hammered flat."""
    sign = float(rng.choice((-1.0, 1.0)))
    hw, hl = screw.head_radius, screw.head_length
    if rng.random() < 0.5:
        corner = (hl * rng.uniform(0.5, 0.85), sign * hw)
        end = (0.0, sign * hw * (1 - rng.uniform(0.8, 1.3)))
        du, dv = end[0] - corner[0], end[1] - corner[1]
        normal = (dv, -du)  # perpendicular to the cut, turned to point away from the shank
        if normal[0] * (screw.length / 2 - corner[0]) + normal[1] * -corner[1] > 0:
            normal = (-normal[0], -normal[1])
        offset = normal[0] * corner[0] + normal[1] * corner[1]
        outline = _clip(_outline(screw, _end_face(screw), {}), normal, offset)
        norm = math.hypot(*normal)
        depth = hw * 0.3 / norm
        inset = [(p[0] - normal[0] * depth, p[1] - normal[1] * depth) for p in (end, corner)]
        return _Flaw(outline, marks=[_Mark([corner, end, *inset], _CUT_FACE)])
    # Hammered flat: the head is shorter and spreads unevenly, its slot squeezed shut.
    push = hl * rng.uniform(0.25, 0.4)
    tilt = sign * hl * rng.uniform(0.05, 0.15)
    top, bottom = hw * rng.uniform(1.15, 1.4, 2)
    face = [
        (push + tilt * float(v) / hw + rng.uniform(-0.05, 0.05) * hl, float(v))
        for v in np.linspace(-bottom, top, 9)
    ]
    rim, shoulder = 0.65 * hl, 0.8 * hl
    body = [p for p in _outline(screw, [], {}) if p[0] >= shoulder]
    polygon = [
        (shoulder, -hw),
        (rim, -bottom * 0.97),
        *face,
        (rim, top * 0.97),
        (shoulder, hw),
        *body,
    ]
    crease = _Mark(
        [(push, 0.0), (push + 0.4 * hl, rng.uniform(-0.15, 0.15) * hw)],
        _GOUGE,
        width=max(1.2, 0.15 * hw),
    )
    return _Flaw(polygon, marks=[crease])


_FLAWS = {
    "manipulated_front": _manipulated_front,
    "scratch_head": _scratch_head,
    "scratch_neck": _scratch_neck,
    "thread_side": _thread_side,
    "thread_top": _thread_top,
}


# The subtle look: defects as small and faint as those of the real MVTec screws, where most cover
# a few hundred pixels of a 1024-pixel frame and a scratch is a hairline a few grey levels off.


def _hairline(
    rng: np.random.Generator, span: tuple[float, float], radius: float, screw_length: float
) -> _Mark:
    """A thin, faint, nearly straight scratch somewhere on a part of ``radius`` along ``span``.

    Its width follows the whole screw, not the part, so that a scratch is a couple of pixels wide
    at 1024 px on the head and on the neck alike.
    """
    start, end = span
    length = radius * rng.uniform(0.5, 1.1)
    angle = rng.uniform(0.0, math.pi)
    du, dv = 0.5 * length * math.cos(angle), 0.5 * length * math.sin(angle)
    cu = rng.uniform(start + 0.2 * (end - start), end - 0.2 * (end - start))
    cv = rng.uniform(-0.5, 0.5) * radius
    bow = rng.uniform(-0.08, 0.08) * length
    points = [
        (cu - du, cv - dv),
        (cu - dv * bow / length, cv + du * bow / length),
        (cu + du, cv + dv),
    ]
    level = _SCRATCH_CORE if rng.random() < 0.8 else _SCRATCH_RIM
    width = max(1.0, screw_length * rng.uniform(0.004, 0.006))
    return _Mark(points, level, width=width, span=span, opacity=rng.uniform(0.1, 0.32))


def _subtle_scratch_head(rng: np.random.Generator, screw: _Screw) -> _Flaw:
    mark = _hairline(rng, (0.0, screw.head_length), screw.head_radius, screw.length)
    return _Flaw(_outline(screw, _end_face(screw), {}), marks=[mark])


def _subtle_scratch_neck(rng: np.random.Generator, screw: _Screw) -> _Flaw:
    span = (screw.head_length, screw.thread_start)
    mark = _hairline(rng, span, screw.neck_radius, screw.length)
    return _Flaw(_outline(screw, _end_face(screw), {}), marks=[mark])


def _subtle_thread_side(rng: np.random.Generator, screw: _Screw) -> _Flaw:
    """One crest of the thread dented: its top pushed in part of the way to the root."""
    sign = int(rng.choice((-1, 1)))
    side = _side(screw, sign, None)
    crests = [
        i
        for i in range(1, len(side) - 1)
        if abs(side[i][1]) == screw.major
        and screw.thread_start + screw.pitch < side[i][0] < screw.shank_end - screw.pitch
    ]
    i = crests[int(rng.integers(len(crests)))]
    before, crest, after = side[i - 1], side[i], side[i + 1]

    def toward(target: Point, t: float) -> Point:
        return (crest[0] + t * (target[0] - crest[0]), crest[1] + t * (target[1] - crest[1]))

    depth = rng.uniform(0.35, 0.7)
    lean = rng.uniform(-0.3, 0.3)
    dent = (
        crest[0] + lean * 0.25 * screw.pitch,
        crest[1] - sign * depth * (screw.major - screw.minor),
    )
    left, right = toward(before, rng.uniform(0.5, 0.9)), toward(after, rng.uniform(0.5, 0.9))
    replacement = [left, toward(dent, 1.0), right]
    outline = _outline(
        screw, _end_face(screw), {sign: (crest[0] - 1e-6, crest[0] + 1e-6, replacement)}
    )
    torn = _Mark([left, dent, right], _TORN, opacity=rng.uniform(0.2, 0.5))
    return _Flaw(outline, marks=[torn])


def _subtle_thread_top(rng: np.random.Generator, screw: _Screw) -> _Flaw:
    """A tip slightly bent sideways, or its last bit of thread knocked off, leaving it blunt."""
    sign = float(rng.choice((-1.0, 1.0)))
    good = _outline(screw, _end_face(screw), {})
    if rng.random() < 0.5:
        start = screw.length - screw.tip_length * rng.uniform(0.6, 0.9)
        offset = sign * screw.length * rng.uniform(0.005, 0.011)
        return _Flaw(good, bend=_Bend(start, screw.length, offset))
    cut = screw.length - screw.tip_length * rng.uniform(0.12, 0.3)
    face = _Mark(
        [(cut - 0.02 * screw.pitch, -screw.major), (cut - 0.02 * screw.pitch, screw.major)],
        _CUT_FACE,
        width=max(1.0, 0.08 * screw.pitch),
        opacity=rng.uniform(0.2, 0.5),
    )
    return _Flaw(_clip(good, (1.0, 0.0), cut), marks=[face])


def _subtle_manipulated_front(rng: np.random.Generator, screw: _Screw) -> _Flaw:
    """A head knocked out of shape: a small corner chipped off, or a dent pressed into its end."""
    sign = float(rng.choice((-1.0, 1.0)))
    hw, hl = screw.head_radius, screw.head_length
    if rng.random() < 0.5:
        corner = (screw.dome + hl * rng.uniform(0.08, 0.2), sign * hw)
        v = sign * hw * (1 - rng.uniform(0.12, 0.3))
        end = (_dome(screw, v), v)
        du, dv = end[0] - corner[0], end[1] - corner[1]
        normal = (dv, -du)
        if normal[0] * (screw.length / 2 - corner[0]) + normal[1] * -corner[1] > 0:
            normal = (-normal[0], -normal[1])
        offset = normal[0] * corner[0] + normal[1] * corner[1]
        outline = _clip(_outline(screw, _end_face(screw), {}), normal, offset)
        depth = 0.06 * hw / math.hypot(*normal)
        inset = [(p[0] - normal[0] * depth, p[1] - normal[1] * depth) for p in (end, corner)]
        cut_face = _Mark([corner, end, *inset], _CUT_FACE, opacity=rng.uniform(0.2, 0.5))
        return _Flaw(outline, marks=[cut_face])
    half_slot = screw.slot_width / 2
    width = hw * rng.uniform(0.1, 0.2)
    centre = sign * rng.uniform(half_slot + width, hw - width)
    depth = hl * rng.uniform(0.04, 0.09)
    dent = [
        (
            _dome(screw, float(v)) + depth * math.cos(math.pi * (float(v) - centre) / (2 * width)),
            float(v),
        )
        for v in np.linspace(centre - width, centre + width, 9)
    ]
    # The end face runs from -v to +v, so the dent goes in where its stretch of v was.
    face = _end_face(screw)
    dented = [
        *(p for p in face if p[1] < centre - width),
        *dent,
        *(p for p in face if p[1] > centre + width),
    ]
    return _Flaw(_outline(screw, dented, {}))


_SUBTLE_FLAWS = {
    "manipulated_front": _subtle_manipulated_front,
    "scratch_head": _subtle_scratch_head,
    "scratch_neck": _subtle_scratch_neck,
    "thread_side": _subtle_thread_side,
    "thread_top": _subtle_thread_top,
}


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[FloatArray, FloatArray]:
    """Pixel centres of a ``size`` x ``size`` picture, shared read-only between pictures."""
    centres = np.arange(size, dtype=np.float32) + 0.5
    xs, ys = np.meshgrid(centres, centres)
    xs.setflags(write=False)
    ys.setflags(write=False)
    return xs, ys


def _local_coordinates(pose: _Pose, screw: _Screw, size: int) -> tuple[FloatArray, FloatArray]:
    xs, ys = _grid(size)
    cos, sin = np.float32(math.cos(pose.angle)), np.float32(math.sin(pose.angle))
    dx, dy = xs - np.float32(pose.cx), ys - np.float32(pose.cy)
    u = cos * dx + sin * dy + np.float32(screw.length / 2)
    v = -sin * dx + cos * dy
    return u, v


def _to_image(
    points: Sequence[Point], pose: _Pose, screw: _Screw, bend: _Bend | None
) -> list[Point]:
    """Points of the screw's frame as Pillow coordinates on the supersampled canvas."""
    local = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    u, v = local[:, 0] - np.float32(screw.length / 2), local[:, 1]
    if bend is not None:
        v = v + bend.at(local[:, 0])
    cos, sin = math.cos(pose.angle), math.sin(pose.angle)
    # Pillow puts pixel i's centre at coordinate i; ours is at i + 0.5.
    xs = (pose.cx + cos * u - sin * v) * _SUPERSAMPLE - 0.5
    ys = (pose.cy + sin * u + cos * v) * _SUPERSAMPLE - 0.5
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


def _canvas(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    canvas = Image.new("L", (size * _SUPERSAMPLE, size * _SUPERSAMPLE), 0)
    return canvas, ImageDraw.Draw(canvas)


def _coverage(canvas: Image.Image) -> FloatArray:
    reduced = canvas.reduce(_SUPERSAMPLE)
    return np.asarray(reduced, dtype=np.float32) / np.float32(255)


def _fill(points: Sequence[Point], size: int) -> FloatArray:
    canvas, draw = _canvas(size)
    draw.polygon(points, fill=255)
    return _coverage(canvas)


def _paint(
    mark: _Mark, pose: _Pose, screw: _Screw, bend: _Bend | None, u: FloatArray, size: int
) -> FloatArray:
    placed = _to_image(mark.points, pose, screw, bend)
    canvas, draw = _canvas(size)
    if mark.width:
        draw.line(placed, fill=255, width=round(mark.width * _SUPERSAMPLE), joint="curve")
    else:
        draw.polygon(placed, fill=255)
    coverage = _coverage(canvas)
    if mark.span is not None:
        coverage *= (u >= mark.span[0]) & (u <= mark.span[1])
    return coverage


def _metal(
    rng: np.random.Generator, screw: _Screw, u: FloatArray, v: FloatArray, style: Style
) -> FloatArray:
    """Grey levels of polished steel: a round bar lit from one side, grooved where threaded."""
    base = rng.uniform(80.0, 125.0) * style.screw_brightness
    shine = rng.uniform(60.0, 110.0) * style.screw_brightness
    highlight = rng.uniform(-0.55, 0.55)
    spread = rng.uniform(0.16, 0.3)
    groove_depth = rng.uniform(0.4, 0.6)
    hl = screw.head_length
    radius = np.interp(
        u,
        [0.0, hl, hl + 1e-3, screw.thread_start, screw.shank_end, screw.length],
        [screw.head_radius, screw.head_radius, screw.neck_radius, screw.major, screw.major, 0.5],
    ).astype(np.float32)
    across = np.clip(v / radius, -1.0, 1.0)
    metal = base * (0.4 + 0.6 * np.sqrt(1.0 - across * across))
    metal += shine * np.exp(-(((across - highlight) / spread) ** 2))
    phase = (u - np.float32(screw.slope) * v - np.float32(screw.phase)) / np.float32(screw.pitch)
    groove = ((1.0 - np.cos(np.float32(2 * math.pi) * phase)) / 2) ** 3
    metal *= np.where(u >= screw.thread_start, 1.0 - groove_depth * groove, 1.0)
    # The underside of the head, where it meets the neck, sits in its own shadow.
    metal *= 1.0 - 0.4 * np.exp(-(((u - hl) / (0.12 * hl)) ** 2))
    return np.asarray(metal, dtype=np.float32)


def _compose(
    rng: np.random.Generator, alpha: FloatArray, metal: FloatArray, size: int, style: Style
) -> FloatArray:
    """The screw on the table, with its soft shadow, under uneven light."""
    background = rng.uniform(*style.background)
    direction = rng.uniform(0.0, 2 * math.pi)
    reach = 0.012 * size
    shift = (round(reach * math.sin(direction)), round(reach * math.cos(direction)))
    cast = Image.fromarray((np.roll(alpha, shift, axis=(0, 1)) * 255).astype(np.uint8))
    cast = cast.filter(ImageFilter.GaussianBlur(0.015 * size))
    shadow = np.asarray(cast, dtype=np.float32) / np.float32(255)
    table = background * (1.0 - rng.uniform(0.1, 0.25) * shadow)
    scene = table + (metal - table) * alpha

    xs, ys = _grid(size)
    x, y = xs / np.float32(size) - 0.5, ys / np.float32(size) - 0.5
    angle = rng.uniform(0.0, 2 * math.pi)
    gradient = style.gradient * rng.uniform(0.3, 1.0) * 2
    vignette = style.vignette * rng.uniform(0.3, 1.0) * 2
    light = 1.0 + gradient * (x * math.cos(angle) + y * math.sin(angle))
    light -= vignette * (x * x + y * y)
    return np.asarray(scene * light * (1.0 + style.lighting_shift), dtype=np.float32)


def _develop(
    look: np.random.Generator,
    noise: np.random.Generator,
    scene: FloatArray,
    size: int,
    style: Style,
) -> Image.Image:
    """What the camera records: the scene through a slightly soft lens and a noisy sensor."""
    radius = look.uniform(*style.blur_radius) * size / 256
    sigma = look.uniform(*style.noise_sigma)
    image = Image.fromarray(np.clip(np.rint(scene), 0, 255).astype(np.uint8), mode="L")
    if radius > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(radius))
    grain = noise.standard_normal((size, size), dtype=np.float32) * np.float32(sigma)
    recorded = np.asarray(image, dtype=np.float32) + grain
    return Image.fromarray(np.clip(np.rint(recorded), 0, 255).astype(np.uint8), mode="L")
