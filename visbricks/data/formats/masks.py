"""Semantic-mask formats: one PNG of class indices per image (docs/architecture.md §4, "mask PNGs").

Registered in :data:`~visbricks.registry.DATASETS` with ``kind = "segmentation"``:

- ``voc_masks``: Pascal VOC ``JPEGImages/`` + ``SegmentationClass/*.png`` palette PNGs (mode
  ``P``: the pixel *is* the class index, the palette only colours it), splits in
  ``ImageSets/Segmentation/<split>.txt``, classes from ``class_names.txt`` / ``labels.txt`` or
  the 21 VOC names. 255 (the white border) is the ignore index. The palette read is kept and
  written back, so read → write → read is identical.
- ``label_masks``: ``images/[<split>/]`` + ``masks/[<split>/]`` plain (mode ``L``) label PNGs
  with the image's stem (CamVid-style; the ignore value, e.g. CamVid's ``void`` = 11, is set by
  ``ignore_index``). Also what the shapes generator writes. A folder with ``images/`` and
  ``masks/`` is auto-detected.
- ``coco_masks``: a COCO JSON's polygons / RLE rasterised to one semantic mask per image.
  Overlaps follow torchvision's reference segmentation recipe: a pixel covered by objects of
  *different* classes is ambiguous and becomes the ignore index; ``iscrowd`` regions are ignore
  too (their class is known but their extent is not per-object accurate). Written back as one
  RLE annotation per class and image, ignore pixels as one crowd region, which rasterises to
  the same mask (lossless). The rasterised PNGs go to a user cache keyed by the JSON's bytes
  (``~/.cache/visbricks/coco_masks/``), never into the dataset.

Every reader returns a :class:`SegmentationSet` (a :class:`DetectionSet` whose records carry
``mask_file``), so ``data convert`` between them is read-one-write-another. A data YAML names
the layout explicitly::

    format: label_masks        # or voc_masks / coco_masks
    root: .                    # relative to the YAML
    classes: [background, road, car]   # optional: without names, class_0.. (said once)
    ignore_index: 255          # label value excluded from loss and metrics (CamVid void: 11)
    palette: [[0, 0, 0], [128, 64, 128], [64, 0, 128]]  # optional [r, g, b] per class id
    train: {images: images/train, masks: masks/train}   # (coco_masks: {annotations: x.json,
    val: {images: images/val, masks: masks/val}         #  images: folder})
    # split: {val_fraction: 0.2, seed: 0}   # instead of val: the box YAMLs' rule, same split

The ``split`` rule is :func:`~.datayaml.apply_split_rule`, the one the box data YAMLs use. The
``segnet`` layout (CamVid's ``train/`` + ``trainannot/``) lives in ``segnet.py`` on this base.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from ...errors import ConfigError, DataError
from ...files import atomic_write
from ...registry import DATASETS
from ..io import IMAGE_EXTENSIONS, image_geometry, image_size, safe_join
from ..records import DetectionSet, ImageRecord
from ..rle import usable_segmentation
from ._common import ProblemLog
from .base import (
    SPLITS,
    DatasetFormat,
    data_yaml_of,
    format_names,
    is_yaml,
    read_yaml_mapping,
)
from .coco import _images as coco_images
from .coco import load_coco_json, rasterize, usable_annotations
from .datayaml import apply_split_rule, split_rule

IGNORE_INDEX = 255
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
YAML_KEYS = (
    *("format", "root", "classes", "ignore_index", "palette", "mask_suffix", "split", *SPLITS),
)


def voc_palette(n: int = 256) -> list[int]:
    """The Pascal VOC colour map (bit-interleaved class index), flat [r, g, b, ...] × n."""
    palette = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


@dataclass
class SegmentationSet(DetectionSet):
    """Images with one semantic mask each (``record.mask_file``; None: unlabelled image)."""

    ignore_index: int = IGNORE_INDEX
    palette: list[int] | None = None  # flat RGB palette of palette PNGs, kept for writing
    # True when no class names were given and class_0.. were numbered from the label values
    # (data check says so: such names would otherwise pass for real ones).
    numbered: bool = False
    # The folder ``mask_file`` is relative to when it is not ``root``: coco_masks' rasterised
    # masks live in a cache outside the dataset, which is never written to.
    mask_root: Path | None = None

    def mask_path(self, record: ImageRecord) -> Path:
        """The mask PNG of ``record`` (which must have a ``mask_file``)."""
        assert record.mask_file is not None
        return safe_join(self.mask_root or self.root, record.mask_file)


def read_mask(path: str | Path) -> tuple[np.ndarray, list[int] | None]:
    """A label PNG as an (H, W) uint8 class-index array, and its palette (mode P) or None.

    Palette PNGs give their indices (not colours); grey PNGs their values. An RGB mask is
    refused: its colours would need a colour → class table to mean anything.
    """
    try:
        with Image.open(path) as im:
            if im.mode == "P":
                return np.array(im), list(im.getpalette() or [])
            if im.mode in ("L", "I", "I;16"):
                arr = np.array(im)
                if arr.max(initial=0) > 255:
                    raise DataError(f"mask {path} has values above 255 (at most 255 classes)")
                return arr.astype(np.uint8), None
            if im.mode in ("1",):
                return np.array(im).astype(np.uint8), None
            raise DataError(
                f"mask {path} is a {im.mode} image: expected class indices (palette 'P' or "
                "greyscale 'L' PNG), not colours"
            )
    except FileNotFoundError:
        raise DataError(f"mask not found: {path}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot decode mask {path}: {e}") from None


def write_mask(path: str | Path, mask: np.ndarray, palette: list[int] | None = None) -> None:
    """Write class indices losslessly: a palette PNG when ``palette`` is given, else greyscale."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise DataError(f"a mask is (H, W), got shape {arr.shape} for {path}")
    if arr.min(initial=0) < 0 or arr.max(initial=0) > 255:
        raise DataError(f"mask values must be 0..255 to fit a PNG, got {arr.min()}..{arr.max()}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr.astype(np.uint8), mode="L")
    if palette is not None:
        # Same bytes, reinterpreted as indices into the palette (no colour quantisation).
        im = Image.frombytes("P", im.size, im.tobytes())
        im.putpalette(list(palette)[:768] + [0] * max(0, 768 - len(palette)))
    im.save(path)


# --------------------------------------------------------------------------------------------
# Reading


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def _pair(
    root: Path, image_dir: Path, mask_dir: Path, names: list[str] | None, suffix: str
) -> tuple[list[ImageRecord], list[tuple[str, str]]]:
    """Records for the images of ``image_dir`` (or the ``names`` stems) with their masks."""
    records, problems = [], []
    if names is None:
        images = _images_in(image_dir) if image_dir.is_dir() else []
    else:
        by_stem = {p.stem: p for p in _images_in(image_dir)} if image_dir.is_dir() else {}
        images = []
        for n in names:
            if n in by_stem:
                images.append(by_stem[n])
            else:
                problems.append((f"{image_dir.relative_to(root)}/{n}", "image not found"))
    for image in images:
        mask = mask_dir / f"{image.stem}{suffix}.png"
        rel = image.relative_to(root).as_posix()
        try:
            width, height = image_size(image)
        except DataError as e:
            problems.append((rel, str(e)))
            continue
        if not mask.is_file():
            problems.append((rel, f"no mask ({mask.relative_to(root).as_posix()} is missing)"))
        records.append(
            ImageRecord(
                file=rel,
                width=width,
                height=height,
                mask_file=mask.relative_to(root).as_posix() if mask.is_file() else None,
                image_id=len(records) + 1,
            )
        )
    return records, problems


def _finish(
    root: Path,
    classes: list[str],
    records: list[ImageRecord],
    problems: list[tuple[str, str]],
    ignore_index: int,
    palette: list[int] | None,
    strict: bool,
    mask_root: Path | None = None,
) -> SegmentationSet:
    if mask_root is None:  # a user's PNGs; coco_masks draws its own at the images' sizes
        records = _same_size(root, records, problems)
    if strict and problems:
        file, reason = problems[0]
        raise DataError(f"{root / file}: {reason}")
    return SegmentationSet(
        root=root,
        classes=list(classes),
        records=records,
        problems=problems,
        ignore_index=int(ignore_index),
        palette=palette,
        mask_root=mask_root,
    )


def _same_size(
    root: Path, records: list[ImageRecord], problems: list[tuple[str, str]]
) -> list[ImageRecord]:
    """``records`` without those whose mask is not the size of its image as decoded (EXIF
    orientation applied, ``record.width`` x ``record.height``), each skip added to
    ``problems``. Judged from the PNG headers at read time, so a mismatch is counted and warned
    before training instead of surfacing (or not) when a batch first reaches the sample."""
    kept = []
    for r in records:
        reason = None if r.mask_file is None else _size_mismatch(root, r)
        if reason is None:
            kept.append(r)
        else:
            problems.append((str(r.mask_file), reason))
    return kept


def _size_mismatch(root: Path, record: ImageRecord) -> str | None:
    try:
        with Image.open(safe_join(root, str(record.mask_file))) as im:
            w, h = im.size
    except (OSError, SyntaxError, ValueError, DataError):
        return None  # unreadable: read_mask names it when the sample is loaded (or checked)
    if (w, h) == (record.width, record.height):
        return None
    reason = (
        f"mask is {w}×{h} but its image {record.file} is {record.width}×{record.height}; skipped"
    )
    try:
        sw, sh, orientation = image_geometry(safe_join(root, record.file))
    except DataError:
        return reason
    if orientation != 1 and (w, h) == (sw, sh):
        # The labelling tool drew on the stored pixels; every reader here shows them upright.
        reason += (
            f" (the image is stored {sw}×{sh} with EXIF orientation {orientation}, which "
            "rotates it when decoded: save it upright or draw the mask on the rotated image)"
        )
    return reason


def _classes_file(root: Path) -> list[str] | None:
    """class_names.txt / classes.txt / labels.txt (labelme's ``__ignore__`` line dropped)."""
    for name in ("class_names.txt", "classes.txt", "labels.txt"):
        f = root / name
        if f.is_file():
            names = [ln.strip() for ln in f.read_text(encoding="utf-8").splitlines()]
            return [n for n in names if n and n != "__ignore__"]
    return None


def numbered_classes(ds: SegmentationSet, ignore_index: int, where: Path) -> list[str]:
    """``class_0 .. class_K`` for a mask set that names no classes, K the largest label value
    in its masks other than ``ignore_index``; said once, since names the user did not give
    would otherwise pass for real ones in metrics and reports."""
    top = -1
    for r in ds.records:
        if r.mask_file:
            values = np.unique(read_mask(ds.mask_path(r))[0])
            values = values[values != ignore_index]
            if values.size:
                top = max(top, int(values[-1]))
    if top < 0:
        raise ConfigError(
            f"{where}: no class names and no labelled pixels to count classes from (give "
            "data.classes, a classes.txt, or 'classes' in the data YAML)"
        )
    warnings.warn(
        f"{where}: no class names; {top + 1} classes named class_0..class_{top} from the label "
        f"values in its masks ({ignore_index} ignored): give data.classes=[...], a classes.txt "
        "or 'classes' in the data YAML to name them, and ignore_index (data.ignore_index=N, "
        "`data check --ignore-index N`) when a value means unlabelled",
        stacklevel=3,
    )
    return [f"class_{i}" for i in range(top + 1)]


def _first_palette(ds_root: Path, records: list[ImageRecord]) -> list[int] | None:
    for r in records:
        if r.mask_file:
            return read_mask(safe_join(ds_root, r.mask_file))[1]
    return None


@dataclass
class _YamlSpec:
    source: Path
    format: str
    root: Path
    classes: list[str] | None
    ignore_index: int
    mask_suffix: str
    splits: dict[str, Any]
    palette: list[int] | None = None  # flat [r, g, b, ...] in class-id order
    split_rule: dict[str, Any] | None = None  # {val_fraction, seed} | {val_last}: val from train

    def split_names(self) -> list[str | None]:
        return ["train", "val"] if self.split_rule else (list(self.splits) or [None])


def load_mask_yaml(path: str | Path) -> _YamlSpec:
    """A segmentation data YAML (see the module docstring); errors name the file and key."""
    path = Path(path)
    doc = read_yaml_mapping(path)
    for key in doc:
        if key not in YAML_KEYS:
            raise ConfigError(f"{path}: unknown key {key!r} (valid: {', '.join(YAML_KEYS)})")
    fmt = doc.get("format")
    if not is_mask_format(fmt):
        raise ConfigError(
            f"{path}: format must be one of {', '.join(mask_formats())}, got {fmt!r}"
        )
    root = (path.parent / str(doc.get("root", "."))).resolve()
    classes = doc.get("classes")
    if classes is not None and (
        not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)
    ):
        raise ConfigError(f"{path}: 'classes' must be a list of names")
    ignore = doc.get("ignore_index", IGNORE_INDEX)
    if not isinstance(ignore, int) or not 0 <= ignore <= 255:
        raise ConfigError(f"{path}: 'ignore_index' must be an int in 0..255, got {ignore!r}")
    splits = {s: doc[s] for s in SPLITS if s in doc}
    rule = split_rule(path, doc.get("split"), splits)
    return _YamlSpec(
        path, fmt, root, classes, ignore, str(doc.get("mask_suffix", "")), splits,
        _palette(path, doc.get("palette")), rule,
    )  # fmt: skip


