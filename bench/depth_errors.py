"""Where a depth run's errors lie: per-frame abs_rel and a region breakdown of the val split.

    python bench/depth_errors.py --run runs/depth/<name> [--data DIR] [--plots DIR]
        [--out report.txt] [--csv frames.csv] [--edge-threshold 0.1] [--edge-px 2]
        [--bins 10,30] [--worst 10] [key=value ...]

``--run`` takes what ``visbricks eval`` takes (a run folder, ``best.safetensors`` or
``last.ckpt``); ``--data`` points at the dataset when the run's ``data.root`` is relative to
another folder; ``key=value`` overrides the run's config. Every val frame is predicted the way
validation does it (``task.eval_step`` into a ``DepthEvaluator``) and each prediction is scored
exactly as ``metrics/depth.py`` scores it: resized to the ground truth, inverted, median-scaled
over the valid pixels (eval.min_depth < gt < eval.max_depth), clamped. The script checks that the
mean of its per-frame abs_rel is the evaluator's abs_rel.

Report (plain text, quotable):

(a) per-frame abs_rel and δ<1.25 (``compute_depth_errors`` per frame): spread and the worst
    frames with sequence, frame number, median scale ratio and the region that holds most of
    the frame's error;
(b) breakdowns of the split's abs_rel, each a partition of the valid pixels:
    * depth-discontinuity boundary: pixels within ``--edge-px`` of a ground-truth depth edge.
      An edge pixel is one where the ground-truth *disparity* departs from being locally planar:
      |d(i-1) - 2 d(i) + d(i+1)| / d(i) > ``--edge-threshold`` along rows or columns. Disparity
      is affine in the image over any plane, so the road, which a |∇ log depth| test flags near
      the horizon (its log-depth gradient is 1/(v - cy) per row), is never an edge here; a depth
      step of ratio r > 1 + threshold always is;
    * near / mid / far field by ground-truth depth (``--bins``, up to eval.max_depth);
    * image rows: top / middle / bottom thirds;
    * image texture: terciles of the local image gradient (5x5 mean of |∇ grey|) over the
      split: where the photometric loss has little to match;
    * surface class, for data from ``data synth driving``: the generator is deterministic, so
      each sequence's scene is rebuilt from ``calib.yaml``'s ``scene_seed`` and its rays cast
      again (``cast_rays``: road, kerb, sidewalk, building, car = the parked cars, backdrop);
      used only when the re-cast depth matches the stored ground truth;
    for each region: share of pixels, abs_rel, share of the error, that share over the pixel
    share (> 1: the region holds more than its share of the error), δ<1.25;
(c) the signed bias per region: mean (pred - gt) / gt after median scaling (> 0: too far) and
    the shares of pixels more than 1.25x too far / too near.

Weights: every frame weighs the same (as in the metric) and every valid pixel of a frame the
same, so the regions of one breakdown add up to the split's abs_rel exactly.

``--plots DIR``: for each of the worst frames, ``worst_NN_<sequence>_<frame>.png``: image |
ground truth | median-scaled prediction | abs_rel error map (depth-edge boundaries outlined).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from visbricks.data.synth.driving import SURFACE_NAMES as SEMANTIC_NAMES  # its pixel codes
from visbricks.metrics.depth import DepthEvaluator, compute_depth_errors, resize_to


# --------------------------------------------------------------------------- scoring
def scaled_predictions(gts, disparities, min_depth: float, max_depth: float):
    """Median-scaled, clamped depth per frame, as ``evaluate_depth(..., True, True)`` scores it.

    ``gts``: (N, H, W) metres; ``disparities``: N maps (any size; resized to the ground truth
    before inversion). Returns ``(pred (N, H, W), valid (N, H, W), ratios (N,))``; frames
    without a valid pixel get ratio NaN and no valid pixel.
    """
    gts = np.asarray(gts, dtype=np.float64)
    preds = np.empty_like(gts)
    valid = (gts > min_depth) & (gts < max_depth)
    ratios = np.full(len(gts), np.nan)
    for i, (gt, disp) in enumerate(zip(gts, disparities, strict=True)):
        disp = np.asarray(disp, dtype=np.float64)
        if disp.shape != gt.shape:
            disp = resize_to(disp, gt.shape)
        with np.errstate(divide="ignore"):
            pred = 1.0 / disp
        if valid[i].any():
            ratios[i] = np.median(gt[valid[i]]) / np.median(pred[valid[i]])
            pred = pred * ratios[i]
        preds[i] = np.clip(pred, min_depth, max_depth)
    return preds, valid, ratios


def per_frame_errors(gts, preds, valid) -> list[dict[str, float] | None]:
    """``compute_depth_errors`` of each frame's valid pixels (None: no valid pixel)."""
    return [
        compute_depth_errors(g[v], p[v]) if v.any() else None
        for g, p, v in zip(gts, preds, valid, strict=True)
    ]


