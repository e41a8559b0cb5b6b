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
  the same mask (lossless).

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

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from ...errors import ConfigError, DataError
from ...registry import DATASETS
from ..io import IMAGE_EXTENSIONS, image_size, safe_join
from ..records import DetectionSet, ImageRecord
from .base import (
    SPLITS,
    DatasetFormat,
    data_yaml_of,
    format_names,
    is_yaml,
    read_yaml_mapping,
)
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
) -> SegmentationSet:
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
    )


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
            values = np.unique(read_mask(safe_join(ds.root, r.mask_file))[0])
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
            mask, _ = read_mask(safe_join(records.root, r.mask_file))
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
            mask, _ = read_mask(safe_join(records.root, r.mask_file))
            write_mask(out / "SegmentationClass" / f"{stem}.png", mask, palette)
            names.append(stem)
        sets = out / "ImageSets" / "Segmentation"
        sets.mkdir(parents=True, exist_ok=True)
        (sets / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
        (out / "class_names.txt").write_text("".join(f"{c}\n" for c in records.classes))
        return out


@DATASETS.register("coco_masks")
class COCOMasks(_MaskFormat):
    """COCO polygons / RLE → semantic masks, rendered once into ``<json stem>_masks/`` beside
    the JSON (a cache, regenerated when the JSON is newer)."""

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
            mask, _ = read_mask(safe_join(records.root, r.mask_file))
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
    from ..formats.coco import rasterize

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
    """COCO JSON → semantic masks PNGs under ``<json stem>_masks/`` (cached) + records.

    Classes are ``background`` followed by the categories in id order; a pixel covered by no
    object is background (0), overlap rules as in the module docstring. When the categories
    already start with a class named ``background``/``_background_``, it is not added twice.
    """
    try:
        doc = json.loads(Path(json_path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"COCO annotation file not found: {json_path}") from None
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read COCO JSON {json_path}: {e}") from None
    cats = sorted(doc.get("categories", []), key=lambda c: c["id"])
    names = [c["name"] for c in cats]
    offset = 0 if names and names[0] in ("background", "_background_") else 1
    classes = (["background"] if offset else []) + names
    index = {c["id"]: k + offset for k, c in enumerate(cats)}
    by_image: dict[int, list] = {}
    for ann in doc.get("annotations", []):
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    root = Path(root or Path(json_path).parent).resolve()
    cache = Path(json_path).resolve().parent / f"{Path(json_path).stem}_masks"
    stale = not cache.is_dir() or cache.stat().st_mtime < Path(json_path).stat().st_mtime
    records, problems = [], []
    for im in doc.get("images", []):
        file = safe_join(image_dir, im["file_name"])
        rel = Path(im["file_name"]).stem
        mask_path = cache / f"{rel}.png"
        if stale or not mask_path.is_file():
            h, w = int(im["height"]), int(im["width"])
            mask = coco_semantic_mask(by_image.get(im["id"], []), h, w, index, ignore_index)
            mask[mask < 0] = 0  # covered by no object: background
            write_mask(mask_path, mask.astype(np.uint8))
        if not file.is_file():
            problems.append((str(file), "image not found"))
            continue
        records.append(
            ImageRecord(
                file=Path(_rel(file, root)).as_posix(),
                width=int(im["width"]),
                height=int(im["height"]),
                mask_file=_rel(mask_path, root),
                image_id=int(im["id"]),
            )
        )
    return _finish(root, classes, records, problems, ignore_index, None, strict)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        raise DataError(f"{path} lies outside the dataset root {root}") from None
