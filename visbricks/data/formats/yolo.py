"""YOLO txt (Ultralytics layout): ``images/<split>/x.jpg`` + ``labels/<split>/x.txt``.

Each label line is ``class cx cy w h`` normalized to 0..1; an image without a label file has
no objects. Ultralytics segmentation lines (``class x1 y1 x2 y2 ...``) are read too: the box is
the polygon's extent and the polygon is kept, in pixels, as a COCO-style segmentation.

What YOLO cannot carry, and is therefore lost when writing it: VOC ``difficult``, COCO
``iscrowd``, masks, and image ids. Class names live in ``classes.txt`` or the data YAML.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from ...registry import DATASETS
from ..io import image_size, is_image_file
from ..records import DetectionSet, ImageRecord
from ._common import ProblemLog, place_image, read_class_file, repair_boxes, unique_names
from .base import SPLITS, is_yaml, read_yaml_mapping
from .datayaml import DataSpec, DetectionFormat

# 8 decimals of a normalized coordinate are < 1e-3 px for images up to 200,000 px wide.
_DECIMALS = 8
# Normalized coordinates this far above 1 are pixel coordinates written by mistake.
_NOT_NORMALIZED = 1.5


def labels_dir_for(images_dir: Path) -> Path:
    """Ultralytics' rule: the last ``images`` path component becomes ``labels``."""
    parts = list(images_dir.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    return images_dir  # no "images" folder in the path: labels sit beside the images


def read_yolo(
    root: str | Path,
    *,
    image_dirs: Sequence[str | Path] | None = None,
    classes: list[str] | None = None,
    strict: bool = False,
) -> DetectionSet:
    """Read the images under ``image_dirs`` (relative to root; default ``images/``, recursive).

    Classes come from ``classes`` or ``root/classes.txt``; YOLO labels hold only ids.
    """
    root = Path(root).absolute()  # split folders may be given absolute: paths must compare
    if not root.is_dir():
        raise DataError(f"YOLO dataset root not found: {root}")
    classes = _class_list(root, classes)
    pairs: list[tuple[Path, Path]] = []
    for folder in image_dirs or ["images"]:
        images_dir = root / folder  # an absolute ``folder`` replaces root
        labels_dir = _check_dirs(root, images_dir)
        for image in sorted(p for p in images_dir.rglob("*") if is_image_file(p)):
            pairs.append((image, labels_dir / image.relative_to(images_dir).with_suffix(".txt")))
    return _read_pairs(root, pairs, classes, strict)


def read_yolo_files(
    root: str | Path,
    images: Sequence[Path],
    *,
    classes: list[str] | None = None,
    strict: bool = False,
) -> DetectionSet:
    """Read the given image files; each one's labels are found by Ultralytics' rule (the last
    ``images`` folder of its path becomes ``labels``, the extension ``.txt``)."""
    root = Path(root).absolute()
    classes = _class_list(root, classes)
    pairs = []
    for image in images:
        image = Path(image).absolute()
        if not image.resolve().is_relative_to(root.resolve()):
            raise DataError(f"YOLO image {image} is outside the dataset root {root}")
        pairs.append((image, labels_dir_for(image.parent) / f"{image.stem}.txt"))
    return _read_pairs(root, pairs, classes, strict)


def ultralytics_split(root: Path, value: str | Sequence[str], source: Path) -> list[Path]:
    """The image files of an Ultralytics split value, resolved exactly as Ultralytics does.

    ``value`` is a folder (every image below it), a ``.txt`` list of image paths (``./x``
    relative to the list's folder, others absolute or relative to the working directory), or a
    list of those; each is relative to ``root`` (the YAML's ``path``), and ``../x`` that does
    not exist there is tried as ``x``. ``source`` (the YAML) is named in errors.
    """
    files: list[Path] = []
    for entry in [value] if isinstance(value, str) else list(value):
        p = Path(entry).expanduser()
        if not p.is_absolute():
            p = root / entry
            if not p.exists() and entry.startswith("../"):
                p = root / entry[3:]
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if is_image_file(f))
        elif p.is_file():
            try:
                lines = p.read_text(encoding="utf-8").split()
            except (OSError, UnicodeDecodeError) as e:
                raise DataError(f"cannot read image list {p}: {e}") from None
            for line in lines:
                if line.startswith("./"):
                    files.append(p.parent / line[2:])
                elif Path(line).is_absolute() or Path(line).exists():
                    files.append(Path(line))
                else:  # Ultralytics would look in the working directory; the list's folder is
                    files.append(p.parent / line)  # where such files are everywhere else
        else:
            raise DataError(f"{source}: split entry {entry!r} not found: {p}")
    return files


def _class_list(root: Path, classes: list[str] | None) -> list[str]:
    if classes is not None:
        return list(classes)
    if not (root / "classes.txt").is_file():
        raise DataError(
            f"YOLO dataset {root} has no class names: add {root / 'classes.txt'} "
            "(one name per line) or 'names:' in a data YAML"
        )
    return read_class_file(root / "classes.txt")


def _read_pairs(
    root: Path, pairs: list[tuple[Path, Path]], classes: list[str], strict: bool
) -> DetectionSet:
    log = ProblemLog(strict)
    records: list[ImageRecord] = []
    seen_labels: dict[Path, str] = {}
    for image, label_file in pairs:
        rel = image.relative_to(root).as_posix()
        if not image.is_file():
            log.add(rel, "listed image not found; skipped")
            continue
        if label_file in seen_labels:
            log.add(
                rel,
                f"duplicate image entry: {seen_labels[label_file]} has the same "
                f"label file {label_file.relative_to(root)}; skipped",
            )
            continue
        seen_labels[label_file] = rel
        record = _read_image_labels(image, rel, label_file, root, len(classes), log)
        if record is not None:
            record.image_id = len(records)
            records.append(record)
    return DetectionSet(root=root, classes=list(classes), records=records, problems=log.items)


def _check_dirs(root: Path, images_dir: Path) -> Path:
    if not images_dir.is_dir():
        raise DataError(f"YOLO image folder not found: {images_dir}")
    if not images_dir.resolve().is_relative_to(root.resolve()):
        raise DataError(f"YOLO image folder {images_dir} is outside the dataset root {root}")
    labels_dir = labels_dir_for(images_dir)
    if not labels_dir.is_dir():
        raise DataError(f"YOLO label folder not found: {labels_dir} (for images in {images_dir})")
    return labels_dir


def _read_image_labels(
    image: Path, rel: str, label_file: Path, root: Path, num_classes: int, log: ProblemLog
) -> ImageRecord | None:
    try:
        width, height = image_size(image)  # labels are normalized: the size is needed
    except DataError as e:
        log.add(rel, f"unreadable image: {e}; skipped")
        return None
    boxes, labels, segmentations, where = [], [], [], []
    label_rel = label_file.relative_to(root).as_posix()
    try:
        lines = label_file.read_text(encoding="utf-8").splitlines() if label_file.is_file() else []
    except (OSError, UnicodeDecodeError) as e:
        log.add(label_rel, f"unreadable label file: {e}; image skipped")
        return None
    scale = np.array([width, height], dtype=np.float64)
    for n, line in enumerate(lines, 1):
        tokens = line.split()
        if not tokens:
            continue
        parsed = _parse_line(tokens, num_classes)
        if isinstance(parsed, str):
            log.add(f"{label_rel}:{n}", f"{parsed}; dropped")
            continue
        label, box, polygon = parsed
        boxes.append(box * np.tile(scale, 2))
        labels.append(label)
        where.append(f"line {n} (as xyxy pixels)")
        segmentations.append(None if polygon is None else [(polygon * scale).ravel().tolist()])
    repaired, keep = repair_boxes(
        np.array(boxes).reshape(-1, 4), width, height, label_rel, log, names=where
    )
    return ImageRecord(
        file=rel,
        width=width,
        height=height,
        boxes=repaired[keep],
        labels=np.array(labels, dtype=np.int64)[keep],
        segmentations=[s for s, k in zip(segmentations, keep) if k],
    )


