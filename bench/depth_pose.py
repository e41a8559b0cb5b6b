"""The pose net against the ground-truth camera motion, and depth trained with that motion.

    python bench/depth_pose.py errors --run runs/depth/<name> [key=value ...]
    python bench/depth_pose.py train-with-gt-motion depth-driving [key=value ...]
    python bench/depth_pose.py train-with-known-distance [--running | --exact-direction |
        --release-after STEPS] depth-driving [key=value ...]

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

``train-with-known-distance``: a diagnostic too. The pose net's rotation and translation direction
drive the warp, but each pair's translation length is set in proportion to the distance the
camera travelled (``poses.txt``, as a GPS track or wheel odometry would give it); the overall
level, the depth map's own scale, stays the pose net's: ``c = sum |t_pred| / sum distance`` over
the batch (with ``--running`` the running mean of ``c``'s value with the batch's gradient, as the
``running`` depth pin does). It asks whether the pose net's length errors are what separates the
preset from the ground-truth-motion run. With ``--exact-direction`` the rotation and the
translation's direction come from ``poses.txt`` too: only the level ``c`` is the pose net's, so
the motion is exact in the pinned depth's own scale. With ``--release-after STEPS`` the preset
trains pinned for that many steps while the running level ``c`` is tracked; then the depth
pin is released (``model.fixed_scale_steps=STEPS``: the running mean it divides by stays, so
the depth net may scale freely) and each translation is the pose net's direction times the
distance times the frozen ``c``: an unpinned depth net in metres times ``c``, without the
collapse an unpinned start meets. The other modes keep the pin for the whole run
(``model.fixed_scale_steps=null``), as their rows in docs/benchmarks.md were measured.

Both training diagnostics set ``loss.pose_refine=0``: the motion they hand the warp is theirs,
not one that direct alignment would refine.
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

    with _task_forward(forward):
        yield


@contextlib.contextmanager
def _task_forward(forward) -> Iterator[None]:
    """``DepthTask.forward`` replaced by ``forward`` on sequences that load ``poses.txt``; the
    original restored after."""
    from visbricks.tasks.depth import DepthTask

    original = DepthTask.forward
    DepthTask.forward = forward
    try:
        with sequences_with_poses():
            yield
    finally:
        DepthTask.forward = original


def lengths_from_distances(
    translations: list[torch.Tensor], distances: list[torch.Tensor], level: torch.Tensor | None
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``translations`` (B, 3) and ``distances`` (B, 1), one of each per source frame: the same
    directions with lengths ``distance * c``, ``c = sum |t| / sum distance``. With ``level`` (a
    running value of ``c``), ``c`` takes that value and keeps the batch's gradient. Returns the
    new translations and the batch's ``c`` (detached)."""
    c = _level(translations, distances)
    batch_c = c.detach()
    if level is not None:
        c = c / batch_c * level
    return _along(translations, distances, c), batch_c


def _level(translations: list[torch.Tensor], distances: list[torch.Tensor]) -> torch.Tensor:
    """``c = sum |t| / sum distance``: the translations' length per metre travelled."""
    # A standing camera (distance 0) contributes nothing; the floor keeps it from dividing by 0.
    total = sum(d.sum() for d in distances).clamp_min(1e-9)
    return sum(t.norm(dim=-1).sum() for t in translations) / total


def _along(translations: list[torch.Tensor], distances: list[torch.Tensor], c) -> list:
    """Each translation's direction with the length ``distance * c``."""
    return [
        t / t.norm(dim=-1, keepdim=True).clamp_min(1e-9) * d * c
        for t, d in zip(translations, distances)
    ]