def _palette(path: Path, value: Any) -> list[int] | None:
    """``palette: [[r, g, b], ...]`` (one colour per class id) as a flat list, or None."""
    if value is None:
        return None
    ok = (
        isinstance(value, list)
        and 0 < len(value) <= 256
        and all(
            isinstance(c, list)
            and len(c) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)
            for c in value
        )
    )
    if not ok:
        raise ConfigError(
            f"{path}: 'palette' must be a list of [r, g, b] (0..255) per class id, at most 256"
        )
    return [int(v) for colour in value for v in colour]


def _split_dirs(spec: _YamlSpec, split: str) -> tuple[Path, Path]:
    entry = spec.splits.get(split)
    if not isinstance(entry, dict) or "images" not in entry or "masks" not in entry:
        raise ConfigError(
            f"{spec.source}: split {split!r} must be {{images: FOLDER, masks: FOLDER}}"
            + ("" if entry is not None else f" (it is missing; splits: {', '.join(spec.splits)})")
        )
    return safe_join(spec.root, entry["images"]), safe_join(spec.root, entry["masks"])


class _MaskFormat(DatasetFormat):
    kind = "segmentation"
    writable = True

    def splits(self, path: str | Path) -> list[str | None]:
        path = _own_yaml(Path(path))
        if is_yaml(path):
            return load_mask_yaml(path).split_names()
        return self._folder_splits(path)

    def _folder_splits(self, path: Path) -> list[str | None]:
        return [None]

    def read(
        self,
        path: str | Path,
        split: str | None = None,
        classes: list[str] | None = None,
        strict: bool = False,
        ignore_index: int | None = None,
    ) -> SegmentationSet:
        path = _own_yaml(Path(path))
        rule, palette = None, None
        if is_yaml(path):
            spec = load_mask_yaml(path)
            split = split or "train"
            if (spec.splits or spec.split_rule) and split not in spec.split_names():
                names = ", ".join(str(s) for s in spec.split_names())
                raise ConfigError(f"{path}: no {split!r} split (it has: {names})")
            rule, palette = spec.split_rule, spec.palette
            # With a split rule both halves come from the train source, divided below.
            ds = self._read_yaml(spec, "train" if rule else split, strict)
            names = classes or spec.classes or ds.classes
            ignore = spec.ignore_index if ignore_index is None else ignore_index
        else:
            if not path.is_dir():
                raise DataError(f"dataset not found: {path}")
            ds = self._read_folder(path, split, strict)
            names = classes or ds.classes
            ignore = ds.ignore_index if ignore_index is None else ignore_index
        if not isinstance(ignore, int) or isinstance(ignore, bool) or not 0 <= ignore <= 255:
            raise ConfigError(f"{path}: ignore_index must be an int in 0..255, got {ignore!r}")
        if not names:
            # Counted over the whole source, before a split rule divides it: both halves agree.
            names = numbered_classes(ds, ignore, path)
            ds.numbered = True
        ds.classes, ds.ignore_index = list(names), ignore
        if palette is not None:
            ds.palette = palette
        if rule:
            ds = apply_split_rule(ds, rule, split, path)
        return ds

    def _read_yaml(self, spec: _YamlSpec, split: str, strict: bool) -> SegmentationSet:
        images, masks = _split_dirs(spec, split)
        records, problems = _pair(spec.root, images, masks, None, spec.mask_suffix)
        palette = _first_palette(spec.root, records)
        return _finish(spec.root, [], records, problems, spec.ignore_index, palette, strict)

    def _read_folder(self, path: Path, split: str | None, strict: bool) -> SegmentationSet:
        raise NotImplementedError