def depth_edges(gts: np.ndarray, threshold: float) -> np.ndarray:
    """(N, H, W) bool: pixels where ground-truth disparity is not locally planar (see top)."""
    gts = np.asarray(gts, dtype=np.float64)
    known = gts > 0
    disp = np.where(known, 1.0 / np.where(known, gts, 1.0), 0.0)
    edges = np.zeros(gts.shape, bool)
    for axis in (1, 2):  # columns, then rows: the last axis of each view
        d, k = np.moveaxis(disp, axis, -1), np.moveaxis(known, axis, -1)
        second = np.abs(d[..., :-2] - 2 * d[..., 1:-1] + d[..., 2:])
        ok = k[..., :-2] & k[..., 1:-1] & k[..., 2:]
        np.moveaxis(edges, axis, -1)[..., 1:-1] |= ok & (second > threshold * d[..., 1:-1])
    return edges


def dilate(mask: np.ndarray, k: int) -> np.ndarray:
    """Square (Chebyshev) dilation by ``k`` pixels of (N, H, W) masks, separable."""
    out = mask.copy()
    for axis in (1, 2):
        src, n = out, out.shape[axis]
        out = src.copy()
        for s in range(1, min(k, n - 1) + 1):
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(0, n - s), slice(s, n)
            out[tuple(lo)] |= src[tuple(hi)]
            out[tuple(hi)] |= src[tuple(lo)]
    return out


