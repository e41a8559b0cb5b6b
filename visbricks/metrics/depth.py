"""Depth-estimation metrics as reported by Eigen et al. and Monodepth2's evaluation.

Definitions (over the valid pixels of one image, gt and pred in metres):
abs_rel = mean |gt - pred| / gt, sq_rel = mean (gt - pred)^2 / gt,
rmse = sqrt(mean (gt - pred)^2), rmse_log = sqrt(mean (log gt - log pred)^2),
a1/a2/a3 = fraction of pixels with max(gt/pred, pred/gt) < 1.25, 1.25^2, 1.25^3.

`evaluate_depth` averages these per-image values over images (as Monodepth2 does), so every
image weighs the same whatever its number of valid ground-truth pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.draw import colorize_depth
from ..data.normalize import to_image
from ..errors import ConfigError, DataError
from .base import EvalResult, Evaluator

__all__ = ["DEPTH_METRICS", "DepthEvaluator", "compute_depth_errors", "evaluate_depth"]

DEPTH_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")

ArrayLike = np.ndarray | torch.Tensor


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def compute_depth_errors(gt: ArrayLike, pred: ArrayLike) -> dict[str, float]:
    """The seven standard errors between matching arrays of positive depths (any shape)."""
    gt, pred = _to_numpy(gt).ravel(), _to_numpy(pred).ravel()
    if gt.shape != pred.shape or gt.size == 0:
        raise DataError(
            f"need equally sized, non-empty depth arrays; got {gt.size} and {pred.size}"
        )
    if not (np.all(gt > 0) and np.all(pred > 0)):
        raise DataError("depths must be positive for the relative and log errors")
    thresh = np.maximum(gt / pred, pred / gt)
    diff = gt - pred
    return {
        "abs_rel": float(np.mean(np.abs(diff) / gt)),
        "sq_rel": float(np.mean(diff**2 / gt)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25**2)),
        "a3": float(np.mean(thresh < 1.25**3)),
    }


def _as_list(maps: ArrayLike | Sequence[ArrayLike], name: str) -> list[np.ndarray]:
    """Per-image 2D arrays from a batch (N,H,W)/(N,1,H,W) or a sequence of (H,W)/(1,H,W)."""
    if isinstance(maps, np.ndarray | torch.Tensor):
        arr = _to_numpy(maps)
        if arr.ndim == 4 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 3:
            raise DataError(f"{name} must be (N, H, W) or (N, 1, H, W); got {arr.shape}")
        return list(arr)
    out = []
    for i, m in enumerate(maps):
        arr = _to_numpy(m)
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2:
            raise DataError(f"{name}[{i}] must be (H, W) or (1, H, W); got {arr.shape}")
        out.append(arr)
    return out


def resize_to(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``arr`` (H, W) resized to ``size`` as the depth metrics do (error analyses reuse it)."""
    # Bilinear with pixel-centre alignment, matching cv2.resize(INTER_LINEAR) in Monodepth2.
    t = torch.from_numpy(arr)[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def evaluate_depth(
    gt_depths: ArrayLike | Sequence[ArrayLike],
    pred_depths_or_disps: ArrayLike | Sequence[ArrayLike],
    min_depth: float,
    max_depth: float,
    median_scaling: bool = True,
    pred_is_disp: bool = False,
) -> dict[str, float]:
    """Mean per-image depth metrics of predictions against ground truth.

    For each image: valid pixels have min_depth < gt < max_depth (0 marks missing gt, as in
    KITTI's sparse maps); the prediction is resized to the gt resolution (disparity is resized
    before inversion when `pred_is_disp`, as Monodepth2 does); with `median_scaling` it is
    multiplied by median(gt) / median(pred) over valid pixels (monocular depth is only known up
    to scale); then clamped to [min_depth, max_depth] and scored.

    Returns the seven metrics, `scale_ratio_mean` / `scale_ratio_std` of the per-image median
    ratios (computed also without median scaling, as a diagnostic of the learnt scale), the
    same seven for a constant baseline predicting each image's gt median under `baseline_*`,
    and `num_images` (images with at least one valid gt pixel; the others are skipped).
    """
    if not 0 < min_depth < max_depth:
        raise ConfigError(f"need 0 < min_depth < max_depth; got {min_depth}, {max_depth}")
    gts = _as_list(gt_depths, "gt_depths")
    preds = _as_list(pred_depths_or_disps, "pred_depths_or_disps")
    if len(gts) != len(preds):
        raise DataError(f"{len(gts)} ground-truth depth maps but {len(preds)} predictions")

    per_image, baseline, ratios = [], [], []
    for i, (gt, pred) in enumerate(zip(gts, preds, strict=True)):
        if pred.shape != gt.shape:
            pred = resize_to(pred, gt.shape)
        if pred_is_disp:
            with np.errstate(divide="ignore"):
                pred = 1.0 / pred
        valid = (gt > min_depth) & (gt < max_depth)
        if not valid.any():
            continue
        gt_v, pred_v = gt[valid], pred[valid]
        if not (np.all(np.isfinite(pred_v)) and np.all(pred_v > 0)):
            kind = "disparity" if pred_is_disp else "depth"
            raise DataError(f"prediction {i}: predicted {kind} must be finite and positive")
        gt_median = float(np.median(gt_v))
        ratio = gt_median / float(np.median(pred_v))
        ratios.append(ratio)
        if median_scaling:
            pred_v = pred_v * ratio
        per_image.append(compute_depth_errors(gt_v, np.clip(pred_v, min_depth, max_depth)))
        baseline.append(compute_depth_errors(gt_v, np.full_like(gt_v, gt_median)))
    if not per_image:
        raise DataError(f"no ground-truth pixel lies within ({min_depth}, {max_depth}) m")

    result = {k: float(np.mean([e[k] for e in per_image])) for k in DEPTH_METRICS}
    result.update(
        {f"baseline_{k}": float(np.mean([e[k] for e in baseline])) for k in DEPTH_METRICS}
    )
    result["scale_ratio_mean"] = float(np.mean(ratios))
    result["scale_ratio_std"] = float(np.std(ratios))
    result["num_images"] = float(len(per_image))
    return result


# Display names of the metrics (Monodepth2's short keys a1..a3).
TITLES = {"a1": "δ<1.25", "a2": "δ<1.25²", "a3": "δ<1.25³"}


class DepthEvaluator(Evaluator):
    """``update(disparity (B, 1, h, w), {"depth": gt (B, 1, H, W), "image": (B, 3, H, W) 0..1})``.

    The predicted disparity is scored per image with median scaling (:func:`evaluate_depth`);
    ``metrics``: the seven errors and the ``baseline_*`` ones of a constant gt-median prediction,
    plus the scale-ratio diagnostics. ``details``: the whole :func:`evaluate_depth` dict. File:
    ``depth.png`` (input, median-scaled prediction, ground truth for ``plot_frames`` frames spread
    over the ``num_samples`` of the split).
    """

    def __init__(
        self,
        min_depth: float,
        max_depth: float,
        num_samples: int = 0,
        plot_frames: int = 4,
        prefix: str = "val",
    ) -> None:
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        n = max(int(num_samples), 0)
        picks = np.linspace(0, n - 1, min(plot_frames, n)).round().astype(int) if n else []
        self._shown = {int(i) for i in picks}
        super().__init__(prefix)

    def reset(self) -> None:
        super().reset()
        self._gts: list[np.ndarray] = []
        self._preds: list[np.ndarray] = []
        self._frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def update(self, predictions: torch.Tensor, targets: dict) -> None:
        disparity = predictions.detach().float().cpu()
        depth = targets["depth"].detach().float().cpu()
        for i in range(len(disparity)):
            self._gts.append(depth[i, 0].numpy())
            self._preds.append(disparity[i, 0].numpy())
            if len(self._gts) - 1 in self._shown and "image" in targets:
                image = to_image(targets["image"][i].detach().cpu())
                self._frames.append((image, self._preds[-1], self._gts[-1]))

    def compute(self) -> EvalResult:
        r = evaluate_depth(self._gts, self._preds, self.min_depth, self.max_depth, True, True)
        metrics = {**self.loss_metrics(), **{self.key(k): v for k, v in r.items()}}
        metrics.pop(self.key("num_images"))
        header = f"{'':<22}" + "".join(f"{TITLES.get(k, k):>10}" for k in DEPTH_METRICS)
        lines = [header]
        for title, prefix in (("model (median-scaled)", ""), ("constant gt median", "baseline_")):
            lines.append(f"{title:<22}" + "".join(f"{r[prefix + k]:>10.4f}" for k in DEPTH_METRICS))
        lines.append(
            f"median scale ratio gt/pred: {r['scale_ratio_mean']:.4f} ± {r['scale_ratio_std']:.4f} "
            f"over {int(r['num_images'])} images"
        )
        frames = list(self._frames)
        files = {"depth.png": lambda path: self.plot(frames, path)} if frames else {}
        return EvalResult(metrics, "\n".join(lines), dict(r), files)

    def plot(self, frames: list, path: Path) -> None:
        """depth.png: input, predicted depth (median-scaled to the ground truth) and ground
        truth, one frame per row, on one colour scale per row."""
        from matplotlib.figure import Figure

        from ..files import atomic_write

        fig = Figure(figsize=(12, 1.6 * len(frames) + 0.4))
        axes = fig.subplots(len(frames), 3, squeeze=False)
        for row, (image, disparity, gt) in zip(axes, frames):
            valid = (gt > self.min_depth) & (gt < self.max_depth)
            pred = 1.0 / resize_to(disparity, gt.shape)
            if valid.any():
                pred = pred * np.median(gt[valid]) / np.median(pred[valid])
            gt_disp = np.where(valid, 1.0 / np.maximum(gt, 1e-6), 0.0)
            vmax = float(np.percentile(gt_disp[valid], 95)) if valid.any() else None
            panels = (image, colorize_depth(1.0 / pred, vmax), colorize_depth(gt_disp, vmax))
            for ax, panel, title in zip(row, panels, ("input", "predicted depth", "ground truth")):
                ax.imshow(panel)
                ax.set_title(title, fontsize=8)
                ax.axis("off")
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