@DATASETS.register("label_masks")
class LabelMasks(_MaskFormat):
    looks_for = "images/ and masks/ folders of label PNGs (optionally one sub-folder per split)"
    priority = 40

    @classmethod
    def sniff(cls, path: Path) -> bool:
        path = Path(path)
        if is_yaml(path):
            return _yaml_format(path) == "label_masks"
        return (path / "images").is_dir() and (path / "masks").is_dir()

    def _folder_splits(self, path: Path) -> list[str | None]:
        found: list[str | None] = [s for s in SPLITS if (path / "images" / s).is_dir()]
        return found or [None]

    def _read_folder(self, path: Path, split: str | None, strict: bool) -> SegmentationSet:
        images, masks = path / "images", path / "masks"
        if split is not None:
            if not (images / split).is_dir():
                raise DataError(f"{path}: no images/{split}/ folder for split {split!r}")
            images, masks = images / split, masks / split
        records, problems = _pair(path.resolve(), images.resolve(), masks.resolve(), None, "")
        classes = _classes_file(path) or []
        return _finish(path.resolve(), classes, records, problems, IGNORE_INDEX, None, strict)

    def write(
        self, records: SegmentationSet, out_dir: str | Path, split: str = "train", **options: Any
    ) -> Path:
        out = Path(out_dir)
        entry = {"images": f"images/{split}", "masks": f"masks/{split}"}
        for r in records.records:
            if r.mask_file is None:
                continue
            src = safe_join(records.root, r.file)
            stem = Path(r.file).stem
            _copy(src, out / "images" / split / src.name)
            mask, _ = read_mask(records.mask_path(r))
            write_mask(out / "masks" / split / f"{stem}.png", mask)
        return _write_yaml(out, "label_masks", records, split, entry)


