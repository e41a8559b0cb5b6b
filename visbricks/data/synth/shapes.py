"""Synthetic shapes on textured backgrounds: the embedded default dataset (docs/architecture.md §5).

``render_scene`` draws shapes into one image and returns, per shape, its class, its visible mask
and the tight box of that mask. ``write_classification`` and ``write_detection`` turn scenes into
datasets on disk in the formats the real loaders read (ImageFolder, fastai-style CSV, COCO / VOC /
YOLO), so training on synthetic data exercises the same code path as training on user data.

Geometry is rasterised from signed distances evaluated at pixel centres (pixel ``i`` spans
``[i, i+1)``): a pixel belongs to a shape when its centre is inside, and the same distance gives
anti-aliased edges and outlines. Boxes follow that convention: ``x2 = last column + 1``, which is
what ``pycocotools.mask.toBbox`` reports.

Mask PNGs written by ``write_detection`` (uint8, one per image):

- ``masks/<split>/<name>.png``: semantic, ``0`` = background and ``k + 1`` = class ``k`` of
  ``classes`` (the Pascal VOC SegmentationClass convention; no 255 "ignore" pixels, the labels are
  exact).
- ``instances/<split>/<name>.png``: ``0`` = background and ``j + 1`` = the image's ``j``-th object
  in annotation order (the VOC SegmentationObject convention).

Every image is drawn from its own random stream derived from ``(seed, view, split, index)``, so a
dataset is a pure function of its parameters and the first N images do not depend on how many
follow.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError
from ..io import write_image
from ..records import DetectionSet, ImageRecord
from .publish import COMPLETE_MARKER as COMPLETE_MARKER  # re-exported: tests and callers
from .publish import generate_once

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ellipse", "cross")

# Bumped whenever the renderer's output changes, so an old folder is never reused as if it were
# what the current code would produce.
GENERATOR_VERSION = 1

_CIRCLE, _SQUARE, _TRIANGLE, _STAR, _ELLIPSE, _CROSS = range(len(SHAPE_CLASSES))
_VIEWS = {"classification": 1, "multilabel": 2, "detection": 3}
_SPLITS = {"train": 0, "val": 1}
_MIN_AREA = 12  # pixels; anything smaller is a speck, not a recognisable shape
_PLACEMENT_TRIES = 30


@dataclass(eq=False)
class ShapeObject:
    label: int  # index into SHAPE_CLASSES
    box: np.ndarray  # (4,) float32 XYXY pixels: the tight box of ``mask``
    mask: np.ndarray  # (H, W) bool: the pixels where this shape is visible (not occluded)
    area: int  # pixels the shape covers before occlusion; mask.sum() / area = visible fraction


@dataclass(frozen=True)
class _Spec:
    label: int
    size_range: tuple[float, float]  # extent as a fraction of the image's shorter side


# --------------------------------------------------------------------------------------------
# Geometry


def _unit_polygon(label: int, rng: np.random.Generator) -> np.ndarray:
    """Vertices (K, 2) of a polygon class with circumradius 1, centred at the origin."""
    if label == _SQUARE:
        angles = np.deg2rad(45.0 + 90.0 * np.arange(4))
        return np.stack([np.cos(angles), np.sin(angles)], 1)
    if label == _TRIANGLE:
        angles = np.deg2rad(-90.0 + 120.0 * np.arange(3))
        return np.stack([np.cos(angles), np.sin(angles)], 1)
    if label == _STAR:
        # Inner radius well below cos(36°) ≈ 0.81 keeps the points sharp enough to tell a star
        # from a pentagon at small sizes.
        radii = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
        angles = np.deg2rad(-90.0 + 36.0 * np.arange(10))
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
    if label == _CROSS:
        t = rng.uniform(0.26, 0.34)  # half the arm width; wider arms turn a cross into a square
        return np.array(
            [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t),
             (t, 1), (-t, 1), (-t, t), (-1, t), (-1, -t), (-t, -t)],
            dtype=np.float64,
        )  # fmt: skip
    raise ValueError(f"class {label} is not a polygon")


def _polygon_sdf(px: np.ndarray, py: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) from points (1, w) × (h, 1) to a simple polygon."""
    a = verts[:, :, None, None]
    e = (np.roll(verts, -1, axis=0) - verts)[:, :, None, None]
    ax, ay, ex, ey = a[:, 0], a[:, 1], e[:, 0], e[:, 1]
    dx, dy = px - ax, py - ay  # (K, h, w)
    t = np.clip((dx * ex + dy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    dist = np.sqrt(((dx - t * ex) ** 2 + (dy - t * ey) ** 2).min(axis=0))
    # Even-odd rule, so the concave star and cross need no special case.
    spans = (ay > py) != (ay + ey > py)
    x_cross = ax + (py - ay) * ex / np.where(ey == 0, 1.0, ey)
    inside = np.logical_xor.reduce(spans & (px < x_cross), axis=0)
    return np.where(inside, -dist, dist)


@dataclass
class _Shape:
    label: int
    cx: float
    cy: float
    offsets: np.ndarray  # (2, 2): [[min dx, min dy], [max dx, max dy]] of the outline
    verts: np.ndarray | None  # polygon vertices relative to the centre, pixels
    axes: tuple[float, float, float]  # conics: semi-axes a, b and rotation angle

    def window(self, width: int, height: int) -> tuple[slice, slice]:
        # One pixel of margin for the anti-aliased fringe.
        x0 = max(0, int(np.floor(self.cx + self.offsets[0, 0])) - 1)
        y0 = max(0, int(np.floor(self.cy + self.offsets[0, 1])) - 1)
        x1 = min(width, int(np.ceil(self.cx + self.offsets[1, 0])) + 2)
        y1 = min(height, int(np.ceil(self.cy + self.offsets[1, 1])) + 2)
        return slice(y0, y1), slice(x0, x1)

    def sdf(self, win: tuple[slice, slice]) -> np.ndarray:
        px = np.arange(win[1].start, win[1].stop, dtype=np.float64)[None, :] + 0.5 - self.cx
        py = np.arange(win[0].start, win[0].stop, dtype=np.float64)[:, None] + 0.5 - self.cy
        if self.verts is not None:
            return _polygon_sdf(px, py, self.verts)
        a, b, theta = self.axes
        c, s = np.cos(theta), np.sin(theta)
        u, v = px * c + py * s, -px * s + py * c
        if a == b:
            return np.sqrt(u * u + v * v) - a
        # First-order distance to an ellipse (value / gradient norm): exact on the boundary,
        # which is all anti-aliasing and thin outlines need.
        k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        k1 = np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2)
        return np.where(k1 > 0, k0 * (k0 - 1.0) / np.maximum(k1, 1e-12), -b)


def _random_shape(
    rng: np.random.Generator, label: int, extent: float, width: int, height: int
) -> _Shape:
    """A ``label`` shape whose rotated outline spans ``extent`` pixels, lying inside the image."""
    theta = rng.uniform(0.0, 2.0 * np.pi)
    c, s = np.cos(theta), np.sin(theta)
    if label in (_CIRCLE, _ELLIPSE):
        # Aspect ≥ 1.8 so an ellipse never passes for a circle, even after rasterisation.
        aspect = 1.0 if label == _CIRCLE else rng.uniform(1.8, 2.6)
        hw, hh = np.hypot(c, s / aspect), np.hypot(s, c / aspect)
        scale = extent / (2.0 * max(hw, hh))
        offsets = np.array([[-hw, -hh], [hw, hh]]) * scale
        verts, axes = None, (scale, scale / aspect, theta)
    else:
        rot = np.array([[c, -s], [s, c]])
        unit = _unit_polygon(label, rng) @ rot.T
        scale = extent / np.ptp(unit, axis=0).max()
        verts = unit * scale
        offsets, axes = np.stack([verts.min(0), verts.max(0)]), (0.0, 0.0, 0.0)
    cx = rng.uniform(-offsets[0, 0], width - offsets[1, 0])
    cy = rng.uniform(-offsets[0, 1], height - offsets[1, 1])
    return _Shape(label, cx, cy, offsets, verts, axes)


# --------------------------------------------------------------------------------------------
# Appearance


def _upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of a coarse (gh, gw, C) grid to (height, width, C)."""

    def weights(n_out: int, n_in: int) -> np.ndarray:
        pos = np.linspace(0.0, n_in - 1.0, n_out)
        lo = np.minimum(pos.astype(int), n_in - 2)
        frac = pos - lo
        w = np.zeros((n_out, n_in))
        w[np.arange(n_out), lo] = 1.0 - frac
        w[np.arange(n_out), lo + 1] = frac
        return w

    rows = np.tensordot(weights(height, grid.shape[0]), grid, axes=(1, 0))  # (H, gw, C)
    return np.einsum("yjc,xj->yxc", rows, weights(width, grid.shape[1]), optimize=True)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A float (H, W, 3) texture: one of five families with random parameters.

    Amplitudes stay moderate so a shape's outline is the strongest edge in its neighbourhood,
    but textures are busy enough that "any non-background pixel" is not a usable cue.
    """
    base = rng.uniform(40.0, 215.0, 3)
    y = (np.arange(height)[:, None] + 0.5) / max(height, width)
    x = (np.arange(width)[None, :] + 0.5) / max(height, width)
    kind = rng.integers(5)
    if kind == 0:  # sum of low-frequency sinusoids, different per channel
        img = np.broadcast_to(base, (height, width, 3)).copy()
        for _ in range(3):
            phi = rng.uniform(0, 2 * np.pi)
            freq, ang = rng.uniform(0.5, 3.0), rng.uniform(0, np.pi)
            wave = np.sin(2 * np.pi * freq * (x * np.cos(ang) + y * np.sin(ang)) + phi)
            img += wave[..., None] * rng.uniform(-30, 30, 3)
    elif kind == 1:  # linear gradient between two colours
        ang = rng.uniform(0, 2 * np.pi)
        ramp = x * np.cos(ang) + y * np.sin(ang)
        ramp = (ramp - ramp.mean()) / max(np.ptp(ramp), 1e-6)
        img = base + ramp[..., None] * rng.uniform(-110, 110, 3)
    elif kind in (2, 3):  # stripes or checkers, softened, at a random angle and period
        ang = rng.uniform(0, np.pi)
        period = rng.uniform(4.0, 16.0) / max(height, width)
        u = (x * np.cos(ang) + y * np.sin(ang)) / period
        v = (-x * np.sin(ang) + y * np.cos(ang)) / period
        wave = np.sin(np.pi * u) if kind == 2 else np.sin(np.pi * u) * np.sin(np.pi * v)
        img = base + np.tanh(3.0 * wave)[..., None] * rng.uniform(-35, 35, 3)
    else:  # smooth value noise
        coarse = rng.uniform(-1, 1, (rng.integers(3, 9), rng.integers(3, 9), 3))
        img = base + _upsample(coarse, height, width) * rng.uniform(15, 50)
    if rng.random() < 0.5:
        img = img + rng.normal(0.0, rng.uniform(1.0, 5.0), img.shape)
    return img


def _pick_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A fill colour that stands out from (almost) every pixel it will cover.

    Scoring by the 10th percentile of the distance, not the mean, matters on stripes and
    checkers: a colour between the two stripe colours would have a fine mean distance and
    still vanish into one of them.
    """
    if len(under) > 256:
        under = under[:: len(under) // 256 + 1]
    candidates = rng.uniform(0.0, 255.0, (12, 3))
    dist = np.linalg.norm(candidates[:, None, :] - under[None], axis=-1)
    score = np.partition(dist, len(under) // 10, axis=1)[:, len(under) // 10]  # 10th percentile
    good = np.flatnonzero(score >= 80.0)
    return candidates[good[0] if len(good) else int(score.argmax())]


def _paint(
    rng: np.random.Generator, canvas: np.ndarray, shape: _Shape, sd: np.ndarray, win: tuple
) -> None:
    """Composite ``shape`` onto ``canvas`` (float, in place) with fill, texture and outline."""
    region = canvas[win]
    fill = _pick_colour(rng, region[sd <= 0])
    colour = np.broadcast_to(fill, region.shape).copy()
    texture = rng.random()
    if texture < 0.25:  # stripes inside the shape
        ang, period = rng.uniform(0, np.pi), rng.uniform(3.0, 8.0)
        yy, xx = np.mgrid[win[0], win[1]]
        stripes = np.sin(2 * np.pi * (xx * np.cos(ang) + yy * np.sin(ang)) / period)
        colour += stripes[..., None] * rng.uniform(10.0, 25.0)
    elif texture < 0.45:  # grain
        colour += rng.normal(0.0, rng.uniform(4.0, 10.0), colour.shape)
    if rng.random() < 0.35:
        # A thin outline, darker or lighter than the fill, ramped in over one pixel.
        outline = fill * 0.35 if fill.mean() > 110 else fill + (255.0 - fill) * 0.65
        edge = rng.uniform(1.0, 2.0)
        t = np.clip(sd + edge + 0.5, 0.0, 1.0)[..., None]
        colour = colour * (1.0 - t) + outline * t
    alpha = np.clip(0.5 - sd, 0.0, 1.0)[..., None]
    canvas[win] = region * (1.0 - alpha) + colour * alpha


# --------------------------------------------------------------------------------------------
# Scenes


def _mask_box(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def _render(
    rng: np.random.Generator, width: int, height: int, specs: Sequence[_Spec], min_visible: float
) -> tuple[np.ndarray, list[ShapeObject]]:
    """Place and paint ``specs`` in order (later on top); a spec that finds no room is skipped.

    Placement keeps the invariant that every shape drawn is annotated: a new shape is accepted
    only if no earlier shape drops below ``min_visible`` of its area. Dropping an occluded shape
    after the fact instead would leave visible, unlabelled objects in the image.
    """
    canvas = _background(rng, height, width)
    visible = np.zeros((len(specs), height, width), dtype=bool)
    counts = np.zeros(len(specs), dtype=np.int64)  # visible pixels per placed shape
    areas: list[int] = []
    labels: list[int] = []
    short_side = min(width, height)
    for spec in specs:
        for _ in range(_PLACEMENT_TRIES):
            extent = rng.uniform(*spec.size_range) * short_side
            shape = _random_shape(rng, spec.label, extent, width, height)
            win = shape.window(width, height)
            sd = shape.sdf(win)
            inside = sd <= 0
            area = int(inside.sum())
            if area < _MIN_AREA:
                continue
            n = len(areas)
            kept = counts[:n] - (visible[:n, win[0], win[1]] & inside).sum((1, 2))
            if np.any(kept < min_visible * np.asarray(areas, dtype=np.float64)):
                continue
            visible[:n, win[0], win[1]] &= ~inside
            visible[n, win[0], win[1]] = inside
            counts[:n], counts[n] = kept, area
            areas.append(area)
            labels.append(spec.label)
            _paint(rng, canvas, shape, sd, win)
            break
    if rng.random() < 0.5:  # sensor-like noise over everything, shapes included
        canvas += rng.normal(0.0, rng.uniform(1.0, 6.0), canvas.shape)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    objects = [
        ShapeObject(label=lab, box=_mask_box(visible[i]), mask=visible[i].copy(), area=areas[i])
        for i, lab in enumerate(labels)
    ]
    return image, objects


def _count(rng: np.random.Generator, n_objects: int | tuple[int, int]) -> int:
    if isinstance(n_objects, (int, np.integer)):
        lo = hi = int(n_objects)
    else:
        lo, hi = (int(v) for v in n_objects)
    if not 0 <= lo <= hi:
        raise ConfigError(f"n_objects must be an int ≥ 0 or a (min, max) range, got {n_objects!r}")
    return int(rng.integers(lo, hi + 1))


def _check_size_range(size_range: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in size_range)
    if not 0.0 < lo <= hi <= 1.0:
        raise ConfigError(f"size_range must satisfy 0 < min ≤ max ≤ 1, got {size_range!r}")
    return lo, hi


def render_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    n_objects: int | tuple[int, int],
    *,
    size_range: tuple[float, float] = (0.15, 0.45),
    min_visible: float = 0.6,
) -> tuple[np.ndarray, list[ShapeObject]]:
    """Render shapes of random classes on a textured background.

    ``n_objects`` is a count or an inclusive (min, max) range; fewer come back when a shape finds
    no place where it leaves every earlier one at least ``min_visible`` of its area. Each shape
    spans ``size_range`` × the shorter image side (before occlusion) and lies inside the image.
    Objects are returned bottom to top; their masks are disjoint.
    """
    if width < 8 or height < 8:
        raise ConfigError(f"image size must be at least 8×8, got {width}×{height}")
    if not 0.0 < min_visible <= 1.0:
        raise ConfigError(f"min_visible must be in (0, 1], got {min_visible!r}")
    size_range = _check_size_range(size_range)
    n = _count(rng, n_objects)
    specs = [_Spec(int(c), size_range) for c in rng.integers(0, len(SHAPE_CLASSES), n)]
    return _render(rng, width, height, specs, min_visible)


def render_classification_scene(
    rng: np.random.Generator, label: int, size: int, n_distractors: int | tuple[int, int] = (0, 2)
) -> tuple[np.ndarray, list[ShapeObject]]:
    """One dominant shape of ``label`` (35–75 % of the side) plus small shapes of other classes.

    The dominant shape is ``objects[0]``. Distractors are at most 22 % of the side, so the image's
    class is never ambiguous, and may cover at most 10 % of the dominant shape.
    """
    if not 0 <= label < len(SHAPE_CLASSES):
        raise ConfigError(f"label must be in 0..{len(SHAPE_CLASSES) - 1}, got {label}")
    others = [c for c in range(len(SHAPE_CLASSES)) if c != label]
    n = _count(rng, n_distractors)
    specs = [_Spec(label, (0.35, 0.75))]
    specs += [_Spec(int(c), (0.12, 0.22)) for c in rng.choice(others, n)]
    return _render(rng, size, size, specs, min_visible=0.9)


# --------------------------------------------------------------------------------------------
# Datasets on disk


def _image_rng(seed: int, view: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _VIEWS[view], _SPLITS[split], index])


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")


def _marker_text(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, indent=1) + "\n"


def _generate_atomically(out: Path, params: dict[str, Any], build: Callable[[Path], Path]) -> Path:
    """Build with ``build(work_dir) -> dataset_dir`` and publish at ``out`` (see synth.publish)."""
    return generate_once(out, params, build, _marker_text)


def write_classification(
    out: str | Path, n_train: int = 3000, n_val: int = 600, size: int = 64, seed: int = 0
) -> Path:
    """Write the classification and multi-label views of the shapes dataset under ``out``.

    Layout: ``train/<class>/*.png`` and ``val/<class>/*.png`` (ImageFolder; classes balanced to
    within one image), ``multilabel/images/*.png`` with ``multilabel/train.csv`` and ``val.csv``
    (``filename,labels``; labels space-separated class names; 1–4 shapes of comparable size per
    image) and ``classes.txt``. Reuses ``out`` when it already holds exactly this dataset.
    """
    _check_counts(n_train=n_train, n_val=n_val, seed=seed)
    if size < 32:
        raise ConfigError(
            f"size must be at least 32 pixels for shapes to stay recognisable: {size}"
        )
    params = {
        "generator": "visbricks.data.synth.shapes",
        "version": GENERATOR_VERSION,
        "view": "classification",
        "classes": list(SHAPE_CLASSES),
        "n_train": int(n_train),
        "n_val": int(n_val),
        "size": int(size),
        "seed": int(seed),
    }

    def build(work: Path) -> Path:
        data = work / "data"
        data.mkdir()
        (data / "classes.txt").write_text("".join(f"{c}\n" for c in SHAPE_CLASSES))
        for split, n in (("train", n_train), ("val", n_val)):
            for name in SHAPE_CLASSES:
                (data / split / name).mkdir(parents=True)
            for i in range(n):
                # Cycling labels balances classes exactly when n is a multiple of the class count.
                label = i % len(SHAPE_CLASSES)
                rng = _image_rng(seed, "classification", split, i)
                image, _ = render_classification_scene(rng, label, size)
                write_image(data / split / SHAPE_CLASSES[label] / f"{i:05d}.png", image)
        images = data / "multilabel" / "images"
        images.mkdir(parents=True)
        for split, n in (("train", n_train), ("val", n_val)):
            rows = ["filename,labels"]
            for i in range(n):
                rng = _image_rng(seed, "multilabel", split, i)
                image, objects = render_scene(rng, size, size, (1, 4), size_range=(0.28, 0.45))
                name = f"{split}_{i:05d}.png"
                write_image(images / name, image)
                present = sorted({o.label for o in objects})
                rows.append(f"images/{name},{' '.join(SHAPE_CLASSES[c] for c in present)}")
            (data / "multilabel" / f"{split}.csv").write_text("\n".join(rows) + "\n")
        return data

    return _generate_atomically(Path(out), params, build)


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def write_detection(
    out: str | Path,
    fmt: str = "coco",
    n_train: int = 1000,
    n_val: int = 200,
    width: int = 128,
    height: int = 128,
    seed: int = 0,
    objects: tuple[int, int] = (1, 5),
) -> Path:
    """Write the detection / instance-segmentation view of the shapes dataset in ``fmt``.

    Boxes, labels and per-object COCO RLE masks go through ``visbricks.data.formats.write_dataset``
    (so ``fmt`` is any format it writes: coco, voc, yolo); the semantic and instance mask PNGs
    described in the module docstring are written alongside. Reuses ``out`` when it already holds
    exactly this dataset.
    """
    from ..formats import FORMATS, write_dataset  # deferred: only detection needs the writers

    if fmt not in FORMATS:  # checked here so a typo fails before minutes of rendering
        raise ConfigError(f"unknown output format {fmt!r} (one of {', '.join(FORMATS)})")
    _check_counts(n_train=n_train, n_val=n_val, seed=seed)
    if width < 32 or height < 32:
        raise ConfigError(f"image size must be at least 32×32, got {width}×{height}")
    lo, hi = (int(v) for v in objects)
    if not 1 <= lo <= hi:
        raise ConfigError(f"objects must be a (min, max) range with 1 ≤ min ≤ max, got {objects!r}")
    params = {
        "generator": "visbricks.data.synth.shapes",
        "version": GENERATOR_VERSION,
        "view": "detection",
        "classes": list(SHAPE_CLASSES),
        "format": str(fmt),
        "n_train": int(n_train),
        "n_val": int(n_val),
        "width": int(width),
        "height": int(height),
        "seed": int(seed),
        "objects": [lo, hi],
    }

    def build(work: Path) -> Path:
        stage, data = work / "stage", work / "data"
        for split, n in (("train", n_train), ("val", n_val)):
            records = []
            for i in range(n):
                rng = _image_rng(seed, "detection", split, i)
                image, objs = render_scene(rng, width, height, (lo, hi))
                name = f"{split}_{i:06d}"
                semantic = np.zeros((height, width), dtype=np.uint8)
                instance = np.zeros((height, width), dtype=np.uint8)
                for j, o in enumerate(objs):
                    semantic[o.mask] = o.label + 1
                    instance[o.mask] = j + 1
                write_image(stage / "images" / split / f"{name}.png", image)
                write_image(stage / "masks" / split / f"{name}.png", semantic)
                write_image(stage / "instances" / split / f"{name}.png", instance)
                records.append(
                    ImageRecord(
                        file=f"images/{split}/{name}.png",
                        width=width,
                        height=height,
                        boxes=np.array([o.box for o in objs], np.float32).reshape(-1, 4),
                        labels=np.array([o.label for o in objs]),
                        segmentations=[_rle(o.mask) for o in objs],
                        mask_file=f"masks/{split}/{name}.png",
                        image_id=i + 1,
                    )
                )
            ds = DetectionSet(root=stage, classes=list(SHAPE_CLASSES), records=records)
            write_dataset(ds, data, fmt, split=split)
            for folder in ("masks", "instances"):
                target = data / folder / split
                if not target.exists():  # write_dataset may already have copied mask_file PNGs
                    shutil.copytree(stage / folder / split, target)
        return data

    return _generate_atomically(Path(out), params, build)


def write_detection_at(
    kind: str | None, root: Path, params: dict[str, Any], task: str, **defaults: Any
) -> Path:
    """What a box or mask task's ``data.synth`` runs: the shapes set at ``data.root`` (a folder,
    or the data YAML that names it: the dataset is then its folder), ``params`` on top of the
    task's ``defaults``; a wrong kind or parameter is one ConfigError naming ``data.synth``.
    Returns the dataset folder."""
    import inspect

    from ..formats.base import YAML_SUFFIXES

    if kind != "shapes":
        raise ConfigError(f"data.synth.kind for {task} must be 'shapes', got {kind!r}")
    out = root.parent if root.suffix in YAML_SUFFIXES else root
    params = {**defaults, **params}
    try:
        inspect.signature(write_detection).bind(out, **params)
    except TypeError as e:
        names = list(inspect.signature(write_detection).parameters)[1:]
        raise ConfigError(
            f"data.synth: {e} (write_detection parameters: {', '.join(names)})"
        ) from None
    write_detection(out, **params)
    return out
