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

from ...errors import DataError
from ..io import image_size, safe_join
from ..records import DetectionSet, ImageRecord
from ._common import LABELME_MARKERS, ProblemLog, place_image, repair_boxes, unique_names


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
    data = _load(json_path)
    images_dir = Path(images) if images is not None else _guess_images(json_path, data, search)
    if not images_dir.is_dir():
        raise DataError(f"COCO image folder not found: {images_dir} (for {json_path})")
    log = ProblemLog(strict)
    names, cat_to_label = _categories(data, json_path, classes)
    by_id = _images(data, images_dir, log)
    listed = {im.get("id") for im in data["images"] if isinstance(im, dict)}
    objects: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in by_id}
    for ann in data.get("annotations", []):
        if not isinstance(ann, dict):
            log.add(json_path.name, f"annotation entry {ann!r} is not an object; skipped")
        elif ann.get("image_id") not in listed:
            log.add(
                json_path.name,
                f"annotation {ann.get('id')} refers to unknown image_id "
                f"{ann.get('image_id')}; skipped",
            )
        elif ann["image_id"] in by_id:  # else its image was skipped, and reported, above
            _add_annotation(ann, by_id[ann["image_id"]], cat_to_label, objects, log)

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
        records.append(record)
    return DetectionSet(root=images_dir, classes=names, records=records, problems=log.items)


def _load(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DataError(f"COCO annotation file not found: {path}") from None
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read COCO annotation file {path}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path} is not a COCO annotation file: it has no 'images' list")
    return data


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
        if width <= 0 or height <= 0:
            try:
                width, height = image_size(path)
            except DataError as e:
                log.add(file_name, f"no width/height and unreadable image: {e}; skipped")
                continue
        rel = path.relative_to(images_dir.resolve()).as_posix()
        by_id[image_id] = ImageRecord(file=rel, width=width, height=height, image_id=image_id)
    return by_id


def _add_annotation(
    ann: dict[str, Any],
    record: ImageRecord,
    cat_to_label: dict[int, int],
    objects: dict[int, list[dict[str, Any]]],
    log: ProblemLog,
) -> None:
    ann_id = ann.get("id")
    where = f"annotation {ann_id}"
    category = ann.get("category_id")
    if category not in cat_to_label:
        log.add(record.file, f"{where}: unknown class (category_id {category}); dropped")
        return
    segmentation = ann.get("segmentation") or None
    box = ann.get("bbox")
    try:
        if isinstance(box, list) and len(box) == 4:
            x, y, w, h = (float(v) for v in box)
        elif segmentation is not None:
            # Some exporters write only masks: the box is the mask's extent.
            rle = _as_rle(segmentation, record.height, record.width)
            x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
        else:
            raise ValueError("neither a 4-number bbox nor a segmentation")
    except (TypeError, ValueError, KeyError) as e:
        log.add(record.file, f"{where}: unusable box ({e}); dropped")
        return
    xyxy = [x, y, x + w, y + h]
    objects[record.image_id].append(
        {
            "id": ann_id,
            "box": xyxy,
            "label": cat_to_label[category],
            "iscrowd": bool(ann.get("iscrowd", 0)),
            "difficult": bool(ann.get("difficult", 0)),
            "segmentation": segmentation,
        }
    )


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

    images, annotations = [], []
    for record, name, image_id in zip(ds.records, names, ids):
        place_image(ds.root / record.file, out / images_rel / name, copy_images)
        images.append(
            {"id": image_id, "file_name": name, "width": record.width, "height": record.height}
        )
        for i in range(len(record.boxes)):
            annotations.append(_annotation(record, i, image_id, len(annotations) + 1))
    payload = {
        "info": {"description": f"written by visbricks, split {split}"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(ds.classes)
        ],
    }
    path = out / json_rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload), encoding="utf-8")
    return {split: {"annotations": json_rel, "images": images_rel}}


def _annotation(record: ImageRecord, i: int, image_id: int, ann_id: int) -> dict[str, Any]:
    x1, y1, x2, y2 = (float(v) for v in record.boxes[i])
    segmentation = record.segmentations[i]
    if segmentation is None:
        area = (x2 - x1) * (y2 - y1)
        segmentation = []
    else:
        area = float(mask_utils.area(_as_rle(segmentation, record.height, record.width)))
        if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), bytes):
            segmentation = {**segmentation, "counts": segmentation["counts"].decode("ascii")}
    ann = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": int(record.labels[i]) + 1,
        "bbox": [x1, y1, x2 - x1, y2 - y1],
        "area": area,
        "iscrowd": int(record.iscrowd[i]),
        "segmentation": segmentation,
    }
    if record.difficult[i]:
        ann["difficult"] = 1
    return ann


def _as_rle(segmentation: Any, height: int, width: int) -> Any:
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation
