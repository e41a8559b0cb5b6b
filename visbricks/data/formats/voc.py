"""Pascal VOC XML, including labelImg's and labelme's variants of it.

VOC corners are 1-based pixel indices (``xmin=1`` is the first pixel column, ``xmax`` the last
one covered). Like torchvision and mmdetection we read them as the continuous box
``[xmin - 1, ymin - 1, xmax, ymax]`` and write the inverse, so read → write → read is exact.

Layout: ``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt`` and, when the
records carry masks, ``SegmentationObject/`` + ``SegmentationClass/`` palette PNGs. The
annotation and image folder names are configurable; the lowercase ``annotations/`` +
``images/`` that labelImg users tend to have is found automatically.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...errors import DataError
from ...registry import DATASETS
from ..io import IMAGE_EXTENSIONS, exif_transform_boxes, image_geometry, safe_join
from ..records import DetectionSet, ImageRecord
from ._common import (
    ProblemLog,
    drop_markers,
    place_image,
    read_class_file,
    repair_boxes,
    unique_names,
)
from .base import SPLITS
from .coco import rasterize
from .datayaml import DataSpec, DetectionFormat

ANNOTATION_DIRS = ("Annotations", "annotations")
IMAGE_DIRS = ("JPEGImages", "images")
CLASS_FILES = ("classes.txt", "class_names.txt")
_SEG_CLASS, _SEG_OBJECT = "SegmentationClass", "SegmentationObject"


@dataclass
class _RawObject:
    number: int  # position among the file's <object>s, counted from 0, for problem reports
    name: str
    corners: tuple[float, float, float, float]  # as written: 1-based xmin, ymin, xmax, ymax
    difficult: bool


@dataclass
class _RawAnnotation:
    xml: str  # relative to the dataset root, for problem reports
    filename: str | None
    width: int
    height: int
    objects: list[_RawObject] = field(default_factory=list)


def find_folder(root: Path, given: str | None, defaults: tuple[str, ...], what: str) -> Path:
    """``root/given``, or the first existing default; DataError names every path tried."""
    tried = [given] if given else list(defaults)
    for name in tried:
        if (root / name).is_dir():
            return root / name
    paths = " or ".join(str(root / n) for n in tried)
    raise DataError(f"VOC {what} folder not found: {paths}")


def read_voc(
    root: str | Path,
    *,
    image_set: str | Path | None = None,
    classes: list[str] | None = None,
    annotations: str | None = None,
    images: str | None = None,
    strict: bool = False,
) -> DetectionSet:
    """Read a VOC dataset; ``image_set`` (a txt of ids, relative to root) selects a split.

    Classes, when not given, come from ``classes.txt``/``class_names.txt`` in the root, else
    from the sorted object names of *every* XML in the folder (not just this split's), so each
    split of one dataset gets the same class ids.
    """
    # Resolved: image-set entries come back resolved from safe_join and must compare with it
    # (a relative data YAML path gave relative_to errors).
    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"VOC dataset root not found: {root}")
    ann_dir = find_folder(root, annotations, ANNOTATION_DIRS, "annotation")
    img_dir = find_folder(root, images, IMAGE_DIRS, "image")
    log = ProblemLog(strict)

    all_xml = sorted(ann_dir.glob("*.xml"))
    if image_set is None:
        xml_files = all_xml
    else:
        xml_files = _xml_from_image_set(root, Path(image_set), ann_dir, log)

    parsed = {p: _parse_xml(p, root, log) for p in xml_files}
    if classes is None:
        classes = _discover_classes(root, all_xml, parsed)

    index = {name: i for i, name in enumerate(classes)}
    records: list[ImageRecord] = []
    seen_images: dict[str, str] = {}
    for xml_path in xml_files:
        raw = parsed[xml_path]
        if raw is None:
            continue
        record = _to_record(raw, xml_path, root, img_dir, index, log)
        if record is None:
            continue
        if record.file in seen_images:
            log.add(
                raw.xml,
                f"duplicate entry: image {record.file} is already annotated by "
                f"{seen_images[record.file]}; skipped",
            )
            continue
        seen_images[record.file] = raw.xml
        record.image_id = len(records)
        records.append(record)
    return DetectionSet(root=root, classes=list(classes), records=records, problems=log.items)


def _xml_from_image_set(root: Path, image_set: Path, ann_dir: Path, log: ProblemLog) -> list[Path]:
    path = image_set if image_set.is_absolute() else root / image_set
    if not path.is_file():
        raise DataError(f"VOC image set file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read VOC image set {path}: {e}") from None
    files: list[Path] = []
    seen: set[str] = set()
    for n, line in enumerate(lines, 1):
        # Class-specific sets (aeroplane_train.txt) carry a second column: the id comes first.
        parts = line.split()
        if not parts:
            continue
        image_id = parts[0]
        where = f"{path.relative_to(root) if path.is_relative_to(root) else path}:{n}"
        if image_id in seen:
            log.add(where, f"duplicate entry {image_id!r}; skipped")
            continue
        seen.add(image_id)
        try:
            xml = safe_join(ann_dir, image_id + ".xml")
        except DataError as e:
            log.add(where, str(e))
            continue
        if not xml.is_file():
            log.add(where, f"{image_id!r} is listed but {xml.relative_to(root)} does not exist")
            continue
        files.append(xml)
    return files


def _parse_xml(path: Path, root: Path, log: ProblemLog) -> _RawAnnotation | None:
    rel = path.relative_to(root).as_posix()
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as e:
        log.add(rel, f"cannot parse XML: {e}; skipped")
        return None
    node = tree.getroot()
    raw = _RawAnnotation(
        xml=rel,
        filename=_text(node, "filename"),
        width=_int_or_zero(_text(node, "size/width")),
        height=_int_or_zero(_text(node, "size/height")),
    )
    for i, obj in enumerate(node.iter("object")):
        name = _text(obj, "name")
        try:
            xmin, ymin, xmax, ymax = (float(_text(obj, f"bndbox/{k}") or "") for k in _CORNERS)
        except ValueError:
            log.add(rel, f"object {i} ({name}) has a missing or non-numeric <bndbox>; skipped")
            continue
        if not name:
            log.add(rel, f"object {i} has no <name>; skipped")
            continue
        difficult = (_text(obj, "difficult") or "0").lower() not in ("0", "false")
        raw.objects.append(_RawObject(i, name, (xmin, ymin, xmax, ymax), difficult))
    return raw


_CORNERS = ("xmin", "ymin", "xmax", "ymax")
_TO_XYXY = (-1.0, -1.0, 0.0, 0.0)  # 1-based pixel corners -> continuous XYXY


def _text(node: ET.Element, path: str) -> str | None:
    found = node.find(path)
    if found is None or found.text is None:
        return None
    return found.text.strip() or None


def _int_or_zero(text: str | None) -> int:
    try:
        return int(float(text)) if text else 0
    except ValueError:
        return 0


def _discover_classes(
    root: Path, all_xml: list[Path], parsed: dict[Path, _RawAnnotation | None]
) -> list[str]:
    for name in CLASS_FILES:
        if (root / name).is_file():
            return read_class_file(root / name)
    names: set[str] = set()
    silent = ProblemLog()  # problems of XMLs outside this split belong to that split's read
    for path in all_xml:
        raw = parsed[path] if path in parsed else _parse_xml(path, root, silent)
        if raw is not None:
            names.update(o.name for o in raw.objects)
    return drop_markers(sorted(names))


def _to_record(
    raw: _RawAnnotation,
    xml_path: Path,
    root: Path,
    img_dir: Path,
    index: dict[str, int],
    log: ProblemLog,
) -> ImageRecord | None:
    image = _resolve_image(raw, xml_path, img_dir, log)
    if image is None:
        return None
    try:
        stored_w, stored_h, orientation = image_geometry(image)
    except DataError as e:
        if raw.width <= 0 or raw.height <= 0:
            log.add(raw.xml, f"no <size> and unreadable image: {e}; skipped")
            return None
        # Kept as declared: the image itself is reported by whoever decodes it (data check,
        # the dataset's decode pass), under the image's own name.
        stored_w, stored_h, orientation = raw.width, raw.height, 1
    # What read_image returns (EXIF orientation applied) is what the boxes must fit.
    transposed = orientation in (5, 6, 7, 8)
    width, height = (stored_h, stored_w) if transposed else (stored_w, stored_h)
    # Boxes are taken as drawn on the image as shown (EXIF applied, as viewers and most tools
    # show it), except when <size> is the stored, untransposed size of a rotated image: then
    # the tool ignored EXIF and the boxes move with the rotation. A <size> that matches
    # neither is repaired (the image's size) and counted.
    on_stored = (
        transposed and stored_w != stored_h and (raw.width, raw.height) == (stored_w, stored_h)
    )
    if raw.width > 0 and raw.height > 0 and not on_stored and (raw.width, raw.height) != (
        width,
        height,
    ):
        shown = (img_dir.relative_to(root) / image.relative_to(img_dir.resolve())).as_posix()
        log.add(
            shown,
            f"<size> in {raw.xml} says {raw.width}x{raw.height} but the image is "
            f"{width}x{height}; using the image's size",
        )

    kept = []
    for obj in raw.objects:
        if obj.name not in index:
            log.add(raw.xml, f"object {obj.number}: unknown class {obj.name!r}; dropped")
            continue
        kept.append(obj)
    corners = np.array([o.corners for o in kept], dtype=np.float64).reshape(-1, 4)
    names = [f"object {o.number} ({o.name})" for o in kept]
    if on_stored:
        boxes, keep = repair_boxes(corners, stored_w, stored_h, raw.xml, log, _TO_XYXY, names)
        boxes = exif_transform_boxes(boxes, orientation, stored_w, stored_h)
    else:
        boxes, keep = repair_boxes(corners, width, height, raw.xml, log, _TO_XYXY, names)
    mask = root / _SEG_CLASS / (xml_path.stem + ".png")
    # safe_join resolved the path; re-anchor it on the folder as named, so a symlinked image
    # folder still gives a path relative to the root.
    file = (img_dir.relative_to(root) / image.relative_to(img_dir.resolve())).as_posix()
    return ImageRecord(
        file=file,
        width=width,
        height=height,
        boxes=boxes[keep],
        labels=np.array([index[o.name] for o in kept], dtype=np.int64)[keep],
        difficult=np.array([o.difficult for o in kept], dtype=bool)[keep],
        mask_file=mask.relative_to(root).as_posix() if mask.is_file() else None,
    )


def _resolve_image(
    raw: _RawAnnotation, xml_path: Path, img_dir: Path, log: ProblemLog
) -> Path | None:
    # <filename> may be absent (some exporters) or lack its extension: fall back to the stem.
    candidates = [raw.filename] if raw.filename else []
    base = Path(raw.filename).stem if raw.filename else xml_path.stem
    if not raw.filename or not Path(raw.filename).suffix:
        candidates += [base + ext for ext in IMAGE_EXTENSIONS]
    for name in candidates:
        try:
            path = safe_join(img_dir, name)
        except DataError as e:
            log.add(raw.xml, f"<filename> {e}")
            return None
        if path.is_file():
            return path
    shown = raw.filename or f"{xml_path.stem}.*"
    log.add(raw.xml, f"image {img_dir.name}/{shown} not found; skipped")
    return None


def write_voc(
    ds: DetectionSet, out_dir: str | Path, split: str = "train", copy_images: bool = True
) -> dict[str, Any]:
    """Write ``ds`` as split ``split`` of a VOC dataset in ``out_dir``; returns data-YAML keys.

    Splits share ``Annotations/`` and ``JPEGImages/``, so an image id already listed by another
    split is refused rather than silently overwritten.
    """
    out = Path(out_dir)
    names = unique_names([r.file for r in ds.records])
    ids = [Path(n).stem for n in names]
    _refuse_cross_split_overwrite(out, split, ids)
    (out / "Annotations").mkdir(parents=True, exist_ok=True)
    segmented: list[str] = []
    for record, name, image_id in zip(ds.records, names, ids):
        place_image(ds.root / record.file, out / "JPEGImages" / name, copy_images)
        has_masks = any(s is not None for s in record.segmentations)
        if has_masks:
            _write_masks(record, out, image_id)
            segmented.append(image_id)
        xml = _record_xml(record, name, ds.classes, has_masks)
        ET.indent(xml)
        xml.write(out / "Annotations" / f"{image_id}.xml", encoding="utf-8")
    _write_lines(out / "ImageSets" / "Main" / f"{split}.txt", ids)
    if segmented:
        _write_lines(out / "ImageSets" / "Segmentation" / f"{split}.txt", segmented)
    return {split: f"ImageSets/Main/{split}.txt"}


def _refuse_cross_split_overwrite(out: Path, split: str, ids: list[str]) -> None:
    main = out / "ImageSets" / "Main"
    if not main.is_dir():
        return
    new = set(ids)
    for other in sorted(main.glob("*.txt")):
        if other.stem == split:
            continue
        clash = new.intersection(other.read_text(encoding="utf-8").split())
        if clash:
            raise DataError(
                f"cannot write split {split!r} to {out}: image id {min(clash)!r} is already "
                f"written for {other.relative_to(out)} and the splits share Annotations/"
            )


def _record_xml(
    record: ImageRecord, name: str, classes: list[str], segmented: bool
) -> ET.ElementTree:
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = "JPEGImages"
    ET.SubElement(ann, "filename").text = name
    size = ET.SubElement(ann, "size")
    ET.SubElement(size, "width").text = str(record.width)
    ET.SubElement(size, "height").text = str(record.height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(ann, "segmented").text = str(int(segmented))
    for box, label, difficult in zip(record.boxes, record.labels, record.difficult):
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = classes[int(label)]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(int(difficult))
        bndbox = ET.SubElement(obj, "bndbox")
        corners = np.asarray(box, dtype=np.float64) - np.array(_TO_XYXY)
        for key, value in zip(_CORNERS, corners):
            ET.SubElement(bndbox, key).text = _number(float(value))
    return ET.ElementTree(ann)


def _number(value: float) -> str:
    # Integers stay integers (what labelImg and the VOC devkit write); otherwise repr(), which
    # round-trips a float exactly.
    return str(int(value)) if value.is_integer() else repr(value)


def _write_masks(record: ImageRecord, out: Path, image_id: str) -> None:
    """SegmentationObject (instance i+1) and SegmentationClass (class id + 1, 0 background).

    Crowd regions are 255 in both, VOC's "void" value that losses and metrics ignore.
    """
    h, w = record.height, record.width
    objects = np.zeros((h, w), dtype=np.uint8)
    semantic = np.zeros((h, w), dtype=np.uint8)
    for i, (seg, label, crowd) in enumerate(
        zip(record.segmentations, record.labels, record.iscrowd)
    ):
        if seg is None:
            continue
        m = rasterize(seg, h, w)
        objects[m] = 255 if crowd else i + 1
        semantic[m] = 255 if crowd else int(label) + 1
    for folder, array in ((_SEG_OBJECT, objects), (_SEG_CLASS, semantic)):
        (out / folder).mkdir(parents=True, exist_ok=True)
        png = Image.fromarray(array)
        png.putpalette(voc_palette())  # turns the "L" image into an indexed "P" one
        png.save(out / folder / f"{image_id}.png")


def voc_palette() -> list[int]:
    """The VOC devkit's 256-entry colour map (bit-interleaved class index), flat RGB list."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


@DATASETS.register("voc")
class VOCFormat(DetectionFormat):
    """Pascal VOC XML (and labelImg's lowercase ``annotations/`` + ``images/``)."""

    looks_for = "Annotations/*.xml (or labelImg's annotations/*.xml) + JPEGImages/ or images/"
    priority = 10
    split_help = "an ImageSets txt path"

    @classmethod
    def sniff(cls, path: Path) -> bool:
        return path.is_dir() and any(
            (path / d).is_dir() and any((path / d).glob("*.xml")) for d in ANNOTATION_DIRS
        )

    def read_root(
        self, root: Path, split: str | None, classes: list[str] | None, strict: bool
    ) -> DetectionSet:
        image_set = f"ImageSets/Main/{split}.txt" if split else None
        return read_voc(root, image_set=image_set, classes=classes, strict=strict)

    def root_splits(self, root: Path) -> list[str | None]:
        main = root / "ImageSets" / "Main"
        found: list[str | None] = [s for s in SPLITS if (main / f"{s}.txt").is_file()]
        return found or [None]

    def write_split(
        self, ds: DetectionSet, out: Path, split: str, copy_images: bool
    ) -> dict[str, Any]:
        return write_voc(ds, out, split=split, copy_images=copy_images)

    def read_source(self, spec: DataSpec, value: Any, strict: bool) -> DetectionSet:
        return read_voc(
            spec.root,
            image_set=value,
            classes=spec.classes,
            annotations=spec.annotations,
            images=spec.images,
            strict=strict,
        )

    def default_splits(self, spec: DataSpec) -> dict[str, Any]:
        main = spec.root / "ImageSets" / "Main"
        found = {s: f"ImageSets/Main/{s}.txt" for s in SPLITS if (main / f"{s}.txt").is_file()}
        return found or {"train": None}