@contextlib.contextmanager
def known_distance_motion(
    running: bool = False,
    exact_direction: bool = False,
    momentum: float = 0.01,
    release_after: int | None = None,
) -> Iterator[None]:
    """The depth task's motion with each translation's length from the travelled distance
    (and with ``exact_direction`` the rotation and direction from ``poses.txt``; with
    ``release_after`` the preset first, then, once the model's ``fixed_scale_steps`` pin is
    released, the distance: see the module's docstring)."""
    from visbricks.tasks.depth import DepthTask

    original = DepthTask.forward
    level: list[torch.Tensor] = []  # the running c, once a training batch has set it
    announced = [False]

    def forward(self, model, batch):
        decoder = getattr(model, "module", model).depth_decoder  # DDP keeps the model inside
        # Read before the forward, which counts this batch: was this batch trained released?
        released = release_after is not None and decoder.released
        outputs = original(self, model, batch)
        sources = self.frame_ids[1:]
        motions = [outputs[("cam_T_cam", 0, f)] for f in sources]
        distances = [
            batch[("pose_gt", f)][:, :3, 3].float().norm(dim=-1, keepdim=True) for f in sources
        ]
        translations = [m[:, :3, 3] for m in motions]
        if release_after is not None:
            if not released:
                if model.training:
                    batch_c = _level(translations, distances).detach()
                    level[:] = [batch_c if not level else 0.95 * level[0] + 0.05 * batch_c]
                return outputs
            if not level:
                raise SystemExit("depth_pose: released before any pinned step set the level")
            if not announced[0]:
                announced[0] = True
                print(
                    f"known distance: pin released at step {int(decoder.pinned_steps)}, c = "
                    f"{level[0].item():.4f} depth units per metre",
                    flush=True,
                )
            scaled = _along(translations, distances, level[0])  # no gradient to the level
            return _with_translations(outputs, sources, motions, scaled)
        scaled, batch_c = lengths_from_distances(
            translations, distances, level[0] if running and level else None
        )
        if exact_direction:  # the same lengths along the true directions, the true rotation
            truth = [batch[("pose_gt", f)].float() for f in sources]
            scaled = [
                g[:, :3, 3] / d.clamp_min(1e-9) * t.norm(dim=-1, keepdim=True)
                for g, d, t in zip(truth, distances, scaled)
            ]
            motions = [torch.cat([g[:, :3, :3], m[:, :3, 3:]], 2) for g, m in zip(truth, motions)]
        if running and model.training:
            level[:] = [batch_c if not level else (1 - momentum) * level[0] + momentum * batch_c]
        return _with_translations(outputs, sources, motions, scaled)

    with _task_forward(forward):
        yield


def _with_translations(outputs: dict, sources, motions: list, translations: list) -> dict:
    """``outputs`` with each source's motion rebuilt from its rotation and a new translation."""
    bottom = motions[0].new_tensor([0.0, 0.0, 0.0, 1.0]).expand(len(motions[0]), 1, 4)
    for f, motion, t in zip(sources, motions, translations):
        outputs[("cam_T_cam", 0, f)] = torch.cat(
            [torch.cat([motion[:, :3, :3], t[:, :, None]], 2), bottom], 1
        )
    return outputs


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
    k = sub.add_parser(
        "train-with-known-distance", help="each translation's length from the travelled distance"
    )
    k.add_argument("config", help="a preset or a YAML, as for visbricks train")
    mode = k.add_mutually_exclusive_group()
    mode.add_argument("--running", action="store_true", help="the running level, batch gradient")
    mode.add_argument(
        "--exact-direction", action="store_true", help="rotation and direction from poses.txt"
    )
    mode.add_argument(
        "--release-after", type=int, metavar="STEPS", help="the preset, then the pin released"
    )
    k.add_argument("overrides", nargs="*", help="key=value overrides")
    args = p.parse_args(argv)
    if args.command == "errors":
        print(f"{args.run}: " + summary(run_errors(args.run, args.overrides)))
        return
    from visbricks.cli import main as cli

    if args.command == "train-with-known-distance":
        # The pin held for the whole run (as those rows were measured), or the model's own
        # release after STEPS batches.
        release = "null" if args.release_after is None else str(args.release_after)
        with known_distance_motion(
            args.running, args.exact_direction, release_after=args.release_after
        ):
            overrides = [
                *args.overrides,
                f"model.fixed_scale_steps={release}",
                "loss.pose_refine=0",
            ]
            sys.exit(cli(["train", args.config, *overrides]))
    with ground_truth_motion():
        overrides = [*args.overrides, "model.fixed_scale=false", "loss.pose_refine=0"]
        sys.exit(cli(["train", args.config, *overrides]))


if __name__ == "__main__":
    main()