def local_texture(images: np.ndarray, window: int = 5) -> np.ndarray:
    """(N, H, W) mean |∇ grey| (0..1 units) over a ``window`` x ``window`` neighbourhood."""
    grey = np.asarray(images, dtype=np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    grey /= 255.0
    grad = np.zeros_like(grey)
    grad[:, :, 1:] += np.abs(np.diff(grey, axis=2))
    grad[:, 1:, :] += np.abs(np.diff(grey, axis=1))
    r = window // 2
    padded = np.pad(grad, ((0, 0), (r, r), (r, r)), mode="edge")
    c = np.pad(padded.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
    h, w = grey.shape[1:]
    total = c[:, window:, window:] - c[:, :h, window:] - c[:, window:, :w] + c[:, :h, :w]
    return total / window**2


@dataclass
class Breakdown:
    """One partition of the valid pixels: ``codes`` (N, H, W) ints into ``names`` (-1: none)."""

    title: str
    names: list[str]
    codes: np.ndarray
    rows: list[dict] = field(default_factory=list)


def region_breakdowns(
    gts: np.ndarray,
    valid: np.ndarray,
    max_depth: float,
    edge_threshold: float = 0.1,
    edge_px: int = 2,
    bins: tuple[float, ...] = (10.0, 30.0),
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    label_names: tuple[str, ...] = SEMANTIC_NAMES,
) -> list[Breakdown]:
    """The partitions of section (b): boundary, depth bins, row thirds, texture, class."""
    gts = np.asarray(gts, dtype=np.float64)
    n, h, _ = gts.shape
    out = []
    boundary = dilate(depth_edges(gts, edge_threshold), edge_px)
    out.append(
        Breakdown(
            f"depth edges (|Δ² disparity| / disparity > {edge_threshold:g}, ±{edge_px} px)",
            [f"boundary (≤{edge_px} px)", "interior"],
            np.where(boundary, 0, 1),
        )
    )
    edges = [*bins, max_depth]
    names = [f"<{edges[0]:g} m (near)"]
    names += [f"{a:g}-{b:g} m" for a, b in zip(edges[:-2], edges[1:-1])]
    names += [f"{edges[-2]:g}-{edges[-1]:g} m (far)"] if len(edges) > 1 else []
    out.append(Breakdown("ground-truth depth", names, np.digitize(gts, list(bins))))
    third = np.minimum(np.arange(h) * 3 // h, 2)
    out.append(
        Breakdown(
            "image rows",
            ["top third", "middle third", "bottom third"],
            np.broadcast_to(third[None, :, None], gts.shape),
        )
    )
    if images is not None:
        texture = local_texture(images)
        lo, hi = np.quantile(texture[valid], [1 / 3, 2 / 3]) if valid.any() else (0.0, 0.0)
        out.append(
            Breakdown(
                f"image texture (5x5 mean |∇ grey|; terciles {lo:.3f}, {hi:.3f})",
                ["low texture", "mid texture", "high texture"],
                np.digitize(texture, [lo, hi]),
            )
        )
    if labels is not None:
        out.append(Breakdown("surface (re-cast scene)", list(label_names), labels.astype(int)))
    for b in out:
        b.codes = np.where(valid, b.codes, -1)
    return out


def pixel_stats(gts, preds, valid) -> dict[str, np.ndarray]:
    """Flat arrays over the valid pixels: weight, abs rel error, signed rel error, ratio."""
    counts = valid.reshape(len(valid), -1).sum(1)
    frames = (counts > 0).sum()
    per_pixel = np.where(counts > 0, 1.0 / np.maximum(counts, 1) / max(frames, 1), 0.0)
    gt, pred = gts[valid], preds[valid]
    return {
        "w": np.broadcast_to(per_pixel[:, None, None], valid.shape)[valid],
        "err": np.abs(gt - pred) / gt,
        "signed": (pred - gt) / gt,
        "far": pred / gt >= 1.25,
        "near": gt / pred >= 1.25,
        "frame": np.broadcast_to(np.arange(len(valid))[:, None, None], valid.shape)[valid],
    }


def summarise(breakdown: Breakdown, stats: dict, valid: np.ndarray) -> list[dict]:
    """Per-region rows of one breakdown (vectorised with bincount)."""
    codes = breakdown.codes[valid]
    k = len(breakdown.names)
    keep = codes >= 0
    c, w = codes[keep], stats["w"][keep]

    def total(x=None):
        return np.bincount(c, weights=w if x is None else w * x[keep], minlength=k)[:k]

    px = total()
    err = total(stats["err"])
    all_err = float((stats["w"] * stats["err"]).sum())
    good = total(~(stats["far"] | stats["near"]))
    signed, far, near = total(stats["signed"]), total(stats["far"]), total(stats["near"])
    rows = []
    for i, name in enumerate(breakdown.names):
        has = px[i] > 0
        rows.append(
            {
                "region": name,
                "px": px[i],
                "abs_rel": err[i] / px[i] if has else np.nan,
                "contribution": err[i],
                "err_share": err[i] / all_err if all_err > 0 else np.nan,
                "a1": good[i] / px[i] if has else np.nan,
                "bias": signed[i] / px[i] if has else np.nan,
                "too_far": far[i] / px[i] if has else np.nan,
                "too_near": near[i] / px[i] if has else np.nan,
            }
        )
    breakdown.rows = rows
    return rows


# --------------------------------------------------------------------------- semantic labels
def recast_labels(dataset, gts: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Surface codes of every val frame, re-cast from the driving generator's scene, or None and
    why not (not synthetic driving data, or a generator that no longer renders this depth)."""
    from visbricks.data.sequence import read_poses
    from visbricks.data.synth.driving import cast_rays, make_scene

    labels = np.zeros(gts.shape, np.uint8)
    scenes = {}
    for i, (name, index) in enumerate(dataset.samples):
        seq = dataset.sequences[name]
        if name not in scenes:
            calib = yaml.safe_load((seq.folder / "calib.yaml").read_text())
            seed = calib.get("scene_seed") if isinstance(calib, dict) else None
            poses_file = seq.folder / "poses.txt"
            if seed is None or not poses_file.is_file():
                return None, f"{seq.folder}: no scene_seed / poses.txt (not synthetic driving)"
            poses = read_poses(poses_file)
            scene = make_scene(int(seed), len(poses))
            if not np.allclose(scene.poses[:, :3], poses[:, :3], atol=1e-5):
                return None, f"{name}: the generator's trajectory differs from poses.txt"
            scenes[name] = scene
        scene = scenes[name]
        h, w = gts.shape[1:]
        hits = cast_rays(scene, scene.poses[index], seq.K, w, h)
        known = gts[i] > 0
        mismatch = np.abs(hits.depth[known] - gts[i][known]) > 1e-3 * gts[i][known]
        if mismatch.mean() > 1e-3:
            return None, f"{name} frame {index}: re-cast depth differs from the stored ground truth"
        labels[i] = hits.surface
    return labels, "re-cast from the generator's scenes (depth matches the stored ground truth)"


# --------------------------------------------------------------------------- report
def _pct(x: float) -> str:
    return "     -" if not np.isfinite(x) else f"{100 * x:5.1f}%"


def format_breakdown(b: Breakdown) -> list[str]:
    width = max(22, *(len(r["region"]) for r in b.rows))
    head = (
        f"{'':<{width}} {'pixels':>7} {'abs_rel':>8} {'contrib':>8} {'error':>7} {'err/px':>7}"
        f" {'δ<1.25':>7} {'bias':>7} {'too far':>8} {'too near':>8}"
    )
    lines = [f"{b.title}", head]
    for r in b.rows:
        if r["px"] == 0:
            lines.append(f"{r['region']:<{width}} {_pct(0.0):>7}  (no valid pixel)")
            continue
        ratio = r["err_share"] / r["px"]
        lines.append(
            f"{r['region']:<{width}} {_pct(r['px']):>7} {r['abs_rel']:8.4f}"
            f" {r['contribution']:8.4f} {_pct(r['err_share']):>7} {ratio:7.2f}"
            f" {_pct(r['a1']):>7} {r['bias']:+7.3f}"
            f" {_pct(r['too_far']):>8} {_pct(r['too_near']):>8}"
        )
    return lines


def frame_focus(b: Breakdown, stats: dict, valid: np.ndarray, frame: int) -> str:
    """The region of ``b`` that holds most of one frame's error, with its share."""
    codes = b.codes[valid]
    mine = (stats["frame"] == frame) & (codes >= 0)
    err = np.bincount(codes[mine], weights=stats["err"][mine], minlength=len(b.names))
    if err.sum() <= 0:
        return "-"
    top = int(err.argmax())
    return f"{b.names[top]} {100 * err[top] / err.sum():.0f}%"


def report(
    gts, preds, valid, ratios, names, breakdowns, official: dict | None, worst: int
) -> tuple[str, list[int], list]:
    """The plain-text report; also the worst frames' indices and the per-frame errors."""
    frames = per_frame_errors(gts, preds, valid)
    scored = [i for i, f in enumerate(frames) if f is not None]
    abs_rel = np.array([frames[i]["abs_rel"] for i in scored])
    a1 = np.array([frames[i]["a1"] for i in scored])
    stats = pixel_stats(gts, preds, valid)
    for b in breakdowns:
        summarise(b, stats, valid)
    lines = [
        f"{len(scored)} frames scored (median scaling, gt within the eval range); "
        f"abs_rel {abs_rel.mean():.4f}, δ<1.25 {a1.mean():.4f}",
    ]
    if official is not None:
        lines.append(
            f"evaluator (metrics/depth.py): abs_rel {official['abs_rel']:.4f}, "
            f"δ<1.25 {official['a1']:.4f}, constant-median baseline abs_rel "
            f"{official['baseline_abs_rel']:.4f}"
        )
    q = np.percentile(abs_rel, [10, 50, 90])
    lines += [
        f"per-frame abs_rel: min {abs_rel.min():.4f}, p10 {q[0]:.4f}, median {q[1]:.4f}, "
        f"p90 {q[2]:.4f}, max {abs_rel.max():.4f}; δ<1.25 min {a1.min():.4f}, "
        f"median {np.median(a1):.4f}",
        "",
        f"(a) worst {min(worst, len(scored))} frames by abs_rel",
    ]
    order = [scored[j] for j in np.argsort(-abs_rel, kind="stable")[:worst]]
    by_title = {b.title.split(" (")[0]: b for b in breakdowns}
    focus_b = by_title.get("surface") or by_title.get("ground-truth depth")
    lines.append(
        f"{'sequence':<12}{'frame':>7}{'abs_rel':>9}{'δ<1.25':>8}{'scale':>8}  most error in"
    )
    for i in order:
        seq, frame = names[i]
        f = frames[i]
        lines.append(
            f"{seq:<12}{frame:>7}{f['abs_rel']:9.4f}{f['a1']:8.4f}{ratios[i]:8.3f}  "
            f"{frame_focus(focus_b, stats, valid, i)}"
        )
    lines += [
        "",
        "(b, c) by region. pixels: share of the valid pixels; contrib: the region's part of the",
        "split's abs_rel (each breakdown's contribs add up to it); error: share of the abs_rel;",
        "err/px: error share / pixel share (> 1: more than its share); bias: mean (pred - gt) / gt",
        "after median scaling (> 0: predicted too far); too far / near: pixels off by >= 1.25x.",
    ]
    for b in breakdowns:
        lines += [""] + format_breakdown(b)
    return "\n".join(lines), order, frames


# --------------------------------------------------------------------------- plots
def plot_frames(out_dir: Path, order, images, gts, preds, valid, boundary, names, frames):
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    from visbricks.data.draw import colorize_depth

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for rank, i in enumerate(order, start=1):
        seq, frame = names[i]
        gt, pred, v = gts[i], preds[i], valid[i]
        gt_disp = np.where(v, 1.0 / np.maximum(gt, 1e-6), 0.0)
        vmax = float(np.percentile(gt_disp[v], 95)) if v.any() else None
        err = np.where(v, np.abs(gt - pred) / np.where(v, gt, 1.0), np.nan)
        fig = Figure(figsize=(16, 1.9))
        axes = fig.subplots(1, 4)
        panels = (
            (images[i], "image"),
            (colorize_depth(gt_disp, vmax), "ground truth (black: outside eval range)"),
            (colorize_depth(1.0 / pred, vmax), "prediction (median-scaled)"),
        )
        for ax, (panel, title) in zip(axes, panels):
            ax.imshow(panel)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        cmap = colormaps["inferno"].with_extremes(bad=(0.3, 0.3, 0.3))
        shown = axes[3].imshow(err, cmap=cmap, vmin=0.0, vmax=0.5, interpolation="nearest")
        axes[3].contour(boundary[i], levels=[0.5], colors="cyan", linewidths=0.4)
        axes[3].set_title("abs_rel error (0..0.5; cyan: depth-edge band)", fontsize=8)
        axes[3].axis("off")
        fig.colorbar(shown, ax=axes[3], fraction=0.025, pad=0.01)
        fig.suptitle(
            f"#{rank} {seq} frame {frame}: abs_rel {frames[i]['abs_rel']:.4f}, "
            f"δ<1.25 {frames[i]['a1']:.3f}",
            fontsize=9,
        )
        path = out_dir / f"worst_{rank:02d}_{seq}_{frame:06d}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        written.append(path)
    return written


# --------------------------------------------------------------------------- main
class _Recorder(DepthEvaluator):
    """The evaluator validation uses, keeping each frame's ground truth and disparity."""

    def reset(self) -> None:
        super().reset()
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []

    def update(self, predictions: torch.Tensor, targets: dict) -> None:
        super().update(predictions, targets)
        disparity = predictions.detach().float().cpu().numpy()
        depth = targets["depth"].detach().float().cpu().numpy()
        self.pairs += [(depth[i, 0], disparity[i, 0]) for i in range(len(disparity))]


def predict_split(run, device):
    """(evaluator result dict, gts (N, H, W), disparities, val dataset)."""
    from torch.utils.data import DataLoader

    data = run.task.build_data()
    val = data.val
    if not getattr(val, "with_depth", False):
        raise SystemExit("depth_errors: the val split has no ground-truth depth")
    e = run.cfg.eval
    recorder = _Recorder(e.min_depth, e.max_depth, 0, 0)
    loader = DataLoader(val, batch_size=run.cfg.batch_size, collate_fn=data.collate_fn)
    with torch.inference_mode():
        for batch in loader:
            run.task.eval_step(run.model, run.task.to_device(batch, device), recorder)
    result = recorder.compute()
    gts = np.stack([g for g, _ in recorder.pairs])
    return result.details, gts, [d for _, d in recorder.pairs], val


def main(argv: list[str] | None = None) -> None:
    from visbricks.data.io import read_image
    from visbricks.deploy.loading import load_run
    from visbricks.engine.precision import select_device

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run folder, best.safetensors or last.ckpt")
    p.add_argument("--data", help="dataset folder (overrides the run's data.root)")
    p.add_argument("--device", default=None, help="default: the run's device setting")
    p.add_argument("--edge-threshold", type=float, default=0.1)
    p.add_argument("--edge-px", type=int, default=2)
    p.add_argument("--bins", default="10,30", help="depth bin edges in metres (comma-separated)")
    p.add_argument("--worst", type=int, default=10)
    p.add_argument("--no-labels", action="store_true", help="skip re-casting surface classes")
    p.add_argument("--plots", type=Path, help="write the worst frames' PNGs here")
    p.add_argument("--out", type=Path, help="also write the report to this file")
    p.add_argument("--csv", type=Path, help="write per-frame errors to this CSV file")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the run's config")
    args = p.parse_args(argv)

    overrides = list(args.overrides) + ([f"data.root={args.data}"] if args.data else [])
    run = load_run(args.run, overrides)
    device = select_device(args.device or run.cfg.device)
    run.model.to(device).eval()
    official, gts, disparities, val = predict_split(run, device)
    e = run.cfg.eval
    preds, valid, ratios = scaled_predictions(gts, disparities, e.min_depth, e.max_depth)
    names = list(val.samples)
    images = np.stack([read_image(val.sequences[s].frames[i]) for s, i in names])
    labels, why = (None, "--no-labels") if args.no_labels else recast_labels(val, gts)
    bins = tuple(float(x) for x in args.bins.split(",") if x.strip())
    breakdowns = region_breakdowns(
        gts, valid, e.max_depth, args.edge_threshold, args.edge_px, bins, images, labels
    )
    text, order, frames = report(gts, preds, valid, ratios, names, breakdowns, official, args.worst)
    mean_abs_rel = np.mean([f["abs_rel"] for f in frames if f is not None])
    if not np.isclose(mean_abs_rel, official["abs_rel"], rtol=1e-6, atol=1e-9):
        sys.exit(f"depth_errors: per-frame mean {mean_abs_rel} != evaluator {official['abs_rel']}")
    h, w = gts.shape[1:]
    header = [
        f"depth errors: {run.weights} on {val.split_path} ({len(names)} frames, {w}x{h} ground "
        f"truth, eval range {e.min_depth:g}-{e.max_depth:g} m, median scaling)",
        f"surface classes: {why}" if labels is not None else f"surface classes: none ({why})",
        "",
    ]
    text = "\n".join(header) + text
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    if args.csv:
        rows = ["sequence,frame,abs_rel,sq_rel,rmse,rmse_log,a1,a2,a3,scale_ratio"]
        for (seq, frame), f, r in zip(names, frames, ratios):
            if f is not None:
                values = ",".join(f"{f[k]:.6f}" for k in ("abs_rel", "sq_rel", "rmse", "rmse_log"))
                rows.append(
                    f"{seq},{frame},{values},{f['a1']:.6f},{f['a2']:.6f},{f['a3']:.6f},{r:.6f}"
                )
        args.csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    if args.plots:
        boundary = breakdowns[0].codes == 0
        written = plot_frames(args.plots, order, images, gts, preds, valid, boundary, names, frames)
        print(f"\nplots: {len(written)} PNGs in {args.plots}")


if __name__ == "__main__":
    main()
