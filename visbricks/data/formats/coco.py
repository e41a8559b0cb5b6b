"""COCO JSON: ``images``, ``annotations`` (xywh boxes, ``iscrowd``, polygon/RLE masks),
``categories``.

Category ids in the wild are arbitrary (1-based, sparse like COCO's 1..90, or labelme's 0 for
``_background_``); they become class ids 0..C-1 in ascending id order, and are written back
1-based. Masks are kept verbatim in ``ImageRecord.segmentations``. VOC's ``difficult`` flag
has no COCO field: it is written as an extra ``"difficult": 1`` on the annotation, which
pycocotools ignores and this reader restores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from ...errors import ConfigError, DataError
from ...registry import DATASETS
from ..io import image_size, safe_join
from ..records import DetectionSet, ImageRecord
from ..rle import rle_area, to_rle, usable_segmentation
from ._common import LABELME_MARKERS, ProblemLog, place_image, repair_boxes, unique_names
from .base import SPLITS
from .datayaml import DataSpec, DetectionFormat


def rasterize(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Boolean (H, W) mask of a COCO polygon list, uncompressed RLE or compressed RLE."""
    return mask_utils.decode(_as_rle(segmentation, height, width)).astype(bool)


def read_coco(
    json_path: str | Path,
    *,
    images: str | Path | None = None,
    classes: list[str] | None = None,
    strict: bool = False,
    search: Sequence[Path] = (),
) -> DetectionSet:
    """Read one COCO annotation file.

    ``images`` is the folder ``file_name`` is relative to; by default the JSON's own folder,
    or the first folder of ``search`` in which the first image exists. ``classes`` (optional)
    fixes the class order by category *name*; categories outside it are unknown classes.
    """
    json_path = Path(json_path)
    data, _ = load_coco_json(json_path)
    images_dir = Path(images) if images is not None else _guess_images(json_path, data, search)
    if not images_dir.is_dir():
        raise DataError(f"COCO image folder not found: {images_dir} (for {json_path})")
    log = ProblemLog(strict)
    names, cat_to_label = _categories(data, json_path, classes)
    by_id = _images(data, images_dir, log)
    objects: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in by_id}
    for ann in usable_annotations(data, by_id, log, json_path.name):
        _add_annotation(ann, by_id[ann["image_id"]], cat_to_label, objects, log, json_path.name)

    records = []
    for image_id, record in by_id.items():
        anns = objects[image_id]
        boxes, keep = repair_boxes(
            np.array([a["box"] for a in anns], dtype=np.float64).reshape(-1, 4),
            record.width,
            record.height,
            record.file,
            log,
            names=[f"annotation {a['id']} (as xyxy)" for a in anns],
        )
        kept = [a for a, k in zip(anns, keep) if k]
        record.boxes = boxes[keep]
        record.labels = np.array([a["label"] for a in kept], dtype=np.int64)
        record.iscrowd = np.array([a["iscrowd"] for a in kept], dtype=bool)
        record.difficult = np.array([a["difficult"] for a in kept], dtype=bool)
        record.segmentations = [a["segmentation"] for a in kept]
        # For evaluation: the boxes as written (clipping is for training) and the file's areas.
        record.annotated_boxes = np.array([a["box"] for a in kept], dtype=np.float64).reshape(
            -1, 4
        )
        record.areas = np.array([a["area"] for a in kept], dtype=np.float64)
        records.append(record)
    label_to_cat = {label: cid for cid, label in cat_to_label.items()}
    category_ids = [label_to_cat.get(c) for c in range(len(names))]
    return DetectionSet(
        root=images_dir,
        classes=names,
        records=records,
        problems=log.items,
        category_ids=category_ids if None not in category_ids else None,
    )


def load_coco_json(path: Path) -> tuple[dict[str, Any], bytes]:
    """A COCO annotation file's document and the exact bytes it was parsed from (a cache keyed
    by them can never pair a mask with another version of the file)."""
    try:
        raw = Path(path).read_bytes()
        data = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise DataError(f"COCO annotation file not found: {path}") from None
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read COCO annotation file {path}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path} is not a COCO annotation file: it has no 'images' list")
    return data, raw


def _guess_images(json_path: Path, data: dict[str, Any], search: Sequence[Path]) -> Path:
    candidates = [json_path.parent, *search]
    first = next((im.get("file_name") for im in data["images"] if isinstance(im, dict)), None)
    if first:
        for folder in candidates:
            if (folder / first).is_file():
                return folder
    return candidates[0]


