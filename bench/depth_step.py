"""Time one self-supervised depth training step, split into depth net, pose net and loss.

Each part's forward and backward are timed separately: the backward of the loss is run first
with the network outputs detached (so it stops at them), then the networks' backward is driven
by the gradients the loss produced. The loss's share of the step is then visible on its own.

    python bench/depth_step.py [--preset depth-driving] [--batch 12] [--steps 10] [key=value ...]

With ``loss.pose_refine`` on (the preset's) the loss includes the direct alignment, as in every
step after ``loss.pose_refine_after``; ``loss.pose_refine=0`` times the loss without it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from visbricks.config import load_config


def synthetic_batch(task, batch: int) -> dict:
    """Random frames and the preset's intrinsics: timing does not depend on pixel values."""
    height, width = task.img_size
    scales = task.cfg.loss.scales
    K = torch.tensor([[0.58 * width, 0, 0.5 * width], [0, 1.92 * height, 0.5 * height], [0, 0, 1]])
    out = {("K", 0): K.expand(batch, 3, 3), ("inv_K", 0): torch.linalg.inv(K).expand(batch, 3, 3)}
    for f in task.frame_ids:
        image = torch.rand(batch, 3, height, width)
        out[("color_aug", f, 0)] = image
        for s in range(scales):
            out[("color", f, s)] = torch.nn.functional.interpolate(image, scale_factor=0.5**s)
    return out


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def step(task, model, batch) -> dict[str, float]:
    """Forward and backward of depth net, pose net and loss, each timed on its own."""
    times = {}
    depth_out, times["depth_fwd"] = timed(lambda: model(batch[("color_aug", 0, 0)]))
    frames = task.pose_frames(batch)
    (axisangle, translation), times["pose_fwd"] = timed(lambda: model.predict_pose(frames))

    # The loss on detached leaves: its backward stops there and hands us their gradients.
    disps = {k: v.detach().requires_grad_() for k, v in depth_out.items()}
    aa, tr = axisangle.detach().requires_grad_(), translation.detach().requires_grad_()

    def loss_forward():
        outputs = {**disps, **task.pose_outputs(aa, tr)}
        # A step after loss.pose_refine_after: the direct alignment runs inside the loss.
        outputs["align"] = bool(task.pose_refine)
        return task.loss(outputs, batch)["loss"]

    loss, times["loss_fwd"] = timed(loss_forward)
    _, times["loss_bwd"] = timed(loss.backward)
    keys = list(disps)
    _, times["depth_bwd"] = timed(
        lambda: torch.autograd.backward([depth_out[k] for k in keys], [disps[k].grad for k in keys])
    )
    _, times["pose_bwd"] = timed(
        lambda: torch.autograd.backward([axisangle, translation], [aa.grad, tr.grad])
    )
    model.zero_grad(set_to_none=True)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="depth-driving")
    p.add_argument("--batch", type=int, default=None, help="default: the preset's batch_size")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from visbricks.tasks import build_task

    cfg = load_config(args.preset, args.overrides)
    task = build_task(cfg)
    model = task.build_model(load_pretrained=False).train()
    batch_size = args.batch or cfg.batch_size
    batch = synthetic_batch(task, batch_size)
    for _ in range(args.warmup):
        step(task, model, batch)
    runs = [step(task, model, batch) for _ in range(args.steps)]
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    total = sum(median.values())
    h, w = task.img_size
    pose_backbone = cfg.model.pose_backbone or cfg.model.backbone
    print(
        f"{cfg.name}: {cfg.model.backbone} (pose: {pose_backbone}), "
        f"{w}x{h}, batch {batch_size}, {len(task.frame_ids) - 1} source frames, "
        f"{torch.get_num_threads()} threads, median of {args.steps} steps"
        + (f"; the loss with {task.pose_refine} alignment steps" if task.pose_refine else "")
    )
    print(f"{'part':<12}{'forward ms':>12}{'backward ms':>13}{'total ms':>10}{'share':>8}")
    for part in ("depth", "pose", "loss"):
        fwd, bwd = median[f"{part}_fwd"], median[f"{part}_bwd"]
        print(
            f"{part:<12}{fwd * 1e3:>12.1f}{bwd * 1e3:>13.1f}{(fwd + bwd) * 1e3:>10.1f}"
            f"{(fwd + bwd) / total:>8.0%}"
        )
    print(f"{'step':<12}{'':>12}{'':>13}{total * 1e3:>10.1f}")
    print(f"{batch_size / total:.1f} images/s (target frames per second of training)")


if __name__ == "__main__":
    main()
