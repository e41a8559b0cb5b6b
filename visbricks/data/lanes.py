"""Lane data: the in-memory records every lane format reads into, checks, and the dataset.

A :class:`LaneSet` holds one :class:`LaneRecord` per image: its path (relative to the root),
size, and lanes as ``(N, 2)`` float ``(x, y)`` pixel polylines, ordered left to right. TuSimple's
``h_samples`` and CULane's per-slot existence flags are kept when a format has them, so each
format round-trips losslessly and converting between them loses only what the target lacks.

:class:`LaneDataset` reads the images, applies lane-aware augmentation (the points move with
the pixels: flip, which also mirrors the lane order; small rotation and shift; photometric
jitter), resizes to the model input and encodes the row/column anchor targets
(:mod:`visbricks.ops.lanes`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from ..ops.lanes import LaneAnchors, assign_slots, encode_lanes, lane_mask_target
from .io import check_image, read_image, safe_join, warn_skipped
from .report import ProblemList, first_readable


@dataclass
class LaneRecord:
    file: str  # image path relative to the dataset root, POSIX separators
    width: int
    height: int
    lanes: list[np.ndarray] = field(default_factory=list)  # (N, 2) float64 (x, y) pixels
    h_samples: list[float] | None = None  # TuSimple's sample rows, when read from TuSimple
    exist: list[int] | None = None  # CULane's per-slot existence flags, when given
    # Where the lanes were written when that is not the image itself (labelme's JSON) and how
    # that file names each lane ("lane 0 (shape 3, 'l0')"): data check points at what to fix.
    label_file: str | None = None
    lane_names: list[str] | None = None

    def __post_init__(self) -> None:
        self.lanes = [np.asarray(ln, dtype=np.float64).reshape(-1, 2) for ln in self.lanes]


@dataclass
class LaneSet:
    root: Path  # folder the record paths are relative to
    records: list[LaneRecord]
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    classes: list[str] = field(default_factory=lambda: ["lane"])
    # Labelled entries the reader dropped, (cause, file, reason); each is in ``problems`` too.
    # Training counts them with the records it refuses (:func:`trainable`).
    skipped: list[tuple[str, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)


def lane_problems(record: LaneRecord) -> list[str]:
    """What ``data check`` reports for one image's lanes (empty when fine)."""
    out = []
    names = record.lane_names or [f"lane {k}" for k in range(len(record.lanes))]
    for lane, name in zip(record.lanes, names):
        if len(lane) < 2:
            out.append(f"{name} has {len(lane)} point(s), fewer than 2")
            continue
        if not np.isfinite(lane).all():
            out.append(f"{name} has non-finite coordinates")
            continue
        x, y = lane[:, 0], lane[:, 1]
        if record.width and record.height:
            bad = (x < 0) | (x >= record.width) | (y < 0) | (y >= record.height)
            if bad.any():
                out.append(
                    f"{name}: {int(bad.sum())} point(s) outside the "
                    f"{record.width}x{record.height} image"
                )
        dy = np.diff(y)
        if not ((dy >= 0).all() or (dy <= 0).all()):
            out.append(f"{name}: points are not sorted by y")
    if record.h_samples is not None:
        hs = np.asarray(record.h_samples, float)
        if len(hs) > 1 and not (np.diff(hs) > 0).all():
            out.append("h_samples are not strictly increasing")
    return out


# A point further than this share of the image beyond its border is no annotation slip (CULane
# extends lanes a little past the frame): the labels were made for another image size, e.g. a
# 1280x720 label file over 640x360 frames.
FAR_OUTSIDE = 0.5


def unusable(record: LaneRecord) -> tuple[str, str] | None:
    """``(cause, reason)`` when a record's lanes would train wrong targets — non-finite points
    (they poison the targets and the metrics' spline fit), points far outside the image (labels
    for another size: the lanes would silently vanish from the targets) — else None."""
    w, h = record.width, record.height
    names = record.lane_names or [f"lane {k}" for k in range(len(record.lanes))]
    for lane, name in zip(record.lanes, names):
        if not np.isfinite(lane).all():
            return "label(s) with non-finite points", f"{name} has non-finite coordinates"
        if not (w and h and len(lane)):
            continue
        x, y = lane[:, 0], lane[:, 1]
        lo, hi = -FAR_OUTSIDE, 1 + FAR_OUTSIDE
        far = (x < lo * w) | (x > hi * w) | (y < lo * h) | (y > hi * h)
        if far.any():
            return "label(s) far outside the image", (
                f"{name}: {int(far.sum())} point(s) far outside the {w}x{h} image "
                "(labels made for another image size?)"
            )
    return None