@DATASETS.register("voc_masks")
class VOCMasks(_MaskFormat):
    looks_for = "JPEGImages/ + SegmentationClass/*.png (Pascal VOC semantic segmentation)"
    priority = 30

    @classmethod
    def sniff(cls, path: Path) -> bool:
        path = Path(path)
        if is_yaml(path):
            return _yaml_format(path) == "voc_masks"
        seg = path / "SegmentationClass"
        return (path / "JPEGImages").is_dir() and seg.is_dir() and any(seg.glob("*.png"))

    def _folder_splits(self, path: Path) -> list[str | None]:
        sets = path / "ImageSets" / "Segmentation"
        found: list[str | None] = [s for s in SPLITS if (sets / f"{s}.txt").is_file()]
        return found or [None]

    def _read_folder(self, path: Path, split: str | None, strict: bool) -> SegmentationSet:
        root = path.resolve()
        names = None
        if split is not None:
            listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
            if not listing.is_file():
                raise DataError(f"{path}: no {listing.relative_to(root)} for split {split!r}")
            names = [ln.split()[0] for ln in listing.read_text().splitlines() if ln.strip()]
        elif (root / "SegmentationClass").is_dir():
            # Without a split list: the images that have a mask (VOC has more photos than masks).
            names = sorted(p.stem for p in (root / "SegmentationClass").glob("*.png"))
        records, problems = _pair(
            root, root / "JPEGImages", root / "SegmentationClass", names, ""
        )
        classes = _classes_file(root) or list(VOC_CLASSES)
        palette = _first_palette(root, records) or voc_palette()
        return _finish(root, classes, records, problems, IGNORE_INDEX, palette, strict)

    def write(
        self, records: SegmentationSet, out_dir: str | Path, split: str = "train", **options: Any
    ) -> Path:
        out = Path(out_dir)
        palette = records.palette or voc_palette()
        names = []
        for r in records.records:
            if r.mask_file is None:
                continue
            src = safe_join(records.root, r.file)
            stem = Path(r.file).stem
            _copy(src, out / "JPEGImages" / f"{stem}{src.suffix}")
            mask, _ = read_mask(records.mask_path(r))
            write_mask(out / "SegmentationClass" / f"{stem}.png", mask, palette)
            names.append(stem)
        sets = out / "ImageSets" / "Segmentation"
        sets.mkdir(parents=True, exist_ok=True)
        (sets / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
        (out / "class_names.txt").write_text("".join(f"{c}\n" for c in records.classes))
        return out


@DATASETS.register("coco_masks")
class COCOMasks(_MaskFormat):
    """COCO polygons / RLE → semantic masks, rendered once into a cache outside the dataset
    keyed by the JSON's content (:func:`coco_mask_cache`)."""

    looks_for = "a data YAML with format: coco_masks (COCO JSON rasterised to semantic masks)"
    priority = 90

    @classmethod
    def sniff(cls, path: Path) -> bool:
        return is_yaml(Path(path)) and _yaml_format(Path(path)) == "coco_masks"

    def _read_yaml(self, spec: _YamlSpec, split: str, strict: bool) -> SegmentationSet:
        entry = spec.splits.get(split)
        if not isinstance(entry, dict) or "annotations" not in entry:
            raise ConfigError(f"{spec.source}: split {split!r} must be {{annotations: JSON, ...}}")
        return read_coco_semantic(
            safe_join(spec.root, entry["annotations"]),
            safe_join(spec.root, entry.get("images", ".")),
            spec.ignore_index,
            strict=strict,
            root=spec.root,
        )

    def _read_folder(self, path: Path, split: str | None, strict: bool) -> SegmentationSet:
        raise DataError(f"{path}: coco_masks reads a data YAML naming the annotation JSON")

    def write(
        self, records: SegmentationSet, out_dir: str | Path, split: str = "train", **options: Any
    ) -> Path:
        from pycocotools import mask as mask_utils

        out = Path(out_dir)
        images, annotations = [], []
        for i, r in enumerate(records.records):
            if r.mask_file is None:
                continue
            src = safe_join(records.root, r.file)
            _copy(src, out / "images" / split / src.name)
            mask, _ = read_mask(records.mask_path(r))
            images.append(
                {"id": i + 1, "file_name": src.name, "width": r.width, "height": r.height}
            )
            for c in np.unique(mask):
                c = int(c)
                labelled = c < len(records.classes) and c != records.ignore_index
                # Ignored (or out-of-range) pixels go out as one crowd region, which reads back
                # as ignore: the round trip is lossless.
                region = mask == c if labelled else ~np.isin(mask, np.arange(len(records.classes)))
                if not labelled and any(a.get("iscrowd") and a["image_id"] == i + 1
                                        for a in annotations[-len(records.classes) - 1 :]):
                    continue
                rle = mask_utils.encode(np.asfortranarray(region.astype(np.uint8)))
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": i + 1,
                        "category_id": c + 1 if labelled else 1,
                        "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                        "area": float(mask_utils.area(rle)),
                        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                        "iscrowd": 0 if labelled else 1,
                    }
                )
        doc = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(records.classes)],
        }
        (out / "annotations").mkdir(parents=True, exist_ok=True)
        (out / "annotations" / f"{split}.json").write_text(json.dumps(doc))
        entry = {"annotations": f"annotations/{split}.json", "images": f"images/{split}"}
        return _write_yaml(out, "coco_masks", records, split, entry)


