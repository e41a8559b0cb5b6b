"""A prediction file scored against labels: ``visbricks eval --predictions PRED LABELS``.

How methods are compared on the benchmarks: a submission in the benchmark's own layout is scored
by the official computation against the labels. One function per layout, each returning a
:class:`Scored` (the :class:`~.base.EvalResult` ``eval`` prints and saves, plus what was
skipped, counted):

- ``tusimple`` (:func:`score_tusimple`): JSON lines as the benchmark submits them,
  ``{"raw_file", "lanes", "h_samples"?, "run_time"?}`` (per lane the x at each label row,
  negative: no point; ``run_time`` in ms), against TuSimple label JSON lines (a
  ``test_label.json``, or a folder / data YAML of them) by ``lane.py``'s rules
  (:func:`~.lanes.tusimple_image`: > 200 ms or > G + 2 lanes score 0, ...). As in ``lane.py`` the
  x values are at the label's rows: other ``h_samples`` or another number of values is an error
  naming the line.
- ``culane`` (:func:`score_culane`): a folder of ``<image path>.lines.txt`` mirroring the image
  paths (the CULane evaluator's prediction folder), against a CULane dataset (``list/<split>.txt``)
  or one list file (``list/test_split/test0_normal.txt`` scores one scenario), by
  :func:`~.lanes.culane_image` (30 px, IoU > 0.5).
- ``coco`` (:func:`score_coco`): a COCO results JSON (``[{image_id, category_id, bbox, score}]``,
  with an RLE ``segmentation`` for masks) against a COCO annotation JSON, or any detection
  dataset the project reads (its image ids are then :func:`~.coco.coco_image_ids`, the ids
  ``eval``'s ``coco_results.json`` uses): the 12 COCOeval stats for boxes, and for masks
  (iouType ``segm``, keys ``segm_*``) when the results and the labels both have masks.
- ``masks`` (:func:`score_masks`): a folder of class-index PNGs (given ``predict``'s output
  folder, its ``masks/`` sub-folder), matched to the labels by file stem, against a mask dataset
  or a plain folder of label PNGs, into one confusion matrix
  (:class:`~.segmentation.SegmentationEvaluator`: mIoU, per-class IoU, pixel accuracy).

What does not match is counted, not silently dropped. A labelled image without a prediction
counts as predicting nothing for the lane layouts (no lanes: CULane's evaluator does the same
with a missing file; ``lane.py`` would refuse the whole file) and is left out for ``masks``
(there is no "nothing" for a class map); either way a warning says how many. A prediction for
an image the labels do not have is an error for the one-file layouts (its ids or paths belong to
other labels) and a counted warning for the folder layouts (other files beside the ones scored);
nothing matching at all is an error.

Labels: a dataset folder or data YAML is read at ``split`` as ``eval`` reads it (default ``val``;
a dataset without one is scored on its ``test`` split, and a box or mask dataset without any
split on the seeded hold-out training used); a labels file (TuSimple JSON, COCO JSON, CULane
list, a folder of label PNGs) is scored whole. Metric keys carry the split as ``eval``'s do
(``val/tusimple_acc``; a labels file whose name says ``train``/``val``/``test`` names it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.formats import ProblemLog, find_format, get_format, read_task_split
from ..data.formats.base import SPLITS, is_yaml
from ..data.formats.culane import CULane
from ..data.formats.masks import IGNORE_INDEX, read_mask
from ..data.formats.tusimple import label_files
from ..data.lanes import LaneSet
from ..errors import ConfigError, DataError
from .base import EvalResult, fmt
from .coco import COCO_STAT_NAMES, coco_gt_dict, default_backend, evaluate_coco
from .lanes import (
    CULANE_IOU,
    CULANE_WIDTH,
    TUSIMPLE_MAX_RUN_TIME,
    culane_image,
    prf,
    tusimple_f1,
    tusimple_image,
)
from .segmentation import SegmentationEvaluator

FORMATS = ("tusimple", "culane", "coco", "masks")
# predict's sub-folder of class-index PNGs (tasks/roles/masks.py MASKS_FOLDER; that layer is
# above this one, so the name is repeated here).
PREDICT_MASKS_FOLDER = "masks"


@dataclass
class Scored:
    """One scoring: the ``result`` (metrics keyed ``<split>/name``, the table, files such as
    ``confusion_matrix.png``), what was scored, and the counted warnings."""

    format: str
    result: EvalResult
    images: int  # labelled images scored
    labels: str  # the labels as read: path and split
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- format and labels
def detect_format(predictions: str | Path) -> str:
    """The layout of a prediction file or folder, from its content (see the module docstring)."""
    pred = Path(predictions)
    if not pred.exists():
        raise DataError(f"predictions not found: {pred}")
    if pred.is_dir():
        if next(pred.rglob("*.lines.txt"), None) is not None:
            return "culane"
        if _png_folder(pred) is not None:
            return "masks"
        raise DataError(
            f"cannot tell the format of the prediction folder {pred}: no <image>.lines.txt "
            "(CULane) and no class-index .png (masks) in it; name it with --format"
        )
    first = _first_line(pred)
    if first.startswith("["):
        return "coco"
    if first.startswith("{"):
        try:
            doc = json.loads(first)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and "raw_file" in doc and "lanes" in doc:
            return "tusimple"
        if isinstance(doc, dict) and "annotations" in doc:
            raise DataError(
                f"{pred} is a COCO annotation file, not results: the predictions are a JSON list "
                "of {image_id, category_id, bbox, score}"
            )
    raise DataError(
        f"cannot tell the format of {pred}: expected a COCO results list ('[' first) or TuSimple "
        "JSON lines ({\"raw_file\", \"lanes\", ...}); name it with --format"
    )


def _first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(4096)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file (expected JSON predictions)") from None
    return head.lstrip().split("\n", 1)[0].strip()


def _file_split(path: Path, default: str) -> str:
    """The split a labels file's name says (``test_label.json``, ``instances_val2017.json``,
    TuSimple's ``label_data_*``: train), else ``default``."""
    stem = path.stem.lower().replace("trainval", "train")
    if stem.startswith("label_data"):
        return "train"
    found = [s for s in SPLITS if s in stem]
    return found[0] if len(found) == 1 else default


