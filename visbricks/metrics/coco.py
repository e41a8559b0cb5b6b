"""COCO box and mask metrics (AP, AP50, AP75, AP/AR by size, AR@1/10/100) through pycocotools.

The numbers come from pycocotools' ``COCOeval`` itself, never from a re-implementation, so they are
the numbers papers report. The ground truth is built once per evaluation straight from a
:class:`~visbricks.data.records.DetectionSet` (the annotations as read, not as a dataset's
transforms would return them), and predictions are expected in original-image pixels.

Conventions of the ground truth built here, chosen so that evaluating a COCO file through
visbricks gives the numbers pycocotools gives on that same file:

- category ids are the dataset's own (``DetectionSet.category_ids``: a COCO file's ids, sparse
  or not), else ``1..C`` (class id + 1) for formats without ids (VOC, YOLO); results are
  written with the same ids, so ``coco_results.json`` scores against the original file;
- image ids come from :func:`coco_image_ids`;
- boxes are the boxes as annotated (``ImageRecord.annotated_boxes``), not the copies clipped to
  the image for training;
- ``area`` is the annotation's own ``area`` when the file has one (official COCO areas are mask
  areas from the original polygons, not pixel counts), else the mask area when the object has a
  segmentation, else the box area. COCOeval splits small/medium/large on this field;
- VOC ``difficult`` objects are ordinary objects here: COCO has no such notion (``iscrowd``
  regions, which COCO ignores, are a different thing and are kept as they are).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.formats.coco import coco_category_ids, coco_dict
from ..data.records import DetectionSet
from ..errors import ConfigError, DataError
from .voc import prediction_arrays

# Names for COCOeval.stats, in its order. A value of -1 is pycocotools' "no ground truth in this
# area range" (e.g. APs on a dataset without small objects) and is passed through unchanged.
COCO_STAT_NAMES: tuple[str, ...] = (
    "AP",  # AP averaged over IoU 0.50:0.05:0.95, all areas, 100 detections per image
    "AP50",
    "AP75",
    "AP_small",  # area < 32^2
    "AP_medium",  # 32^2 <= area < 96^2
    "AP_large",  # area >= 96^2
    "AR1",  # recall with at most 1 detection per image, averaged over IoU 0.50:0.95
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)

BACKENDS = ("auto", "pycocotools", "faster_coco_eval")


def default_backend() -> str:
    """``faster_coco_eval`` when installed (same numbers, several times faster), else
    ``pycocotools``: what ``backend="auto"`` means."""
    import importlib.util

    return "faster_coco_eval" if importlib.util.find_spec("faster_coco_eval") else "pycocotools"


def category_ids(dataset: DetectionSet) -> list[int]:
    """The COCO category id of each class: the dataset's own, else class id + 1."""
    return coco_category_ids(dataset)


def coco_image_ids(dataset: DetectionSet) -> list[int]:
    """The COCO image id of each record: its own ``image_id`` when these are unique (a COCO file
    read back keeps its ids), else ``1..N`` in record order (VOC/YOLO readers leave them at 0)."""
    ids = [int(r.image_id) for r in dataset.records]
    return ids if len(set(ids)) == len(ids) else list(range(1, len(ids) + 1))


def coco_gt_dict(dataset: DetectionSet) -> dict[str, Any]:
    """The COCO ground-truth JSON (as a dict) for a DetectionSet (see the module docstring)."""
    data = coco_dict(dataset, coco_image_ids(dataset), as_annotated=True)
    for ann in data["annotations"]:
        if not ann["segmentation"]:
            del ann["segmentation"]  # no mask: the ground truth of a box evaluation needs none
    return data


def build_coco_gt(dataset: DetectionSet, verbose: bool = False) -> COCO:
    """A pycocotools ``COCO`` ground truth for ``dataset`` (see the module docstring)."""
    coco = COCO()
    coco.dataset = coco_gt_dict(dataset)
    with _quiet(verbose):
        coco.createIndex()
    return coco


