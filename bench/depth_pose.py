"""The pose net against the ground-truth camera motion, and depth trained with that motion.

    python bench/depth_pose.py errors --run runs/depth/<name> [key=value ...]
    python bench/depth_pose.py train-with-gt-motion depth-driving [key=value ...]

``errors``: every val pair (target frame, source frame f) of a depth run, the pose net's motion
``("cam_T_cam", 0, f)`` against the one ``poses.txt`` gives (the sequence format's optional
camera-to-world poses, which ``visbricks data synth driving`` writes). Monocular depth and motion
share one unknown scale, so the translation's length is read in the depth map's own scale: times
the frame's median ratio of ground-truth to predicted depth, the factor the depth metric's median
scaling applies. A depth net and a pose net that agree give a length ratio of 1 on every pair;
its spread is the part of the motion the depth map cannot follow. Also: the translation's
direction error and the rotation error (the angle of R_pred^T R_gt), in degrees.

``train-with-gt-motion``: a diagnostic, not a training mode. It trains the config with the
ground-truth motion in place of the pose net's (translation in metres, so ``model.fixed_scale``
is set false: the depth net then learns metric depth) and shows what the depth net, the loss and
the data reach when the motion is exact. Everything else is ``visbricks train``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch


def motion_errors(pred: np.ndarray, gt: np.ndarray, scales: np.ndarray) -> dict[str, np.ndarray]:
    """``pred``, ``gt`` (N, 4, 4) target-to-source transforms; ``scales`` (N,) the depth scale
    of each pair's target frame. Per pair: translation length ratio, direction and rotation
    errors in degrees, and the ground-truth rotation angle."""

    def angle(rotations: np.ndarray) -> np.ndarray:
        cos = (np.trace(rotations, axis1=1, axis2=2) - 1) / 2
        return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))

    t_pred = pred[:, :3, 3] * scales[:, None]
    t_gt = gt[:, :3, 3]
    n_pred, n_gt = np.linalg.norm(t_pred, axis=1), np.linalg.norm(t_gt, axis=1)
    cos = np.einsum("ij,ij->i", t_pred, t_gt) / np.maximum(n_pred * n_gt, 1e-12)
    relative = np.transpose(pred[:, :3, :3], (0, 2, 1)) @ gt[:, :3, :3]
    return {
        "length_ratio": n_pred / np.maximum(n_gt, 1e-12),
        "direction_deg": np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))),
        "rotation_deg": angle(relative),
        "gt_rotation_deg": angle(gt[:, :3, :3]),
        "gt_length": n_gt,
    }


def summary(errors: dict[str, np.ndarray]) -> str:
    r = errors["length_ratio"]

    def q(x: np.ndarray) -> str:
        p10, p50, p90 = np.percentile(x, [10, 50, 90])
        return f"median {p50:.3f}, p10 {p10:.3f}, p90 {p90:.3f}"

    return "\n".join(
        [
            f"{len(r)} pairs; ground-truth translation {np.mean(errors['gt_length']):.3f} m a pair "
            f"(mean), rotation {np.median(errors['gt_rotation_deg']):.3f} deg (median)",
            f"translation length x depth scale / ground truth: {q(r)}, "
            f"coefficient of variation {r.std() / r.mean():.3f}",
            f"translation direction error (deg): {q(errors['direction_deg'])}",
            f"rotation error (deg): {q(errors['rotation_deg'])}",
        ]
    )


@contextlib.contextmanager
def sequences_with_poses() -> Iterator[None]:
    """Every SequenceDataset built inside reads ``poses.txt`` (``("pose_gt", f)`` in samples)."""
    from visbricks.data.sequence import SequenceDataset

    original = SequenceDataset.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **{**kwargs, "with_pose": True})

    SequenceDataset.__init__ = init
    try:
        yield
    finally:
        SequenceDataset.__init__ = original


@contextlib.contextmanager
def ground_truth_motion() -> Iterator[None]:
    """The depth task's forward returns the ground-truth motion as ``("cam_T_cam", 0, f)``."""
    from visbricks.tasks.depth import DepthTask

    original = DepthTask.forward

    def forward(self, model, batch):
        outputs = original(self, model, batch)
        for f in self.frame_ids[1:]:
            outputs[("cam_T_cam", 0, f)] = batch[("pose_gt", f)].float()
        return outputs

    DepthTask.forward = forward
    try:
        with sequences_with_poses():
            yield
    finally:
        DepthTask.forward = original


def run_errors(run_path: str, overrides: list[str]) -> dict[str, np.ndarray]:
    from torch.utils.data import DataLoader

    from visbricks.deploy.loading import load_run

    run = load_run(run_path, overrides)
    task, model = run.task, run.model.eval()
    with sequences_with_poses():
        data = task.build_data()
    val = data.val
    if not getattr(val, "with_depth", False) or not val.samples:
        raise SystemExit("depth_pose: the val split has no ground-truth depth")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from depth_errors import scaled_predictions  # the metric's median scaling, per frame

    e = run.cfg.eval
    preds, gts, scales = [], [], []
    loader = DataLoader(val, batch_size=run.cfg.batch_size, collate_fn=data.collate_fn)
    with torch.inference_mode():
        for batch in loader:
            outputs = task.forward(model, batch)
            disparity = task._disparity(outputs[("disp", 0)]).float().numpy()[:, 0]
            depth_gt = batch[("depth_gt", 0)].float().numpy()[:, 0]
            ratios = scaled_predictions(depth_gt, list(disparity), e.min_depth, e.max_depth)[2]
            for i, scale in enumerate(ratios):
                for f in task.frame_ids[1:]:
                    preds.append(outputs[("cam_T_cam", 0, f)][i].double().numpy())
                    gts.append(batch[("pose_gt", f)][i].double().numpy())
                    scales.append(scale)
    return motion_errors(np.stack(preds), np.stack(gts), np.asarray(scales))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("errors", help="the pose net against poses.txt on the val split")
    e.add_argument("--run", required=True, help="run folder, best.safetensors or last.ckpt")
    e.add_argument("overrides", nargs="*", help="key=value overrides of the run's config")
    t = sub.add_parser("train-with-gt-motion", help="train depth with the ground-truth motion")
    t.add_argument("config", help="a preset or a YAML, as for visbricks train")
    t.add_argument("overrides", nargs="*", help="key=value overrides")
    args = p.parse_args(argv)
    if args.command == "errors":
        print(f"{args.run}: " + summary(run_errors(args.run, args.overrides)))
        return
    from visbricks.cli import main as cli

    with ground_truth_motion():
        sys.exit(cli(["train", args.config, *args.overrides, "model.fixed_scale=false"]))


if __name__ == "__main__":
    main()