def mask_formats() -> list[str]:
    """The registered mask formats (kind ``segmentation``), asked of the registry so a new
    layout such as ``segnet`` needs no list here."""
    return format_names("segmentation")


def is_mask_format(name: Any) -> bool:
    return isinstance(name, str) and name in mask_formats()


def _own_yaml(path: Path) -> Path:
    """A folder whose ``data.yaml`` names a mask format is read through that YAML."""
    yaml_file = data_yaml_of(path)
    if yaml_file is not None and is_mask_format(_yaml_format(yaml_file)):
        return yaml_file
    return path


def _yaml_format(path: Path) -> str | None:
    try:
        return read_yaml_mapping(path).get("format")
    except DataError:
        return None


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        shutil.copyfile(src, dst)


def _write_yaml(
    out: Path, fmt: str, ds: SegmentationSet, split: str, entry: dict[str, str]
) -> Path:
    path = out / "data.yaml"
    doc: dict[str, Any] = {}
    if path.is_file():
        doc = read_yaml_mapping(path)
        if doc.get("format") != fmt or doc.get("classes") != list(ds.classes):
            raise DataError(f"cannot add a split to {path}: it holds another dataset")
    doc.update({"format": fmt, "root": ".", "classes": list(ds.classes)})
    doc["ignore_index"] = int(ds.ignore_index)
    doc[split] = entry
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in ds.classes), encoding="utf-8")
    return path


def coco_semantic_mask(
    annotations: list[dict[str, Any]],
    height: int,
    width: int,
    category_index: dict[int, int],
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """One image's COCO annotations → (H, W) int32 class indices, ``ignore_index`` where
    objects of different classes overlap or a crowd region lies, -1 where no object is."""
    label = np.full((height, width), -1, dtype=np.int32)
    ambiguous = np.zeros((height, width), dtype=bool)
    for ann in annotations:
        cat = ann.get("category_id")
        if cat not in category_index or ann.get("segmentation") is None:
            continue
        m = rasterize(ann["segmentation"], height, width)
        if ann.get("iscrowd", 0):
            ambiguous |= m
            continue
        c = category_index[cat]
        ambiguous |= m & (label >= 0) & (label != c)
        label[m & (label < 0)] = c
    label[ambiguous] = ignore_index
    return label.astype(np.int32)


def read_coco_semantic(
    json_path: Path,
    image_dir: Path,
    ignore_index: int = IGNORE_INDEX,
    strict: bool = False,
    root: Path | None = None,
) -> SegmentationSet:
    """COCO JSON → records whose semantic mask PNGs are rasterised into :func:`coco_mask_cache`,
    a folder outside the dataset keyed by the JSON's bytes (the dataset is never written to,
    and a changed JSON is never served the old masks).

    Classes are ``background`` followed by the categories in id order; a pixel covered by no
    object is background (0), overlap rules as in the module docstring. When the categories
    already start with a class named ``background``/``_background_``, it is not added twice.
    Image entries are read as the box reader reads them (sizes from the image itself, as
    decoded: a missing or wrong ``width``/``height`` is no obstacle). A bad annotation (a
    polygon of fewer than 3 points, an RLE whose ``size`` is not its image's) is skipped and
    counted in ``problems``; its ``bbox``, when it has one, becomes the ignore index, since the
    object's pixels are unknown but surely not background.
    """
    json_path = Path(json_path)
    doc, raw = load_coco_json(json_path)
    if not Path(image_dir).is_dir():
        raise DataError(f"COCO image folder not found: {image_dir} (for {json_path})")
    log = ProblemLog(strict)
    classes, index = _semantic_classes(doc, json_path)
    root = Path(root or json_path.parent).resolve()
    images = Path(image_dir).resolve()
    by_id = coco_images(doc, images, log)
    by_image: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in by_id}
    for ann in usable_annotations(doc, by_id, log, json_path.name):
        by_image[ann["image_id"]].append(ann)
    cache = coco_mask_cache(raw, ignore_index)
    use_mask_cache(cache)
    records = []
    for image_id, record in by_id.items():
        h, w = record.height, record.width
        file = _rel(images / record.file, root)
        anns, unknown = _usable_annotations(
            by_image[image_id], h, w, index, file, json_path.name, log
        )
        # The size is in the name: an image replaced by one of another size gets a new mask.
        mask_name = f"{image_id}-{w}x{h}.png"
        if not (cache / mask_name).is_file():
            mask = coco_semantic_mask(anns, h, w, index, ignore_index)
            mask[mask < 0] = 0  # covered by no object: background
            for region in unknown:
                mask[region] = ignore_index
            _write_cached(cache / mask_name, mask.astype(np.uint8), json_path)
        records.append(
            ImageRecord(
                file=file,
                width=w,
                height=h,
                mask_file=mask_name,
                image_id=image_id,
            )
        )
    return _finish(root, classes, records, log.items, ignore_index, None, strict, cache)