def predictions_to_coco_results(
    predictions: Sequence[Any],
    image_ids: Sequence[int],
    category_ids: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """The COCO results list (``image_id, category_id, bbox xywh, score``) of per-image predictions.

    ``predictions[i]`` is ``{"boxes": (N, 4) XYXY original-image pixels, "labels", "scores"}`` for
    image ``image_ids[i]``. Class id ``c`` becomes category ``category_ids[c]``, by default
    ``c + 1``; pass :func:`category_ids` of the dataset to score against its own file.
    """
    if len(predictions) != len(image_ids):
        raise DataError(
            f"{len(predictions)} prediction entries for {len(image_ids)} image ids; give one "
            "(possibly empty) prediction per image"
        )
    num_classes = len(category_ids) if category_ids is not None else None
    results = []
    for i, (pred, image_id) in enumerate(zip(predictions, image_ids)):
        boxes, labels, scores = prediction_arrays(pred, num_classes, f"predictions[{i}]")
        for box, label, score in zip(boxes.tolist(), labels.tolist(), scores.tolist()):
            cat = int(category_ids[label]) if category_ids is not None else label + 1
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": cat,
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "score": score,
                }
            )
    return results


def write_results_json(
    predictions: Sequence[Any],
    image_ids: Sequence[int],
    path: str | Path,
    category_ids: Sequence[int] | None = None,
) -> Path:
    """Write :func:`predictions_to_coco_results` as a standard COCO results JSON file."""
    from ..files import atomic_write_text

    path = Path(path)
    results = predictions_to_coco_results(predictions, image_ids, category_ids)
    atomic_write_text(path, json.dumps(results))
    return path