def _categories(
    data: dict[str, Any], json_path: Path, classes: list[str] | None
) -> tuple[list[str], dict[int, int]]:
    try:
        cats = sorted(
            ((int(c["id"]), str(c["name"])) for c in data.get("categories", [])),
            key=lambda c: c[0],
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{json_path}: malformed 'categories' entry ({e!r})") from None
    ids = [i for i, _ in cats]
    if len(set(ids)) != len(ids):
        raise DataError(f"{json_path}: duplicate category ids in 'categories'")
    if classes is None:
        classes = [name for _, name in cats if name not in LABELME_MARKERS]
        if not classes:
            raise DataError(f"{json_path} has no categories; give the class list explicitly")
    index = {name: i for i, name in enumerate(classes)}
    return list(classes), {cid: index[name] for cid, name in cats if name in index}


def _images(data: dict[str, Any], images_dir: Path, log: ProblemLog) -> dict[int, ImageRecord]:
    by_id: dict[int, ImageRecord] = {}
    seen_files: set[str] = set()
    for n, im in enumerate(data["images"]):
        try:
            image_id, file_name = int(im["id"]), str(im["file_name"])
        except (KeyError, TypeError, ValueError):
            log.add(f"images[{n}]", "image entry without a valid 'id' and 'file_name'; skipped")
            continue
        if image_id in by_id or file_name in seen_files:
            log.add(file_name, f"duplicate image entry (id {image_id}); skipped")
            continue
        seen_files.add(file_name)
        try:
            path = safe_join(images_dir, file_name)
        except DataError as e:
            log.add(file_name, str(e))
            continue
        if not path.is_file():
            log.add(file_name, f"image not found in {images_dir}; skipped")
            continue
        try:
            width, height = int(im.get("width") or 0), int(im.get("height") or 0)
        except (TypeError, ValueError):
            width = height = 0  # unusable size fields: the image header is the truth
        try:
            real = image_size(path)  # as decoded: EXIF orientation applied
        except DataError as e:
            if width <= 0 or height <= 0:
                log.add(file_name, f"no width/height and unreadable image: {e}; skipped")
                continue
            real = (width, height)  # the decode check reports the image under its own name
        if width > 0 and height > 0 and (width, height) != real:
            log.add(
                file_name,
                f"width/height say {width}x{height} but the image is {real[0]}x{real[1]}; "
                "using the image's size",
            )
        width, height = real
        rel = path.relative_to(images_dir.resolve()).as_posix()
        by_id[image_id] = ImageRecord(file=rel, width=width, height=height, image_id=image_id)
    return by_id


def usable_annotations(
    data: dict[str, Any], by_id: dict[int, ImageRecord], log: ProblemLog, where: str
) -> list[dict[str, Any]]:
    """The annotations of ``data`` whose image was read (``by_id``); an entry that is no
    object, or names an image_id the file does not list, is logged as skipped. Annotations of
    an image that was skipped (and reported) while reading the images are dropped silently.
    The box reader and ``coco_masks`` share it."""
    listed = {im.get("id") for im in data["images"] if isinstance(im, dict)}
    usable = []
    for ann in data.get("annotations", []):
        if not isinstance(ann, dict):
            log.add(where, f"annotation entry {ann!r} is not an object; skipped")
        elif ann.get("image_id") not in listed:
            log.add(
                where,
                f"annotation {ann.get('id')} refers to unknown image_id "
                f"{ann.get('image_id')}; skipped",
            )
        elif ann["image_id"] in by_id:
            usable.append(ann)
    return usable


def _add_annotation(
    ann: dict[str, Any],
    record: ImageRecord,
    cat_to_label: dict[int, int],
    objects: dict[int, list[dict[str, Any]]],
    log: ProblemLog,
    json_name: str = "",
) -> None:
    ann_id = ann.get("id")
    where = f"annotation {ann_id}"
    category = ann.get("category_id")
    if category not in cat_to_label:
        log.add(record.file, f"{where}: unknown class (category_id {category}); dropped")
        return
    # A bad mask (a 2-point polygon, an RLE of another size) costs the mask, not the object:
    # the box alone still trains and evaluates a detector (mmdetection drops such polygons too).
    segmentation, bad_mask = usable_segmentation(
        ann.get("segmentation"), record.height, record.width
    )
    box = ann.get("bbox")
    try:
        if isinstance(box, list) and len(box) == 4:
            x, y, w, h = (float(v) for v in box)
        elif segmentation is not None:
            # Some exporters write only masks: the box is the mask's extent.
            rle = _as_rle(segmentation, record.height, record.width)
            x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
        else:
            raise ValueError(bad_mask or "neither a 4-number bbox nor a segmentation")
    except (TypeError, ValueError, KeyError) as e:
        log.add(record.file, f"{where}: unusable box ({e}); dropped")
        return
    if bad_mask is not None:
        kept = "its other polygons kept" if segmentation is not None else "mask dropped, box kept"
        log.add(record.file, f"{json_name} {where}: {bad_mask}; {kept}".lstrip())
    xyxy = [x, y, x + w, y + h]
    objects[record.image_id].append(
        {
            "id": ann_id,
            "box": xyxy,
            "label": cat_to_label[category],
            "iscrowd": bool(ann.get("iscrowd", 0)),
            "difficult": bool(ann.get("difficult", 0)),
            "segmentation": segmentation,
            "area": _given_area(ann.get("area")),
        }
    )


def _given_area(value: Any) -> float:
    # COCOeval splits small/medium/large on the file's own area (the mask's, not the box's).
    try:
        area = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return area if np.isfinite(area) and area >= 0 else float("nan")


def write_coco(
    ds: DetectionSet, out_dir: str | Path, split: str = "train", copy_images: bool = True
) -> dict[str, Any]:
    """Write ``annotations/instances_<split>.json`` + ``images/<split>/``; returns YAML keys."""
    out = Path(out_dir)
    images_rel = f"images/{split}"
    json_rel = f"annotations/instances_{split}.json"
    names = unique_names([r.file for r in ds.records])
    ids = [r.image_id for r in ds.records]
    if len(set(ids)) != len(ids):  # ids are kept when they identify images, else renumbered
        ids = list(range(1, len(ds.records) + 1))

    for record, name in zip(ds.records, names):
        place_image(ds.root / record.file, out / images_rel / name, copy_images)
    payload = {
        "info": {"description": f"written by visbricks, split {split}"},
        "licenses": [],
        # Written as repaired (boxes clipped), with categories 1..C in class order.
        **coco_dict(ds, ids, names, category_ids=list(range(1, len(ds.classes) + 1))),
    }
    path = out / json_rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload), encoding="utf-8")
    return {split: {"annotations": json_rel, "images": images_rel}}


