"""``visbricks data check``: read every split, decode every image, list every problem with its file.

Problems come from two places: the format readers (missing or escaping image paths, bad or
unknown-class objects, duplicates, boxes repaired by the shared policy: inverted boxes are
swapped, boxes outside the image clipped, zero-area ones dropped) and this module (images that
do not decode, images whose real size differs from the annotation, images in two splits,
duplicate boxes, tiny boxes (reported, kept), image files no annotation mentions).

Zero or negative box sizes are judged on the corners *as written*, before a format's coordinate
convention (VOC's 1-based inclusive corners) is applied. ``fix_dataset`` writes a cleaned copy in
the same format; the source is never modified.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from ..errors import ConfigError, DataError
from .formats import find_format
from .io import check_image, image_size, is_image_file, read_image
from .records import DetectionSet, ImageRecord
from .report import ProblemList

STATS_IMAGES = 500  # mean/std from at most this many images: a few hundred pin them to ~1e-3
TINY_BOX_PX = 2.0  # a box narrower or lower than this is reported (and kept): likely a slip
DUPLICATE_IOU = 0.95  # two boxes of one class overlapping this much are one object twice


@dataclass
class SplitStats:
    images: int
    boxes: int
    empty_images: int  # images with no objects (background-only samples)
    images_per_class: dict[str, int]
    boxes_per_class: dict[str, int]


@dataclass
class CheckReport(ProblemList):
    source: Path
    dataset_format: str
    classes: list[str]
    splits: dict[str, SplitStats] = field(default_factory=dict)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (split, file, reason)
    # Reported but not wrong (tiny boxes): listed, kept, and not counted against ``ok``.
    notes: list[tuple[str, str, str]] = field(default_factory=list)
    mean: tuple[float, ...] | None = None  # RGB on 0..1
    std: tuple[float, ...] | None = None
    stats_images: int = 0  # how many images mean/std were computed on
    stats_split: str = ""

    def format(self) -> str:
        """The human-readable report the CLI prints."""
        n = len(self.classes)
        lines = [f"{self.source}  ({self.dataset_format}, {n} class{'es' * (n != 1)})", ""]
        names = list(self.splits)
        lines.append(f"{'split':<10}{'images':>8}{'boxes':>8}{'empty':>8}")
        for name, s in self.splits.items():
            lines.append(f"{name:<10}{s.images:>8}{s.boxes:>8}{s.empty_images:>8}")
        width = max([len("class"), *(len(c) for c in self.classes)]) + 2
        lines += ["", f"{'class':<{width}}" + "".join(f"{s + ' img/box':>18}" for s in names)]
        for c in self.classes:
            cells = (
                f"{s.images_per_class[c]}/{s.boxes_per_class[c]}" for s in self.splits.values()
            )
            lines.append(f"{c:<{width}}" + "".join(f"{cell:>18}" for cell in cells))
        if self.mean is not None and self.std is not None:
            mean = ", ".join(f"{v:.4f}" for v in self.mean)
            std = ", ".join(f"{v:.4f}" for v in self.std)
            lines += [
                "",
                f"RGB mean/std on 0..1 ({self.stats_images} {self.stats_split} images): "
                f"mean [{mean}]  std [{std}]",
            ]
        lines.append("")
        if self.notes:
            lines.append(f"{len(self.notes)} note{'s' * (len(self.notes) != 1)} (kept):")
            lines += [f"  [{split}] {file}: {reason}" for split, file, reason in self.notes]
        lines += self.problem_lines()
        return "\n".join(lines)


def check_dataset(
    data_yaml_or_path: str | Path,
    *,
    strict: bool = False,
    stats_images: int = STATS_IMAGES,
    seed: int = 0,
    ignore_index: int | None = None,
) -> CheckReport:
    """Read every split of a data YAML (or annotation file, or dataset folder) and report on it.

    The format is auto-detected through the format registry. ``strict=True`` raises a
    DataError naming the file at the first problem instead. ``ignore_index`` (mask datasets
    only) is the label value that means unlabelled, e.g. CamVid's void = 11.
    """
    path = Path(data_yaml_or_path)
    kind = _data_kind(path)
    if ignore_index is not None and kind != "segmentation":
        raise ConfigError(f"{path}: ignore_index applies to mask datasets only")
    if kind in KIND_CHECKS:
        return KIND_CHECKS[kind](path, strict, ignore_index)  # type: ignore[return-value]
    report, sets = _read_all(path, strict)
    for name, ds in sets.items():
        for record in ds.records:
            for reason in _duplicate_boxes(record, ds.classes):
                _problem(report, strict, name, record.file, reason)
            report.notes += [(name, record.file, r) for r in _tiny_boxes(record, ds.classes)]
    _scan_images(report, sets, strict, stats_images, seed)
    _unannotated(report, sets, strict)
    return report


def _check_lanes(path: Path, strict: bool, ignore_index: int | None) -> Any:
    from .lanes import check_lane_dataset  # point counts, image bounds, row order

    return check_lane_dataset(path, strict=strict)


def _check_masks(path: Path, strict: bool, ignore_index: int | None) -> Any:
    from .segmentation import check_mask_dataset  # mask sizes, label ranges, pixel shares

    return check_mask_dataset(path, strict=strict, ignore_index=ignore_index)


def _check_labels(path: Path, strict: bool, ignore_index: int | None) -> Any:
    from .classification_check import check_classification_dataset  # per class, decode, leaks

    return check_classification_dataset(path, strict=strict)


# The checks of each kind whose records are not boxes, by the kind its format declares
# (``DatasetFormat.kind``); box datasets get check_dataset's own. A new kind adds one entry.
KIND_CHECKS: dict[str, Callable[[Path, bool, int | None], Any]] = {
    "classification": _check_labels,
    "lanes": _check_lanes,
    "segmentation": _check_masks,
}


def _data_kind(path: Path) -> str | None:
    """The kind of the dataset at ``path``: ``lanes`` when a lane format reads it (a lane folder
    can also pass for a folder of images), else the kind of the format detected first (a COCO
    file with polygons is a box dataset: its box format comes first); None when none reads it
    (the box check then names what each format looked for)."""
    try:
        find_format(path, "lanes")
        return "lanes"
    except DataError:
        pass
    try:
        return find_format(path).kind
    except (DataError, ConfigError):
        return None


def fix_dataset(data_yaml_or_path: str | Path, out_dir: str | Path) -> tuple[CheckReport, Path]:
    """Check the dataset, then write a cleaned copy to ``out_dir`` in the same format.

    The copy holds the boxes as the readers repaired them (clipped, swapped; zero-area and
    unknown-class objects dropped), without duplicate boxes and without unreadable images;
    tiny boxes are kept. Returns the report on the source and the copy's data YAML.
    """
    src, out = Path(data_yaml_or_path), Path(out_dir)
    root = src.parent if src.is_file() else src
    if out.resolve() == root.resolve() or out.resolve().is_relative_to(root.resolve()):
        raise ConfigError(f"--fix {out}: must be outside the dataset {root} (it is never edited)")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--fix {out}: folder exists and is not empty; choose a new folder")
    report = check_dataset(src)
    fmt = find_format(src, "detection")
    unreadable = {(s, f) for s, f, r in report.problems if r.startswith("unreadable image")}
    yaml_path = out / "data.yaml"
    for split in fmt.splits(src):
        name = split or "all"
        ds = fmt.read(src, split=split)
        records = [
            _without_duplicates(r) for r in ds.records if (name, r.file) not in unreadable
        ]
        clean = DetectionSet(root=ds.root, classes=ds.classes, records=records)
        yaml_path = fmt.write(clean, out, split=split or "train")
    return report, yaml_path


def _read_all(path: Path, strict: bool) -> tuple[CheckReport, dict[str, DetectionSet]]:
    fmt = find_format(path, "detection")
    report: CheckReport | None = None
    seen: dict[Path, str] = {}
    sets: dict[str, DetectionSet] = {}
    for split in fmt.splits(path):
        name = split or "all"
        ds = fmt.read(path, split=split, strict=strict)
        if report is None:
            report = CheckReport(source=path, dataset_format=fmt.name, classes=list(ds.classes))
        report.problems += [(name, f, reason) for f, reason in ds.problems]
        for record in ds.records:
            image = (ds.root / record.file).resolve()
            if image in seen:
                _problem(
                    report, strict, name, record.file, f"duplicate: also in split {seen[image]!r}"
                )
            seen[image] = name
        report.splits[name] = _split_stats(ds)
        sets[name] = ds
    assert report is not None  # splits() always yields at least one split
    return report, sets


def _duplicates(record: ImageRecord) -> list[tuple[int, int]]:
    """(first, later) index pairs of same-class boxes overlapping at IoU >= DUPLICATE_IOU."""
    if len(record.boxes) < 2:
        return []
    iou = box_iou(torch.from_numpy(record.boxes), torch.from_numpy(record.boxes)).numpy()
    same = record.labels[:, None] == record.labels[None, :]
    pairs = np.argwhere(np.triu((iou >= DUPLICATE_IOU) & same, k=1))
    return [(int(i), int(j)) for i, j in pairs]


def _without_duplicates(record: ImageRecord) -> ImageRecord:
    drop = {j for _, j in _duplicates(record)}
    keep = np.array([i not in drop for i in range(len(record.boxes))], dtype=bool)
    return ImageRecord(
        file=record.file,
        width=record.width,
        height=record.height,
        boxes=record.boxes[keep],
        labels=record.labels[keep],
        difficult=record.difficult[keep],
        iscrowd=record.iscrowd[keep],
        segmentations=[s for s, k in zip(record.segmentations, keep) if k],
        mask_file=record.mask_file,
        image_id=record.image_id,
    )


def _duplicate_boxes(record: ImageRecord, classes: list[str]) -> list[str]:
    reasons = []
    for i, j in _duplicates(record):
        box = ", ".join(f"{v:g}" for v in record.boxes[j])
        reasons.append(
            f"duplicate box: box {j} ({classes[record.labels[j]]} [{box}]) repeats box {i}"
        )
    return reasons


def _tiny_boxes(record: ImageRecord, classes: list[str]) -> list[str]:
    reasons = []
    sizes = record.boxes[:, 2:] - record.boxes[:, :2]
    for i in np.flatnonzero((sizes < TINY_BOX_PX).any(1)):
        box = ", ".join(f"{v:g}" for v in record.boxes[i])
        reasons.append(
            f"tiny box: box {i} ({classes[record.labels[i]]} [{box}]) is "
            f"{sizes[i, 0]:g}x{sizes[i, 1]:g} px (< {TINY_BOX_PX:g}); kept"
        )
    return reasons


def _unannotated(report: CheckReport, sets: dict[str, DetectionSet], strict: bool) -> None:
    """Image files in the folders the annotations point into that no annotation mentions."""
    listed = {(ds.root / r.file).resolve() for ds in sets.values() for r in ds.records}
    folders = {p.parent for p in listed}
    first = next(iter(sets.values()))
    # An annotated image the reader skipped (unreadable, bad annotation) is already reported
    # under its annotation file, which names it: not an image without annotations.
    mentioned = " ".join(f"{file} {reason}" for _, file, reason in report.problems)
    for folder in sorted(folders):
        for image in sorted(p for p in folder.iterdir() if is_image_file(p)):
            if image.resolve() not in listed and image.name not in mentioned:
                try:
                    rel = image.resolve().relative_to(first.root.resolve()).as_posix()
                except ValueError:
                    rel = str(image)
                _problem(report, strict, "-", rel, "image without annotations (not in any split)")


def _scan_images(
    report: CheckReport, sets: dict[str, DetectionSet], strict: bool, stats_images: int, seed: int
) -> None:
    """Decode every image (a header can be fine over truncated data) and compare its size with
    the annotation's; the pixels of a sample of the train split give the per-pixel mean/std."""
    stats_split = "train" if "train" in sets else next(iter(sets))
    sample = _sample(len(sets[stats_split]), stats_images, seed)
    pixel_sum, pixel_sq, pixels, used = np.zeros(3), np.zeros(3), 0, 0
    for name, ds in sets.items():
        for i, record in enumerate(ds.records):
            image = ds.root / record.file
            if name == stats_split and i in sample:
                try:
                    rgb = read_image(image)
                except DataError as e:
                    reason = check_image(image) or str(e)  # check_image's has no path prefix
                    _problem(report, strict, name, record.file, f"unreadable image: {reason}")
                    continue
                size = (rgb.shape[1], rgb.shape[0])
                x = rgb.reshape(-1, 3).astype(np.float64) / 255.0
                pixel_sum += x.sum(0)
                pixel_sq += (x * x).sum(0)
                pixels += len(x)
                used += 1
            else:
                reason = check_image(image)
                if reason is not None:
                    _problem(report, strict, name, record.file, f"unreadable image: {reason}")
                    continue
                size = image_size(image)
            if size != (record.width, record.height):
                _problem(
                    report,
                    strict,
                    name,
                    record.file,
                    f"annotation says {record.width}x{record.height} but the image is "
                    f"{size[0]}x{size[1]}; boxes may be misplaced",
                )
    if pixels:
        mean = pixel_sum / pixels
        report.mean = tuple(float(v) for v in mean)
        report.std = tuple(float(v) for v in np.sqrt(np.maximum(pixel_sq / pixels - mean**2, 0)))
        report.stats_images = used
        report.stats_split = stats_split


def _problem(report: CheckReport, strict: bool, split: str, file: str, reason: str) -> None:
    if strict:
        raise DataError(f"{file}: {reason}")
    report.problems.append((split, file, reason))


def _sample(n: int, k: int, seed: int) -> set[int]:
    return set(range(n)) if n <= k else set(random.Random(seed).sample(range(n), k))


def _split_stats(ds: DetectionSet) -> SplitStats:
    boxes = dict.fromkeys(ds.classes, 0)
    images = dict.fromkeys(ds.classes, 0)
    for record in ds.records:
        present = np.bincount(record.labels, minlength=len(ds.classes))
        for c, count in zip(ds.classes, present):
            boxes[c] += int(count)
            images[c] += int(count > 0)
    return SplitStats(
        images=len(ds.records),
        boxes=sum(boxes.values()),
        empty_images=sum(len(r.labels) == 0 for r in ds.records),
        images_per_class=images,
        boxes_per_class=boxes,
    )