def _parse_line(
    tokens: list[str], num_classes: int
) -> tuple[int, np.ndarray, np.ndarray | None] | str:
    """(class, normalized XYXY, normalized polygon or None), or the reason the line is bad."""
    if len(tokens) != 5 and (len(tokens) < 7 or len(tokens) % 2 == 0):
        return "expected 'class cx cy w h' or 'class x1 y1 x2 y2 x3 y3 ...'"
    try:
        cls = float(tokens[0])
        values = np.array([float(t) for t in tokens[1:]], dtype=np.float64)
    except ValueError:
        return "non-numeric value"
    if not cls.is_integer() or not 0 <= cls < num_classes:
        return f"unknown class id {tokens[0]} (the class list has {num_classes})"
    if np.abs(values).max(initial=0) > _NOT_NORMALIZED:
        return "coordinates are not normalized to 0..1 (pixel values?)"
    if len(tokens) == 5:
        cx, cy, w, h = values
        return int(cls), np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]), None
    polygon = values.reshape(-1, 2)
    return int(cls), np.concatenate([polygon.min(0), polygon.max(0)]), polygon


def write_yolo(
    ds: DetectionSet, out_dir: str | Path, split: str = "train", copy_images: bool = True
) -> dict[str, Any]:
    """Write ``images/<split>/`` + ``labels/<split>/`` (an empty txt for an image without
    objects, so "no objects" and "not labelled" stay distinguishable); returns data-YAML keys."""
    out = Path(out_dir)
    labels_dir = out / "labels" / split
    labels_dir.mkdir(parents=True, exist_ok=True)
    for record, name in zip(ds.records, unique_names([r.file for r in ds.records])):
        place_image(ds.root / record.file, out / "images" / split / name, copy_images)
        size = np.array([record.width, record.height] * 2, dtype=np.float64)
        lines = []
        for box, label in zip(record.boxes.astype(np.float64) / size, record.labels):
            x1, y1, x2, y2 = box
            values = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
            lines.append(f"{int(label)} " + " ".join(f"{v:.{_DECIMALS}f}" for v in values))
        text = "".join(f"{line}\n" for line in lines)
        (labels_dir / f"{Path(name).stem}.txt").write_text(text, encoding="utf-8")
    return {split: f"images/{split}"}


@DATASETS.register("yolo")
class YOLOFormat(DetectionFormat):
    """YOLO txt in the Ultralytics layout; a written ``data.yaml`` is one ``yolo train`` takes."""

    looks_for = "images/ + labels/ folders, or a data YAML with Ultralytics' names/nc/path"
    priority = 30
    split_help = "an image folder, a .txt list of images, or a list of those"

    @classmethod
    def sniff(cls, path: Path) -> bool:
        if is_yaml(path):
            raw = read_yaml_mapping(path)
            return "format" not in raw and any(k in raw for k in ("names", "nc", "path"))
        return (path / "images").is_dir() and (path / "labels").is_dir()

    def read_root(
        self, root: Path, split: str | None, classes: list[str] | None, strict: bool
    ) -> DetectionSet:
        return read_yolo(root, image_dirs=[f"images/{split}"] if split else None,
                         classes=classes, strict=strict)

    def root_splits(self, root: Path) -> list[str | None]:
        found: list[str | None] = [s for s in SPLITS if (root / "images" / s).is_dir()]
        return found or [None]

    def write_split(
        self, ds: DetectionSet, out: Path, split: str, copy_images: bool
    ) -> dict[str, Any]:
        return write_yolo(ds, out, split=split, copy_images=copy_images)

    def read_source(self, spec: DataSpec, value: Any, strict: bool) -> DetectionSet:
        files = ultralytics_split(spec.root, value if value is not None else "images", spec.source)
        return read_yolo_files(spec.root, files, classes=spec.classes, strict=strict)

    def split_value_ok(self, value: Any) -> bool:
        return value is None or isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        )

    def default_splits(self, spec: DataSpec) -> dict[str, Any]:
        found = {s: f"images/{s}" for s in SPLITS if (spec.root / "images" / s).is_dir()}
        return found or {"train": "images"}

    def yaml_doc(self, out: Path, classes: list[str], splits: dict[str, Any]) -> dict[str, Any]:
        # No ``path``: Ultralytics then takes the YAML's own folder as the root (a relative
        # ``path`` would be resolved against its datasets folder instead, an absolute one would
        # break when the folder moves), and so do we. ``names`` as {id: name}, as its files do.
        return {"format": "yolo", **splits, "nc": len(classes), "names": dict(enumerate(classes))}