def coco_category_ids(ds: DetectionSet) -> list[int]:
    """The COCO ``category_id`` of each class: the dataset's own (a COCO file's ids, kept through
    reading, converting and evaluation), else class id + 1."""
    if ds.category_ids is None:
        return list(range(1, len(ds.classes) + 1))
    if len(ds.category_ids) != len(ds.classes):
        raise DataError(f"{len(ds.category_ids)} category ids for {len(ds.classes)} classes")
    return [int(c) for c in ds.category_ids]


def coco_dict(
    ds: DetectionSet,
    image_ids: Sequence[int],
    file_names: Sequence[str] | None = None,
    category_ids: Sequence[int] | None = None,
    as_annotated: bool = False,
) -> dict[str, Any]:
    """``images``, ``annotations`` and ``categories`` of a COCO file for ``ds``: the one
    DetectionSet → COCO JSON conversion, used to write files and to build the evaluation's
    ground truth. Annotation ids start at 1 (COCOeval reads 0 as "unmatched").

    ``category_ids``: per class (default :func:`coco_category_ids`). ``as_annotated``: each
    object as its file gave it (see :func:`coco_annotation`), for evaluation; otherwise as
    repaired when read (boxes clipped to the image), for writing a dataset.
    """
    cats = list(category_ids) if category_ids is not None else coco_category_ids(ds)
    names = file_names if file_names is not None else [r.file for r in ds.records]
    images, annotations = [], []
    for record, name, image_id in zip(ds.records, names, image_ids):
        images.append(
            {"id": image_id, "file_name": name, "width": record.width, "height": record.height}
        )
        bad = record.labels[(record.labels < 0) | (record.labels >= len(ds.classes))]
        if bad.size:
            raise DataError(
                f"{record.file}: class id {int(bad[0])} outside 0..{len(ds.classes) - 1}"
            )
        for k in range(len(record.boxes)):
            category = cats[int(record.labels[k])]
            annotations.append(
                coco_annotation(
                    record, k, image_id, len(annotations) + 1, category, as_annotated
                )
            )
    categories = [
        {"id": c, "name": name, "supercategory": ""} for c, name in zip(cats, ds.classes)
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_annotation(
    record: ImageRecord,
    k: int,
    image_id: int,
    ann_id: int,
    category_id: int,
    as_annotated: bool = False,
) -> dict[str, Any]:
    """Object ``k`` of ``record`` as a COCO annotation; ``area`` is the mask area of its
    segmentation, else the box area.

    ``as_annotated`` (evaluation): the box as the file wrote it (``annotated_boxes``, not the copy
    clipped for training) and the file's own ``area`` when it gave one — what COCOeval's
    small/medium/large split reads — so evaluating a COCO file gives its official numbers.
    """
    source = record.boxes
    if as_annotated and record.annotated_boxes is not None:
        source = record.annotated_boxes
    x1, y1, x2, y2 = (float(v) for v in np.asarray(source, dtype=np.float64)[k])
    segmentation = record.segmentations[k]
    if as_annotated and record.areas is not None and np.isfinite(record.areas[k]):
        area = float(record.areas[k])
    elif segmentation is None or (isinstance(segmentation, list) and not segmentation):
        area = (x2 - x1) * (y2 - y1)
    else:
        try:
            area = rle_area(segmentation, record.height, record.width)
        except (TypeError, ValueError, KeyError, IndexError) as e:
            raise DataError(
                f"{record.file}: object {k} has an unreadable segmentation ({e})"
            ) from None
    if segmentation is None:
        segmentation = []
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), bytes):
        segmentation = {**segmentation, "counts": segmentation["counts"].decode("ascii")}
    ann = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": int(category_id),
        "bbox": [x1, y1, x2 - x1, y2 - y1],
        "area": area,
        "iscrowd": int(record.iscrowd[k]),
        "segmentation": segmentation,
    }
    if record.difficult[k]:
        ann["difficult"] = 1
    return ann