def trainable(ds: LaneSet, strict: bool = False, what: str = "labelled images") -> LaneSet:
    """``ds`` without the records :func:`unusable` refuses, and one warning that counts every
    labelled image lost — those and the entries the reader skipped (missing images, bad label
    lines) — by cause, with examples: "skipped 2 of 8 labelled images: 1 missing image(s), …".
    ``strict``: the first refused record is a DataError naming its file."""
    kept, skipped = [], list(ds.skipped)
    for rec in ds.records:
        bad = unusable(rec)
        if bad is None:
            kept.append(rec)
            continue
        file = rec.label_file or rec.file
        if strict:
            raise DataError(f"{file}: {bad[1]}")
        skipped.append((bad[0], file, bad[1]))
    if skipped:
        causes = ", ".join(f"{n} {cause}" for cause, n in Counter(c for c, _, _ in skipped).items())
        warn_skipped(
            [(file, reason) for _, file, reason in skipped],
            f"of {len(kept) + len(skipped)} {what}: {causes}",
        )
    return replace(ds, records=kept, skipped=skipped)


# --------------------------------------------------------------------------- augmentation
def _affine(
    image: np.ndarray, lanes: list[np.ndarray], rng: np.random.Generator, aug: dict
) -> tuple[np.ndarray, list[np.ndarray]]:
    h, w = image.shape[:2]
    if rng.random() < aug.get("hflip", 0.0):
        image = image[:, ::-1].copy()
        # Mirrored x; slots are assigned from positions afterwards, so the lane order follows.
        lanes = [np.stack([w - ln[:, 0], ln[:, 1]], -1) for ln in lanes]
    angle = rng.uniform(-1, 1) * aug.get("rotate", 0.0)
    shift = aug.get("shift", 0.0)
    tx, ty = rng.uniform(-1, 1) * shift * w, rng.uniform(-1, 1) * shift * h
    if angle or tx or ty:
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        m[:, 2] += (tx, ty)
        image = cv2.warpAffine(
            image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
        lanes = [ln @ m[:, :2].T + m[:, 2] for ln in lanes]
    return image, lanes


def _photometric(image: np.ndarray, rng: np.random.Generator, aug: dict) -> np.ndarray:
    p = aug.get("photometric", 0.0)
    if p <= 0:
        return image
    img = image.astype(np.float32)
    if rng.random() < p:  # brightness
        img *= rng.uniform(1 - aug.get("brightness", 0.3), 1 + aug.get("brightness", 0.3))
    if rng.random() < p:  # contrast around the mean grey
        c = rng.uniform(1 - aug.get("contrast", 0.3), 1 + aug.get("contrast", 0.3))
        img = (img - img.mean()) * c + img.mean()
    if rng.random() < p:  # saturation
        s = rng.uniform(1 - aug.get("saturation", 0.3), 1 + aug.get("saturation", 0.3))
        grey = img.mean(-1, keepdims=True)
        img = (img - grey) * s + grey
    return np.clip(img, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- dataset
class LaneDataset(Dataset):
    """Images + lanes → model inputs and UFLD-V2 targets.

    Each sample: ``image`` (3, H, W) normalised float; ``row_pos`` (R, L), ``col_pos`` (C, L)
    continuous cell positions (-1 absent; with ``extend_lanes`` the row labels of a lane that
    stops short are continued to the image bottom, as UFLD trains); ``seg`` (H/8, W/8) slot map
    when ``seg_stride``;
    ``input_lanes`` (as augmented, input pixels, for drawing); and for evaluation the untouched
    ``lanes`` (original pixels), ``size`` (H0, W0),
    ``h_samples``, ``file``.
    """

    def __init__(
        self,
        lanes: LaneSet,
        size: tuple[int, int],
        anchors: LaneAnchors,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        aug: dict[str, Any] | None = None,
        seg_stride: int | None = None,
        seed: int = 0,
        extend_lanes: bool = False,
        strict: bool = False,
    ) -> None:
        self.set = lanes
        self.size = size
        self.anchors = anchors
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.aug = dict(aug or {})
        self.seg_stride = seg_stride
        self.seed = seed
        self.extend_lanes = extend_lanes
        self._cache: dict[int, np.ndarray] = {}
        # An image that fails to decode (a truncated file) is warned about, counted and replaced
        # by the next readable one, as in the box and mask datasets (``first_readable``); these
        # live in each DataLoader worker separately. ``strict``: the DataError is raised.
        self.strict = strict
        self.num_skipped = 0
        self.bad_files: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.set.records)

    def load(self, index: int) -> np.ndarray:
        """The image resized to the model input (cached: lanes need no more pixels)."""
        img = self._cache.get(index)
        if img is None:
            rec = self.set.records[index]
            img = read_image(safe_join(self.set.root, rec.file))
            h, w = self.size
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            self._cache[index] = img
        return img

    def __getitem__(self, index: int) -> dict[str, Any]:
        return first_readable(self, index, self.set.records, self._sample, self.set.root)

    def _sample(self, index: int, rec: LaneRecord) -> dict[str, Any]:
        image = self.load(index)
        h, w = self.size
        sx, sy = w / max(rec.width, 1), h / max(rec.height, 1)
        lanes = [ln * (sx, sy) for ln in rec.lanes if len(ln) >= 2]
        if self.aug:
            # From torch's generator: seeded by the run, different every epoch and worker.
            rng = np.random.default_rng([self.seed, index, int(torch.randint(2**31, ()))])
            image, lanes = _affine(image, lanes, rng, self.aug)
            image = _photometric(image, rng, self.aug)
        slots = assign_slots(lanes, w, h, self.anchors.num_lanes)
        sample = encode_lanes(slots, (h, w), self.anchors, extend=self.extend_lanes)
        if self.seg_stride:
            sample["seg"] = lane_mask_target(slots, (h, w), self.seg_stride)
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255
        sample["image"] = (t - self.mean) / self.std
        sample["input_lanes"] = lanes  # as augmented, in input pixels (samples.png)
        sample["lanes"] = [ln.copy() for ln in rec.lanes]
        sample["size"] = (rec.height, rec.width)
        sample["h_samples"] = rec.h_samples
        sample["file"] = rec.file
        return sample


def collate_lanes(samples: list[dict]) -> dict[str, Any]:
    """Tensors stacked; per-image ground truth (lanes, size, h_samples, file) as lists."""
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out


# --------------------------------------------------------------------------- data check
@dataclass
class LaneCheckReport(ProblemList):
    """What ``visbricks data check`` prints for a lane dataset."""

    path: Path
    fmt: str
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # split → (images, lanes)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (split, file, reason)

    def format(self) -> str:
        lines = [f"{self.path} ({self.fmt} lanes)"]
        lines += [f"  {split}: {n} images, {k} lanes" for split, (n, k) in self.counts.items()]
        lines += self.problem_lines()
        return "\n".join(lines)


def check_lane_dataset(path: str | Path, strict: bool = False) -> LaneCheckReport:
    """Every split of a lane dataset: unreadable entries and missing images (from the reader),
    images that do not decode, lanes with fewer than 2 points, points outside the image, points
    not sorted by row, bad ``h_samples``; each named with the file that holds it (the label file
    when the format has one per image, as labelme). ``strict``: the first problem is a DataError
    naming the file."""
    from .formats import find_format

    path = Path(path)
    fmt = find_format(path, "lanes")
    report = LaneCheckReport(path, fmt.name)
    for split in fmt.splits(path):
        ds = fmt.read(path, split=split, strict=strict)
        name = split or "all"
        report.problems += [(name, f, r) for f, r in ds.problems]
        for rec in ds.records:
            # Every image decoded in full: a truncated file passes the reader's header read and
            # would only fail in training (where it is skipped).
            why = check_image(safe_join(ds.root, rec.file))
            found = [(rec.file, f"unreadable image ({why})")] if why else []
            file = rec.label_file or rec.file  # the file to edit: labelme's JSON, else the image
            found += [(file, reason) for reason in lane_problems(rec)]
            for at, reason in found:
                if strict:
                    raise DataError(f"{at}: {reason}")
                report.problems.append((name, at, reason))
        report.counts[name] = (len(ds), sum(len(r.lanes) for r in ds.records))
    return report


__all__ = [
    "LaneCheckReport",
    "LaneDataset",
    "LaneRecord",
    "LaneSet",
    "check_lane_dataset",
    "collate_lanes",
    "lane_problems",
    "trainable",
    "unusable",
]
