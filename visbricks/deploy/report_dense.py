"""Error views of the dense tasks (``segment``, ``depth``, ``lanes``) for the run report.

- segment: the images of lowest IoU (mean over the classes in their truth or prediction), drawn
  as prediction overlay | truth overlay | error map (wrong pixels red);
- depth: the frames of highest abs_rel (median-scaled, as the metric), drawn as input |
  predicted depth | true depth | relative error;
- lanes: the frames with the most false-positive plus missed lanes (CULane's lane IoU
  matching), truth and prediction drawn on the original image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.draw import colorize_depth, draw_lanes, draw_masks, overlay_mask
from ..data.io import read_image, safe_join
from ..data.normalize import to_image
from ..metrics.base import EvalResult
from ..metrics.errors import depth_frame, error_mask, image_iou, lane_errors
from ..metrics.lanes import CULANE_IOU, CULANE_REFERENCE_WIDTH
from ..metrics.segmentation import IGNORE_INDEX
from .report_views import LIMIT, ErrorView, Gallery, Item, Worst, fit, network_image, side_by_side

ERROR_VMAX = 0.5  # relative depth error shown brightest (50 % off and more)


def _background(classes: list[str]) -> int | None:
    """Class 0 when it is a background class (left undrawn in overlays), else None."""
    return 0 if classes and classes[0].strip("_").lower() in ("background", "bg") else None


class SegmentView(ErrorView):
    def __init__(self, task: Any, dataset: Any, limit: int = LIMIT) -> None:
        super().__init__(task, dataset, limit)
        self.classes = list(task.classes)
        self.worst = Worst(limit)

    def collect(self, batch: dict, predictions: Any, targets: Any, start: int) -> None:
        if isinstance(predictions, list):
            # eval.resolution=original: one map per image at its own size, drawn on the photo.
            for j, (p, t) in enumerate(zip(predictions, targets)):
                pred, truth = p.detach().cpu().numpy(), t.detach().cpu().numpy()
                iou = image_iou(pred, truth, len(self.classes), IGNORE_INDEX)
                self.worst.offer(
                    1.0 - iou,
                    lambda p=pred, t=truth, i=start + j, iou=iou: self._original_item(p, t, i, iou),
                )
            return
        preds = predictions.detach().cpu().numpy()
        truths = targets.detach().cpu().numpy()
        for j in range(len(preds)):
            iou = image_iou(preds[j], truths[j], len(self.classes), IGNORE_INDEX)
            self.worst.offer(
                1.0 - iou, lambda j=j, iou=iou: self._item(batch, preds, truths, j, start + j, iou)
            )

    def _original_item(self, pred: np.ndarray, truth: np.ndarray, index: int, iou: float) -> Item:
        rec = self.dataset.records[index]
        file = safe_join(self.dataset.dataset.root, rec.file)
        return self._drawn(pred, truth, index, iou, lambda: read_image(file))

    def _item(self, batch: dict, preds: Any, truths: Any, j: int, index: int, iou: float) -> Item:
        # The letterboxed input cropped to the image's own window (padding is ignored anyway).
        h, w = batch["orig_size"][j]
        scale, pad_x, pad_y = batch["letterbox"][j]
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        window = (slice(pad_y, pad_y + nh), slice(pad_x, pad_x + nw))
        image = network_image(self.task, batch["image"][j])[window].copy()
        pred, truth = preds[j][window].copy(), truths[j][window].copy()
        return self._drawn(pred, truth, index, iou, lambda: image)

    def _drawn(
        self, pred: np.ndarray, truth: np.ndarray, index: int, iou: float, photo: Any
    ) -> Item:
        """The record and drawing of one image; ``photo()`` gives the RGB image the maps are
        the size of (the network's input window, or the original photo)."""
        wrong = error_mask(pred, truth, IGNORE_INDEX)
        valid = truth != IGNORE_INDEX
        rec = self.dataset.records[index]
        record = {
            "index": index,
            "file": str(safe_join(self.dataset.dataset.root, rec.file)),
            "mask_file": str(self.dataset.dataset.mask_path(rec)),
            "iou": round(iou, 5),
            "wrong_pixels": round(float(wrong.sum() / max(valid.sum(), 1)), 5),
            "truth_pixels": self._shares(truth),
            "predicted_pixels": self._shares(pred),
        }

        def draw() -> np.ndarray:
            bg = _background(self.classes)
            image = photo()
            panels = [
                overlay_mask(image, pred, alpha=0.55, background=bg),
                overlay_mask(image, truth, alpha=0.55, background=bg),
                draw_masks((image * 0.5).astype(np.uint8), wrong, [0], alpha=0.9),
            ]
            return side_by_side([fit(p, 128)[0] for p in panels])

        return Item(f"IoU {iou:.3f}, {record['wrong_pixels']:.1%} pixels wrong", record, draw)

    def _shares(self, mask: np.ndarray) -> dict[str, float]:
        counts = np.bincount(mask[mask != IGNORE_INDEX].ravel(), minlength=len(self.classes))
        total = max(int(counts.sum()), 1)
        return {
            self.classes[c]: round(float(counts[c]) / total, 4)
            for c in np.flatnonzero(counts)
            if c < len(self.classes)
        }

    def galleries(self, result: EvalResult) -> list[Gallery]:
        note = (
            "Lowest image IoU first (mean over the classes in the image's truth or prediction). "
            "Panels: prediction overlay, truth overlay, error map (wrong pixels red; ignored "
            "pixels never count)."
        )
        return [Gallery("worst-iou", "Worst-IoU images", note, self.worst.items())]


class DepthView(ErrorView):
    def __init__(self, task: Any, dataset: Any, limit: int = LIMIT) -> None:
        super().__init__(task, dataset, limit)
        e = task.cfg.eval
        self.min_depth, self.max_depth = float(e.min_depth), float(e.max_depth)
        self.worst = Worst(limit)

    def collect(self, batch: dict, predictions: Any, targets: Any, start: int) -> None:
        disp = predictions.detach().float().cpu().numpy()
        gts = targets["depth"].detach().float().cpu().numpy()
        for j in range(len(disp)):
            abs_rel, depth, error = depth_frame(
                gts[j, 0], disp[j, 0], self.min_depth, self.max_depth
            )
            image = targets["image"][j]
            self.worst.offer(
                abs_rel,
                lambda j=j, a=abs_rel, d=depth, e=error, im=image: self._item(
                    start + j, a, to_image(im), d, gts[j, 0].copy(), e
                ),
            )

    def _item(
        self,
        index: int,
        abs_rel: float,
        image: np.ndarray,
        depth: np.ndarray,
        gt: np.ndarray,
        error: np.ndarray,
    ) -> Item:
        name, frame = self.dataset.samples[index]
        valid = (gt > self.min_depth) & (gt < self.max_depth)
        record = {
            "index": index,
            "sequence": name,
            "frame": int(frame),
            "abs_rel": round(abs_rel, 5),
            "predicted_depth_median": round(float(np.median(depth[valid])), 4),
            "true_depth_median": round(float(np.median(gt[valid])), 4),
        }

        def draw() -> np.ndarray:
            gt_disp = np.where(valid, 1.0 / np.maximum(gt, 1e-6), 0.0)
            vmax = float(np.percentile(gt_disp[valid], 95))
            panels = [
                image,
                colorize_depth(1.0 / depth, vmax),
                colorize_depth(gt_disp, vmax),
                colorize_depth(error, ERROR_VMAX),
            ]
            return side_by_side([fit(p, 128)[0] for p in panels])

        return Item(f"abs_rel {abs_rel:.3f}: {name} frame {frame}", record, draw)

    def galleries(self, result: EvalResult) -> list[Gallery]:
        note = (
            "Highest abs_rel first (prediction median-scaled to the truth, as the metric). "
            "Panels: input, predicted depth, true depth (one colour scale, near = bright; "
            f"black: no truth), relative error |gt - pred| / gt (bright = {ERROR_VMAX:.0%} off "
            "or more)."
        )
        return [Gallery("worst-abs-rel", "Worst abs_rel frames", note, self.worst.items())]


class LanesView(ErrorView):
    def __init__(self, task: Any, dataset: Any, limit: int = LIMIT) -> None:
        super().__init__(task, dataset, limit)
        e = task.cfg.eval
        self.width, self.scaled = float(e.culane_width), bool(e.scale_to_image)
        self.worst = Worst(limit)
        self.totals = {"images": 0, "fp": 0, "fn": 0}

    def collect(self, batch: dict, predictions: Any, targets: Any, start: int) -> None:
        for j, (p, t) in enumerate(zip(predictions, targets)):
            h, w = (int(v) for v in t["size"])
            width = self.width * w / CULANE_REFERENCE_WIDTH if self.scaled else self.width
            pairs, fp, fn = lane_errors(p["lanes"], t["lanes"], (h, w), width, CULANE_IOU)
            self.totals["images"] += 1
            self.totals["fp"] += len(fp)
            self.totals["fn"] += len(fn)
            if fp or fn:
                file = batch["file"][j]
                self.worst.offer(
                    len(fp) + len(fn),
                    lambda p=p, t=t, j=j, f=file, m=(pairs, fp, fn): self._item(
                        start + j, f, p["lanes"], t["lanes"], *m
                    ),
                )

    def _item(
        self, index: int, file: str, pred: list, truth: list, pairs: list, fp: list, fn: list
    ) -> Item:
        path = safe_join(self.dataset.set.root, file)
        record = {
            "index": index,
            "file": str(path),
            "false_positives": len(fp),
            "missed": len(fn),
            "matched": len(pairs),
            "predicted_lanes": [np.round(np.asarray(ln, float), 1).tolist() for ln in pred],
            "true_lanes": [np.round(np.asarray(ln, float), 1).tolist() for ln in truth],
            "false_positive_lanes": fp,
            "missed_lanes": fn,
        }

        def draw() -> np.ndarray:
            image, s = fit(read_image(path), 320, 640)
            thick = max(4, image.shape[1] // 100)
            missed = set(fn)
            t_colors = [4 if i in missed else 1 for i in range(len(truth))]  # orange, green
            out = draw_lanes(image, [np.asarray(ln) * s for ln in truth], t_colors, thick, 0)
            p_colors = [0 if i in set(fp) else 3 for i in range(len(pred))]  # red, blue
            return draw_lanes(out, [np.asarray(ln) * s for ln in pred], p_colors, 2, 3)

        return Item(f"{len(fp)} FP, {len(fn)} missed lanes", record, draw)

    def galleries(self, result: EvalResult) -> list[Gallery]:
        t = self.totals
        note = (
            "Most false-positive plus missed lanes first (CULane's lane-IoU matching). Truth: "
            "thick lines, green matched, orange missed. Predictions: thin lines with dots, blue "
            f"matched, red false positive. Over {t['images']} frames: {t['fp']} false "
            f"positives, {t['fn']} missed."
        )
        return [Gallery("lane-errors", "Frames by lane errors", note, self.worst.items())]