def _as_rle(segmentation: Any, height: int, width: int) -> Any:
    return to_rle(segmentation, height, width)  # the one implementation: data/rle.py


def _split_of(json_path: Path) -> str | None:
    """``train``/``val``/``test`` when the file name says so (instances_val2017.json → val)."""
    stem = json_path.stem.lower()
    found = [s for s in SPLITS if s in stem.replace("trainval", "train")]
    return found[0] if len(found) == 1 else None


@DATASETS.register("coco")
class COCOFormat(DetectionFormat):
    """COCO JSON: ``annotations/*.json`` naming images in an image folder."""

    looks_for = "annotations/*.json (COCO) + an image folder, or a COCO .json file"
    priority = 20
    split_help = "a JSON path or {annotations: JSON, images: FOLDER}"

    @classmethod
    def sniff(cls, path: Path) -> bool:
        if path.is_file():
            return path.suffix.lower() == ".json"
        ann = path / "annotations"
        return ann.is_dir() and any(ann.glob("*.json"))

    def _jsons(self, root: Path) -> dict[str | None, Path]:
        files = sorted((root / "annotations").glob("*.json"))
        by_split = {_split_of(f): f for f in files}
        if len(files) == 1:
            return {None: files[0]}
        if None in by_split or len(by_split) != len(files):
            raise DataError(
                f"{root / 'annotations'}: cannot tell which of {[f.name for f in files]} is "
                "train/val/test; name them instances_<split>.json or write a data YAML"
            )
        return by_split

    def read_root(
        self, root: Path, split: str | None, classes: list[str] | None, strict: bool
    ) -> DetectionSet:
        if root.is_file():
            return read_coco(root, classes=classes, strict=strict)
        jsons = self._jsons(root)
        if split not in jsons:
            if split is None or None in jsons:  # one undivided file serves any request
                json_path = next(iter(jsons.values()))
            else:
                raise DataError(f"{root}: no {split!r} annotation file in {root / 'annotations'}")
        else:
            json_path = jsons[split]
        search = [root / "images", root]
        if split is not None:
            search = [
                *sorted(p for p in (root / "images").glob(f"{split}*") if p.is_dir()),
                *sorted(p for p in root.glob(f"{split}*") if p.is_dir()),
                *search,
            ]
        return read_coco(json_path, classes=classes, strict=strict, search=search)

    def root_splits(self, root: Path) -> list[str | None]:
        if root.is_file():
            return [None]
        return [s for s in (*SPLITS, None) if s in self._jsons(root)]

    def write_split(
        self, ds: DetectionSet, out: Path, split: str, copy_images: bool
    ) -> dict[str, Any]:
        return write_coco(ds, out, split=split, copy_images=copy_images)

    def read_source(self, spec: DataSpec, value: Any, strict: bool) -> DetectionSet:
        root = spec.root
        if isinstance(value, str):
            json_rel, images = value, spec.images
        else:
            json_rel, images = value["annotations"], value.get("images", spec.images)
        return read_coco(
            root / json_rel,
            images=root / images if images else None,
            classes=spec.classes,
            strict=strict,
            search=[root / "images", root],
        )

    def split_value_ok(self, value: Any) -> bool:
        if isinstance(value, str):
            return True
        return (
            isinstance(value, dict)
            and set(value) <= {"annotations", "images"}
            and isinstance(value.get("annotations"), str)
        )

    def default_splits(self, spec: DataSpec) -> dict[str, Any]:
        if (spec.root / "annotations").is_dir():
            jsons = self._jsons(spec.root)
            if None not in jsons:
                return {s: str(p.relative_to(spec.root)) for s, p in jsons.items()}
        raise ConfigError(f"{spec.source}: COCO needs 'train: <annotation json>'")