@contextlib.contextmanager
def _quiet(verbose: bool):
    # pycocotools prints progress and the summary table on stdout; keep it out of logs by default.
    if verbose:
        yield
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def _load_results(
    results: str | Path | Sequence[dict[str, Any]], iou_type: str = "bbox"
) -> list[dict[str, Any]]:
    if isinstance(results, (str, Path)):
        try:
            loaded = json.loads(Path(results).read_text())
        except FileNotFoundError:
            raise DataError(f"COCO results file not found: {results}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"cannot read COCO results file {results}: {e}") from None
        if not isinstance(loaded, list):
            raise DataError(f"{results}: a COCO results file is a JSON list of detections")
        where = str(results)
    else:
        loaded, where = list(results), "results"
    # loadRes adds keys to the dicts it is given; copies keep the caller's list untouched.
    out = []
    # A segm result needs its mask, not a box (loadRes derives the box from the RLE).
    shape_key = "segmentation" if iou_type == "segm" else "bbox"
    for k, r in enumerate(loaded):
        missing = [key for key in ("image_id", "category_id", shape_key, "score") if key not in r]
        if missing:
            raise DataError(f"{where}: detection {k} lacks {missing}")
        if "bbox" in r and len(r["bbox"]) != 4:
            raise DataError(f"{where}: detection {k} has bbox {r['bbox']}, expected [x, y, w, h]")
        out.append(dict(r))
    return out


def _check_ids(gt: Any, results: list[dict[str, Any]], where: str) -> None:
    unknown_images = {r["image_id"] for r in results} - set(gt.getImgIds())
    if unknown_images:
        raise DataError(
            f"{where}: image ids {sorted(unknown_images)[:5]} are not in the ground truth; "
            "use coco_image_ids(dataset) for the ids"
        )
    unknown_cats = {r["category_id"] for r in results} - set(gt.getCatIds())
    if unknown_cats:
        raise DataError(
            f"{where}: category ids {sorted(unknown_cats)[:5]} are not in the ground truth "
            f"(which has {sorted(gt.getCatIds())[:10]}...); write results with "
            "category_ids(dataset)"
        )


def _backend(name: str) -> tuple[type, type]:
    if name == "auto":
        name = default_backend()
    if name == "pycocotools":
        return COCO, COCOeval
    if name == "faster_coco_eval":
        try:
            from faster_coco_eval import COCO as FastCOCO
            from faster_coco_eval import COCOeval_faster
        except ImportError:
            raise ConfigError(
                "backend 'faster_coco_eval' is not installed: pip install faster-coco-eval"
            ) from None
        return FastCOCO, COCOeval_faster
    raise ConfigError(f"unknown COCO backend '{name}'; choose one of {BACKENDS}")


def _ground_truth(gt: DetectionSet | COCO, coco_cls: type) -> Any:
    if isinstance(gt, DetectionSet):
        data = coco_gt_dict(gt)
    elif hasattr(gt, "dataset"):
        data = gt.dataset
        anns = data.get("annotations", [])
        if any(a.get("id", 0) <= 0 for a in anns):
            # COCOeval records a match as the matched annotation's id and reads 0 as "unmatched",
            # so a file numbering annotations from 0 (labelme's export does) would silently turn
            # hits on that annotation into false positives. Ids carry no other meaning: renumber.
            data = {**data, "annotations": [{**a, "id": k + 1} for k, a in enumerate(anns)]}
        elif coco_cls is COCO and isinstance(gt, COCO):
            return gt  # already indexed by the library that will evaluate it
    else:
        raise ConfigError(f"ground truth must be a DetectionSet or a COCO object, got {type(gt)}")
    # Both backends' COCO classes index a dataset dict the same way.
    coco = coco_cls()
    coco.dataset = data
    coco.createIndex()
    return coco


def evaluate_coco(
    gt: DetectionSet | COCO,
    results: str | Path | Sequence[dict[str, Any]],
    backend: str = "auto",
    verbose: bool = False,
    iou_type: str = "bbox",
) -> dict[str, float]:
    """COCO box (or mask) metrics: the 12 ``COCOeval.stats`` named as in :data:`COCO_STAT_NAMES`.

    ``gt``: a DetectionSet (its COCO ground truth is built here, once) or a ready ``COCO`` object
    (annotation ids <= 0 are renumbered first, see ``_ground_truth``).
    ``results``: a COCO results JSON path or list (see :func:`write_results_json`); every image and
    category id must exist in ``gt``. No detections at all gives 0.0 for every metric that has
    ground truth (pycocotools' ``loadRes`` would crash). -1 is pycocotools' "no ground truth in
    this area range" and is passed through. ``backend``: ``"auto"`` (faster-coco-eval's C++
    evaluator when installed, same numbers; else pycocotools), ``"pycocotools"`` or
    ``"faster_coco_eval"``. ``iou_type``: ``"bbox"`` or ``"segm"`` (mask IoU: every result needs
    an RLE ``segmentation`` and the ground truth's objects their masks).
    """
    if iou_type not in ("bbox", "segm"):
        raise ConfigError(f"unknown COCO iou_type {iou_type!r}; choose 'bbox' or 'segm'")
    coco_cls, eval_cls = _backend(backend)
    with _quiet(verbose):
        gt_coco = _ground_truth(gt, coco_cls)
        dets = _load_results(results, iou_type)
        _check_ids(gt_coco, dets, str(results) if isinstance(results, (str, Path)) else "results")
        if dets:
            dt_coco = gt_coco.loadRes(dets)
        else:
            dt_coco = coco_cls()
            dt_coco.dataset = {
                "images": list(gt_coco.dataset["images"]),
                "categories": list(gt_coco.dataset["categories"]),
                "annotations": [],
            }
            dt_coco.createIndex()
        evaluator = eval_cls(gt_coco, dt_coco, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = np.asarray(evaluator.stats, dtype=np.float64)[: len(COCO_STAT_NAMES)]
    return {name: float(v) for name, v in zip(COCO_STAT_NAMES, stats)}