# Bumped when the rasterisation rules change, so no cache drawn by older rules is used.
_COCO_MASK_RULES = "coco_masks-v2"


def coco_mask_cache(raw: bytes, ignore_index: int) -> Path:
    """Where the rasterised masks of a COCO file with these exact bytes live:
    ``$XDG_CACHE_HOME/visbricks/coco_masks/<key>`` (default ``~/.cache``), the key a SHA-256 of
    the bytes, the ignore index and the rules' version. Keyed by content, not by path or mtime,
    so an edited JSON (even one rewritten within the same second) always gets masks of its own,
    and copies of one file share them."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no home directory (a bare container): still outside the dataset
            base = tempfile.gettempdir()
    digest = hashlib.sha256(raw)
    digest.update(f"|ignore_index={ignore_index}|{_COCO_MASK_RULES}".encode())
    return Path(base) / "visbricks" / "coco_masks" / digest.hexdigest()[:24]


# A key folder no run has used for this long is deleted (an edited JSON gets a new key, so
# without this every edit would leave a full copy of its masks behind, forever).
MASK_CACHE_DAYS = 30
_CACHE_KEY = re.compile(r"[0-9a-f]{24}")  # coco_mask_cache's folder names


def use_mask_cache(cache: Path, days: float = MASK_CACHE_DAYS) -> list[Path]:
    """Mark ``cache`` (a key folder) as used now and delete its sibling key folders unused for
    ``days``. Only folders named like keys are touched; age is the folder's mtime, which every
    use refreshes, so a cache another run is reading (used within ``days``) is never removed.
    Returns the removed folders."""
    now = time.time()
    if cache.is_dir():
        try:
            os.utime(cache, (now, now))
        except OSError:  # a read-only cache is still usable; it just ages
            pass
    removed = []
    try:
        siblings = list(cache.parent.iterdir())
    except OSError:
        return removed
    for folder in siblings:
        if folder == cache or not _CACHE_KEY.fullmatch(folder.name) or not folder.is_dir():
            continue
        try:
            unused = now - folder.stat().st_mtime
        except OSError:
            continue
        if unused > days * 86400:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _write_cached(path: Path, mask: np.ndarray, json_path: Path) -> None:
    # Atomic: a run reading the cache while another fills it sees whole PNGs or none.
    try:
        atomic_write(path, lambda tmp: write_mask(tmp, mask), suffix=".png")
    except OSError as e:
        raise DataError(
            f"cannot write the rasterised masks of {json_path} to {path.parent}: {e} (set "
            "XDG_CACHE_HOME to a writable folder)"
        ) from None


def _semantic_classes(doc: dict[str, Any], json_path: Path) -> tuple[list[str], dict[int, int]]:
    """``background`` + the category names in id order, and category id → class id."""
    try:
        cats = sorted(
            ((int(c["id"]), str(c["name"])) for c in doc.get("categories") or []),
            key=lambda c: c[0],
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{json_path}: malformed 'categories' entry ({e!r})") from None
    if len({i for i, _ in cats}) != len(cats):
        raise DataError(f"{json_path}: duplicate category ids in 'categories'")
    names = [name for _, name in cats]
    offset = 0 if names and names[0] in ("background", "_background_") else 1
    classes = (["background"] if offset else []) + names
    return classes, {cid: k + offset for k, (cid, _) in enumerate(cats)}


def _usable_annotations(
    anns: list[dict[str, Any]],
    height: int,
    width: int,
    index: dict[int, int],
    file: str,
    json_name: str,
    log: ProblemLog,
) -> tuple[list[dict[str, Any]], list[tuple[slice, slice]]]:
    """The annotations of one image that can be drawn (bad polygons of a list removed), and the
    box regions of those that cannot, each skip logged naming the JSON and annotation id."""
    kept, unknown = [], []
    for ann in anns:
        where = f"{json_name} annotation {ann.get('id')}"
        if ann.get("category_id") not in index:
            log.add(file, f"{where}: unknown class (category_id {ann.get('category_id')}); skipped")
            continue
        segmentation, why = usable_segmentation(ann.get("segmentation"), height, width)
        if segmentation is not None:
            if why is not None:
                log.add(file, f"{where}: {why}; its other polygons kept")
            kept.append({**ann, "segmentation": segmentation})
            continue
        if why is None:
            continue  # no segmentation at all: nothing to draw, nothing wrong
        region = _box_region(ann.get("bbox"), height, width)
        if region is not None:
            unknown.append(region)
        log.add(file, f"{where}: {why}; skipped" + (", its bbox ignored" if region else ""))
    return kept, unknown


def _box_region(bbox: Any, height: int, width: int) -> tuple[slice, slice] | None:
    """The pixels of a COCO ``[x, y, w, h]`` box inside the image, or None."""
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return None
    if not all(np.isfinite([x, y, w, h])):
        return None
    x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
    x1, y1 = min(width, int(np.ceil(x + w))), min(height, int(np.ceil(y + h)))
    return (slice(y0, y1), slice(x0, x1)) if x1 > x0 and y1 > y0 else None


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        raise DataError(f"{path} lies outside the dataset root {root}") from None