def _pick_split(found: list[str | None], split: str, where: Path) -> str | None:
    """``split`` when the labels have it; one undivided set: all of it; the default ``val``
    missing: ``test`` (the benchmarks' held-out labels); else an error listing the splits."""
    if split in found:
        return split
    if found == [None]:
        return None
    if split == "val" and "test" in found:
        return "test"
    names = ", ".join(str(s) for s in found)
    raise DataError(f"{where}: no {split!r} split in the labels (they have: {names}); use --split")


def _read_split(labels: Path, kind: str, split: str, **options: Any) -> tuple[Any, str]:
    """``split`` of a dataset as ``eval`` reads it (``read_task_split``: a box or mask set without
    a val split gives the seeded hold-out training used)."""
    found = find_format(labels, kind).splits(labels)
    used = split if found in ([None], ["train"]) else _pick_split(found, split, labels)
    return read_task_split(labels, None, kind, used or split, **options), used or split


def _problems_warning(problems: list[tuple[str, str]], labels: Path) -> list[str]:
    if not problems:
        return []
    file, reason = problems[0]
    return [f"{len(problems)} problem(s) reading {labels} (those images are not scored), e.g. "
            f"{file}: {reason}"]


def _sample(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


# --------------------------------------------------------------------------- TuSimple
@dataclass
class _TuFrame:
    xs: np.ndarray  # (lanes, rows) x per row, negative: no point
    ys: np.ndarray  # the label's h_samples
    line: int
    run_time: float | None = None


def _tusimple_json(line: str, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(line)
    except ValueError as e:
        raise DataError(f"{where}: not a JSON line ({e})") from None
    if not isinstance(doc, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _lane_rows(lanes: Any, rows: int, where: str) -> np.ndarray:
    """(lanes, rows) float x values; a lane with another number of values is an error."""
    if not isinstance(lanes, list):
        raise DataError(f"{where}: 'lanes' is a list of lanes (x per row), got {lanes!r:.40}")
    out = np.zeros((len(lanes), rows))
    for k, lane in enumerate(lanes):
        if not isinstance(lane, list) or len(lane) != rows:
            got = len(lane) if isinstance(lane, list) else type(lane).__name__
            raise DataError(
                f"{where}: lane {k} has {got} x values for the label's {rows} h_samples rows"
            )
        try:
            out[k] = np.asarray(lane, dtype=float)
        except (TypeError, ValueError):
            raise DataError(f"{where}: lane {k} holds a value that is not a number") from None
    return out


def _rows(value: Any, where: str) -> np.ndarray:
    """``h_samples`` as a float vector; anything else is an error naming the line."""
    try:
        return np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{where}: h_samples is a list of row numbers, got {value!r:.40}") from None


def _tusimple_labels(labels: Path, split: str) -> tuple[dict[str, _TuFrame], str, str]:
    """raw_file → label frame, the split, and a description of the labels."""
    if labels.is_file() and not is_yaml(labels):
        files, used = [labels], _file_split(labels, split)
    else:
        by_split = label_files(labels)
        if not by_split:
            raise DataError(
                f"{labels}: no TuSimple label files (JSON lines of lanes, h_samples, raw_file)"
            )
        chosen = _pick_split(list(by_split), split, labels)
        files, used = by_split[chosen], chosen or split
    gts: dict[str, _TuFrame] = {}
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read TuSimple labels {file}: {e}") from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{file}:{n}"
            doc = _tusimple_json(line, where)
            missing = [k for k in ("raw_file", "lanes", "h_samples") if k not in doc]
            if missing:
                raise DataError(f"{where}: a TuSimple label line lacks {', '.join(missing)}")
            ys = _rows(doc["h_samples"], where)
            gts[str(doc["raw_file"])] = _TuFrame(_lane_rows(doc["lanes"], len(ys), where), ys, n)
    if not gts:
        raise DataError(f"{labels}: the TuSimple label files hold no frames")
    names = ", ".join(f.name for f in files)
    return gts, used, f"{labels} ({names})" if labels.is_dir() or is_yaml(labels) else str(labels)


def score_tusimple(predictions: str | Path, labels: str | Path, split: str = "val") -> Scored:
    """A TuSimple submission (JSON lines) against TuSimple labels, by ``lane.py``'s rules."""
    pred, labels = Path(predictions), Path(labels)
    try:
        text = pred.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read TuSimple predictions {pred}: {e}") from None
    # The file's own shape first, so a file of another format is named before the labels are.
    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{pred}:{n}"
        doc = _tusimple_json(line, where)
        if "raw_file" not in doc or "lanes" not in doc:
            raise DataError(
                f"{where}: a TuSimple prediction line is {{\"raw_file\", \"lanes\", "
                "\"run_time\"}} (h_samples optional)"
            )
        docs.append((n, where, doc))
    if not docs:
        raise DataError(f"{pred} holds no prediction lines")
    gts, used, described = _tusimple_labels(labels, split)
    preds: dict[str, _TuFrame] = {}
    for n, where, doc in docs:
        raw = str(doc["raw_file"])
        gt = gts.get(raw)
        if gt is None:
            raise DataError(f"{where}: raw_file {raw!r} is not in the labels {described}")
        if raw in preds:
            raise DataError(f"{where}: raw_file {raw!r} again (first on line {preds[raw].line})")
        if "h_samples" in doc:
            rows = _rows(doc["h_samples"], where)
            if rows.shape != gt.ys.shape or not np.array_equal(rows, gt.ys):
                raise DataError(
                    f"{where}: h_samples differ from the label's for {raw!r}; TuSimple scores "
                    "x values at the label's rows"
                )
        run_time = doc.get("run_time")
        if run_time is not None and (
            isinstance(run_time, bool) or not isinstance(run_time, (int, float))
        ):
            raise DataError(f"{where}: run_time is milliseconds, got {run_time!r}")
        xs = _lane_rows(doc["lanes"], len(gt.ys), where)
        preds[raw] = _TuFrame(xs, gt.ys, n, None if run_time is None else float(run_time))
    acc = fp = fn = 0.0
    slow = 0
    # Prediction-file order, as lane.py adds them, then the frames nobody predicted.
    missing = [raw for raw in gts if raw not in preds]
    for raw in [*preds, *missing]:
        gt, p = gts[raw], preds.get(raw)
        xs = p.xs if p is not None else np.zeros((0, len(gt.ys)))
        run_time = p.run_time if p is not None else None
        slow += run_time is not None and run_time > TUSIMPLE_MAX_RUN_TIME
        a, f, m = tusimple_image(xs, gt.xs, gt.ys, run_time=run_time)
        acc, fp, fn = acc + a, fp + f, fn + m
    n = len(gts)
    acc, fp, fn = acc / n, fp / n, fn / n
    f1 = tusimple_f1(fp, fn)
    metrics = {f"{used}/tusimple_acc": acc, f"{used}/tusimple_fp": fp,
               f"{used}/tusimple_fn": fn, f"{used}/tusimple_f1": f1}
    table = "\n".join([
        f"TuSimple ({n} images)   accuracy   FP       FN       F1",
        f"{'':<22}{fmt(acc)}     {fmt(fp)}   {fmt(fn)}   {fmt(f1)}",
    ])
    warnings = []
    if missing:
        warnings.append(f"{len(missing)} of {n} labelled frames have no prediction line in {pred}: "
                        f"scored as no lanes ({_sample(missing)})")
    if slow:
        warnings.append(f"{slow} frame(s) with run_time > {TUSIMPLE_MAX_RUN_TIME:.0f} ms: "
                        "scored as all wrong (TuSimple's rule)")
    details = {"images": n, "missing": len(missing), "slow": slow}
    return Scored("tusimple", EvalResult(metrics, table, details), n, described, warnings)


# --------------------------------------------------------------------------- CULane
def _culane_list_root(list_file: Path) -> Path:
    """The dataset root of a CULane list file: the folder holding its ``list/`` folder."""
    for parent in list_file.resolve().parents:
        if parent.name == "list":
            return parent.parent
    return list_file.resolve().parent


def _culane_labels(labels: Path, split: str) -> tuple[LaneSet, str, str]:
    reader = get_format("culane")
    if labels.is_file() and labels.suffix == ".txt":  # one list file: a split or a scenario
        root = _culane_list_root(labels)
        log = ProblemLog()
        records = []
        try:
            lines = labels.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read CULane list {labels}: {e}") from None
        for n, line in enumerate(lines, 1):
            if line.split():
                rec = CULane.line_record(root, line.split(), f"{labels.name}:{n}", log)
                if rec is not None:
                    records.append(rec)
        stem = labels.stem[:-3] if labels.stem.endswith("_gt") else labels.stem
        return LaneSet(root, records, log.items), stem, str(labels)
    if labels.is_dir() and not reader.sniff(labels):
        raise DataError(f"{labels}: not a CULane dataset (looked for {reader.looks_for})")
    used = _pick_split(reader.splits(labels), split, labels)
    return reader.read(labels, split=used), used or split, f"{labels} (split {used or 'all'})"


def _read_lines_file(path: Path) -> list[np.ndarray]:
    """The lanes of one CULane ``.lines.txt``; a bad line is an error naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    lanes = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            vals = [float(v) for v in parts]
        except ValueError:
            raise DataError(f"{path}:{n}: not numbers: {line.strip()[:60]!r}") from None
        if len(vals) % 2:
            raise DataError(f"{path}:{n}: {len(vals)} coordinates, expected x y pairs")
        lanes.append(np.asarray(vals, float).reshape(-1, 2))
    return lanes


def score_culane(predictions: str | Path, labels: str | Path, split: str = "val") -> Scored:
    """A folder of ``.lines.txt`` mirroring the image paths against CULane labels."""
    pred, labels = Path(predictions), Path(labels)
    if not pred.is_dir():
        raise DataError(f"CULane predictions are a folder of <image>.lines.txt; {pred} is not")
    ds, used, described = _culane_labels(labels, split)
    if not ds.records:
        raise DataError(f"{described}: no labelled images")
    expected = {Path(r.file).with_suffix(".lines.txt").as_posix(): r for r in ds.records}
    found = {p.relative_to(pred).as_posix() for p in pred.rglob("*.lines.txt")}
    extra = sorted(found - set(expected))
    if not found & set(expected):
        raise DataError(
            f"no .lines.txt in {pred} matches an image of {described} (expected paths such as "
            f"{next(iter(expected))}; found {_sample(sorted(found)) or 'none'})"
        )
    tp = fp = fn = 0
    missing = []
    for rel, rec in expected.items():
        if rel in found:
            lanes = _read_lines_file(pred / rel)
        else:
            lanes = []  # CULane's evaluator: no prediction file, no lanes
            missing.append(rel)
        t, f, m = culane_image(lanes, rec.lanes, (rec.height, rec.width), CULANE_WIDTH, CULANE_IOU)
        tp, fp, fn = tp + t, fp + f, fn + m
    precision, recall, f1 = prf(tp, fp, fn)
    metrics = {f"{used}/culane_precision": precision, f"{used}/culane_recall": recall,
               f"{used}/culane_f1": f1}
    table = (f"CULane ({len(expected)} images, IoU > {CULANE_IOU}, {CULANE_WIDTH:.0f} px)   "
             f"TP {tp}  FP {fp}  FN {fn}   precision {fmt(precision)}  recall {fmt(recall)}  "
             f"F1 {fmt(f1)}")
    warnings = _problems_warning(ds.problems, labels)
    if missing:
        warnings.append(f"{len(missing)} of {len(expected)} labelled images have no .lines.txt "
                        f"in {pred}: scored as no lanes ({_sample(missing)})")
    if extra:
        warnings.append(f"{len(extra)} .lines.txt file(s) in {pred} are not in the labels: "
                        f"not scored ({_sample(extra)})")
    details = {"tp": tp, "fp": fp, "fn": fn, "images": len(expected), "missing": len(missing),
               "extra": len(extra)}
    return Scored("culane", EvalResult(metrics, table, details), len(expected), described,
                  warnings)


# --------------------------------------------------------------------------- COCO
def _coco_labels(labels: Path, split: str) -> tuple[dict[str, Any], str, str]:
    """The COCO ground truth as a dict: a COCO annotation JSON as written, or a detection
    dataset through the project's readers (``coco_gt_dict``)."""
    if labels.is_file() and labels.suffix.lower() == ".json":
        try:
            doc = json.loads(labels.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise DataError(f"cannot read COCO labels {labels}: {e}") from None
        _check_coco_labels(doc, labels)
        return doc, _file_split(labels, split), str(labels)
    ds, used = _read_split(labels, "detection", split)
    return coco_gt_dict(ds), used, f"{labels} (split {used})"


def _check_coco_labels(doc: Any, where: Path) -> None:
    """The keys COCOeval reads, so a wrong file is one line instead of a KeyError inside it."""
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DataError(f"{where}: not a COCO annotation file (images, annotations, categories)")
    for key, needs in (("images", ("id",)), ("categories", ("id",)),
                       ("annotations", ("image_id", "category_id", "bbox"))):
        for k, entry in enumerate(doc[key]):
            if not isinstance(entry, dict) or any(n not in entry for n in needs):
                raise DataError(f"{where}: {key}[{k}] lacks one of {', '.join(needs)}")


def _load_coco_results(pred: Path) -> list[dict[str, Any]]:
    try:
        results = json.loads(pred.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read COCO results {pred}: {e}") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{pred}: not JSON at line {e.lineno} ({e.msg})") from None
    if not isinstance(results, list):
        raise DataError(
            f"{pred}: a COCO results file is a JSON list of {{image_id, category_id, bbox, "
            f"score}}, not a {type(results).__name__}"
        )
    for k, r in enumerate(results):
        if not isinstance(r, dict):
            raise DataError(f"{pred}: detection {k} is not an object")
        missing = [key for key in ("image_id", "category_id", "score") if key not in r]
        if "bbox" not in r and "segmentation" not in r:
            missing.append("bbox (or segmentation)")
        if missing:
            raise DataError(f"{pred}: detection {k} lacks {', '.join(missing)}")
    return results


def score_coco(
    predictions: str | Path, labels: str | Path, split: str = "val", backend: str = "auto"
) -> Scored:
    """A COCO results JSON against COCO labels: boxes, and masks when both sides have them."""
    pred, labels = Path(predictions), Path(labels)
    results = _load_coco_results(pred)
    gt, used, described = _coco_labels(labels, split)
    image_ids = {im["id"] for im in gt["images"]}
    unknown = sorted({r["image_id"] for r in results} - image_ids, key=str)
    if unknown:
        n = sum(r["image_id"] not in image_ids for r in results)
        raise DataError(
            f"{pred}: {n} detection(s) for image ids not in the labels {described} "
            f"(e.g. {unknown[:5]}); results use the annotation file's image ids"
        )
    cat_ids = {c["id"] for c in gt["categories"]}
    unknown = sorted({r["category_id"] for r in results} - cat_ids, key=str)
    if unknown:
        raise DataError(
            f"{pred}: category ids {unknown[:5]} are not in the labels {described} (they have "
            f"{sorted(cat_ids)[:10]})"
        )
    warnings = []
    kinds = []
    if all("bbox" in r for r in results):
        kinds.append("bbox")
    if results and all("segmentation" in r for r in results):
        annotated = [a for a in gt["annotations"] if not a.get("iscrowd")]
        if annotated and all(a.get("segmentation") for a in annotated):
            _check_rles(results, gt, pred)
            kinds.append("segm")
        else:
            warnings.append(f"the results have masks but the labels {described} do not: masks "
                            "not scored (boxes only)")
    if not kinds:
        k = next(i for i, r in enumerate(results) if "bbox" not in r)
        raise DataError(f"{pred}: detection {k} has no bbox, and masks cannot be scored here")
    backend = default_backend() if backend == "auto" else backend
    ground_truth = _CocoDict(gt)
    metrics: dict[str, float] = {}
    lines = []
    for kind in kinds:
        stats = evaluate_coco(ground_truth, results, backend=backend, iou_type=kind)
        tag = "" if kind == "bbox" else "segm_"
        metrics.update({f"{used}/{tag}{name}": v for name, v in stats.items()})
        lines.append(f"COCO {kind} ({backend}; -1: no objects of that size)")
        names = list(COCO_STAT_NAMES)
        for row in (names[:3], names[3:6], names[6:9], names[9:]):
            lines.append("  ".join(f"{n:>9} {stats[n]:6.3f}" for n in row))
    n = len(gt["images"])
    header = f"{len(results)} detections on {n} images"
    details = {"images": n, "detections": len(results), "iou_types": kinds}
    return Scored("coco", EvalResult(metrics, "\n".join([header, *lines]), details), n,
                  described, warnings)


def _check_rles(results: list[dict[str, Any]], gt: dict[str, Any], pred: Path) -> None:
    """Mask results are compressed RLE at their image's size (what COCOeval's mask IoU takes;
    a polygon or another size fails deep inside it)."""
    sizes = {im["id"]: [im.get("height"), im.get("width")] for im in gt["images"]}
    for k, r in enumerate(results):
        rle = r["segmentation"]
        if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
            raise DataError(f"{pred}: detection {k}: segmentation is a COCO RLE "
                            "{size: [h, w], counts}, not a polygon")
        if list(rle["size"]) != sizes[r["image_id"]]:
            raise DataError(f"{pred}: detection {k}: mask size {list(rle['size'])} differs from "
                            f"image {r['image_id']}'s {sizes[r['image_id']]} (height, width)")


class _CocoDict:
    """A ground-truth dict as evaluate_coco takes a COCO object: it reads ``.dataset`` and
    indexes it with the evaluating library's own class (annotation ids <= 0 renumbered)."""

    def __init__(self, dataset: dict[str, Any]) -> None:
        self.dataset = dataset


# --------------------------------------------------------------------------- masks
def _png_folder(folder: Path) -> Path | None:
    """Where a prediction folder's class-index PNGs are: ``predict``'s ``masks/`` sub-folder
    when there is one (the folder itself holds the colour drawings), else the folder."""
    sub = folder / PREDICT_MASKS_FOLDER
    for candidate in (sub, folder):
        if candidate.is_dir() and any(p.suffix.lower() == ".png" for p in candidate.iterdir()):
            return candidate
    return None


def _mask_labels(
    labels: Path, split: str, ignore_index: int | None
) -> tuple[dict[str, Path], list[str] | None, int, str, str, list[str]]:
    """stem → label PNG, class names (None: numbered from the values), ignore index, split,
    description, warnings."""
    try:
        find_format(labels, "segmentation")
    except DataError:
        plain = labels.is_dir() and any(p.suffix.lower() == ".png" for p in labels.iterdir())
        if not plain:
            raise DataError(
                f"{labels}: neither a mask dataset nor a folder of label PNGs"
            ) from None
        pairs = {p.stem: p for p in sorted(labels.iterdir()) if p.suffix.lower() == ".png"}
        names_file = next((labels / n for n in ("class_names.txt", "classes.txt", "labels.txt")
                           if (labels / n).is_file()), None)
        classes = None
        if names_file is not None:
            classes = [s.strip() for s in names_file.read_text(encoding="utf-8").splitlines()
                       if s.strip() and s.strip() != "__ignore__"]
        ignore = IGNORE_INDEX if ignore_index is None else ignore_index
        return pairs, classes, ignore, split, str(labels), []
    options = {} if ignore_index is None else {"ignore_index": ignore_index}
    ds, used = _read_split(labels, "segmentation", split, **options)
    pairs: dict[str, Path] = {}
    for r in ds.records:
        if not r.mask_file:
            continue
        mask = ds.mask_path(r)  # coco_masks' rasterised masks live in a cache, not the root
        # The image's stem is what predict names its maps after; the mask's own stem (CamVid's
        # <stem>_L, a mask suffix) is accepted too.
        for stem in dict.fromkeys((Path(r.file).stem, mask.stem)):
            if stem in pairs and pairs[stem] != mask:
                raise DataError(f"{labels}: two labels share the file stem {stem!r} ({mask}, "
                                f"{pairs[stem]}); predictions are matched by stem")
            pairs[stem] = mask
    return (pairs, list(ds.classes), int(ds.ignore_index), used, f"{labels} (split {used})",
            _problems_warning(ds.problems, labels))


def score_masks(
    predictions: str | Path,
    labels: str | Path,
    split: str = "val",
    ignore_index: int | None = None,
) -> Scored:
    """A folder of class-index PNGs against label PNGs (matched by stem): one confusion matrix."""
    pred, labels = Path(predictions), Path(labels)
    if not pred.is_dir():
        raise DataError(f"mask predictions are a folder of class-index PNGs; {pred} is not")
    if ignore_index is not None and not 0 <= ignore_index <= 255:
        raise ConfigError(f"--ignore-index must be in 0..255, got {ignore_index}")
    folder = _png_folder(pred)
    if folder is None:
        raise DataError(f"no .png class maps in {pred}")
    pairs, classes, ignore, used, described, warnings = _mask_labels(labels, split, ignore_index)
    preds = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() == ".png"}
    matched = [(preds[s], pairs[s]) for s in preds if s in pairs]
    # One label may be reachable by two stems (image and mask): count it once.
    matched = list({label: (p, label) for p, label in matched}.values())
    extra = sorted(f"{s}.png" for s in preds if s not in pairs)
    done = {label for _, label in matched}
    missing = sorted({lbl.name for lbl in pairs.values() if lbl not in done})
    if not matched:
        raise DataError(
            f"no prediction PNG in {folder} matches a label of {described} by file stem "
            f"(predictions: {_sample(sorted(preds))}; labels: {_sample(sorted(pairs))})"
        )

    def read_pair(p: Path, label: Path) -> tuple[np.ndarray, np.ndarray]:
        pm, gm = read_mask(p)[0], read_mask(label)[0]
        if pm.shape != gm.shape:
            raise DataError(
                f"{p}: {pm.shape[1]}x{pm.shape[0]} prediction for the {gm.shape[1]}x{gm.shape[0]}"
                f" label {label}; masks are scored at the label's resolution"
            )
        return pm, gm

    if classes is None:
        # A folder of bare label PNGs names no classes: class_0..class_K, K the largest value
        # on either side (a class only ever predicted still counts, with IoU 0).
        top = -1
        for p, label in matched:
            for values in read_pair(p, label):
                values = values[values != ignore]
                if values.size:
                    top = max(top, int(values.max()))
        classes = [f"class_{i}" for i in range(max(top, 0) + 1)]
    evaluator = SegmentationEvaluator(classes, ignore, prefix=used)
    for p, label in matched:
        pm, gm = read_pair(p, label)
        try:
            evaluator.update(torch.from_numpy(pm)[None], torch.from_numpy(gm)[None])
        except DataError as e:
            raise DataError(
                f"{p}: {e} (the labels have {len(classes)} classes, ignore index {ignore})"
            ) from None
    result = evaluator.compute()
    if missing:
        warnings.append(f"{len(missing)} of {len(done) + len(missing)} labelled images have no "
                        f"prediction PNG in {folder}: not scored ({_sample(missing)})")
    if extra:
        warnings.append(f"{len(extra)} prediction PNG(s) in {folder} match no label: not "
                        f"scored ({_sample(extra)})")
    result.details.update({"images": len(matched), "missing": len(missing), "extra": len(extra)})
    result.table = f"{len(matched)} images, ignore index {ignore}\n{result.table}"
    return Scored("masks", result, len(matched), described, warnings)


# --------------------------------------------------------------------------- dispatch
SCORERS: dict[str, Callable[..., Scored]] = {
    "tusimple": score_tusimple,
    "culane": score_culane,
    "coco": score_coco,
    "masks": score_masks,
}


def score_files(
    predictions: str | Path,
    labels: str | Path,
    layout: str | None = None,
    split: str = "val",
    ignore_index: int | None = None,
) -> Scored:
    """Score ``predictions`` (a file or folder, ``layout`` one of :data:`FORMATS`; None/``auto``:
    detected from its content) against ``labels``. ``ignore_index`` applies to ``masks`` only."""
    pred, labels = check_inputs(predictions, labels)
    name = detect_format(pred) if layout in (None, "auto") else layout
    if name not in SCORERS:
        raise ConfigError(f"unknown prediction format {name!r}; choose one of {', '.join(FORMATS)}")
    if ignore_index is not None and name != "masks":
        raise ConfigError(f"--ignore-index applies to masks predictions, not {name}")
    folder = name in ("culane", "masks")  # the other layouts are one file
    if folder != pred.is_dir():
        want, got = ("a folder", "a file") if folder else ("a file", "a folder")
        raise DataError(f"{name} predictions are {want}; {pred} is {got}")
    if name == "masks":
        return score_masks(pred, labels, split, ignore_index)
    return SCORERS[name](pred, labels, split)


def check_inputs(predictions: str | Path, labels: str | Path) -> tuple[Path, Path]:
    """Both paths, ``~`` expanded; a missing one is a DataError naming it."""
    pred, labels = Path(predictions).expanduser(), Path(labels).expanduser()
    if not pred.exists():
        raise DataError(f"predictions not found: {pred}")
    if not labels.exists():
        raise DataError(f"labels not found: {labels}")
    return pred, labels


def default_out(predictions: str | Path, labels: str | Path) -> Path:
    """``<predictions stem>-eval/`` beside the predictions; in the working folder instead when
    that would lie inside the labels' folder (outputs never mix with a dataset)."""
    pred, labels = Path(predictions).expanduser(), Path(labels).expanduser()
    name = f"{pred.name if pred.is_dir() else pred.stem}-eval"
    out = pred.parent / name
    if out.resolve().is_relative_to(labels_folder(labels).resolve()):
        return Path(name)
    return out


def labels_folder(labels: str | Path) -> Path:
    """The folder the labels live in (a labels file: its folder)."""
    labels = Path(labels).expanduser()
    return labels if labels.is_dir() else labels.parent


__all__ = [
    "FORMATS",
    "Scored",
    "check_inputs",
    "default_out",
    "detect_format",
    "labels_folder",
    "score_coco",
    "score_culane",
    "score_files",
    "score_masks",
    "score_tusimple",
]
