"""``visbricks data check``: read every split, decode every image, list every problem with its file.

Problems come from two places: the format readers (missing or escaping image paths, bad or
unknown-class objects, duplicates, boxes repaired by the shared policy: inverted boxes are
swapped, boxes outside the image clipped, zero-area ones dropped) and this module (images that
do not decode, images whose real size differs from the annotation, images in two splits).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from .formats import dataset_splits, detect_format, load_data_yaml, read_dataset
from .io import check_image, image_size, read_image
from .records import DetectionSet

STATS_IMAGES = 500  # mean/std from at most this many images: a few hundred pin them to ~1e-3


@dataclass
class SplitStats:
    images: int
    boxes: int
    empty_images: int  # images with no objects (background-only samples)
    images_per_class: dict[str, int]
    boxes_per_class: dict[str, int]


@dataclass
class CheckReport:
    source: Path
    dataset_format: str
    classes: list[str]
    splits: dict[str, SplitStats] = field(default_factory=dict)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (split, file, reason)
    mean: tuple[float, ...] | None = None  # RGB on 0..1
    std: tuple[float, ...] | None = None
    stats_images: int = 0  # how many images mean/std were computed on
    stats_split: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

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
        if self.ok:
            lines.append("no problems found")
        else:
            lines.append(f"{len(self.problems)} problem{'s' * (len(self.problems) != 1)}:")
            lines += [f"  [{split}] {file}: {reason}" for split, file, reason in self.problems]
        return "\n".join(lines)


def check_dataset(
    data_yaml_or_path: str | Path,
    *,
    strict: bool = False,
    stats_images: int = STATS_IMAGES,
    seed: int = 0,
) -> CheckReport:
    """Read every split of a data YAML (or COCO JSON, VOC or YOLO root) and report on it.

    ``strict=True`` raises a DataError naming the file at the first problem instead.
    """
    path = Path(data_yaml_or_path)
    kind = detect_format(path)
    if kind == "yaml":
        kind = load_data_yaml(path / "data.yaml" if path.is_dir() else path).format
    report: CheckReport | None = None
    seen: dict[Path, str] = {}
    sets: dict[str, DetectionSet] = {}
    for split in dataset_splits(path):
        name = split or "all"
        ds = read_dataset(path, split=split, strict=strict)
        if report is None:
            report = CheckReport(source=path, dataset_format=kind, classes=list(ds.classes))
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
    assert report is not None  # dataset_splits always yields at least one split

    _scan_images(report, sets, strict, stats_images, seed)
    return report


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
