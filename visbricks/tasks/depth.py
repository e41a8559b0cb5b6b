"""``depth``: self-supervised monocular depth from video (Monodepth2) on image sequences.

Training needs no depth labels: the depth net predicts the target frame's disparity, the pose
net the motion to each neighbour, and the loss (``ReprojectionLoss``) warps the neighbours into
the target. Ground-truth depth of the val split is used only for the metrics, with per-image
median scaling since monocular depth is known only up to scale. The two networks, their
pretrained weights and the drawing are the depth roles (``tasks/roles/depth.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.draw import colorize_depth
from ..errors import ConfigError
from ..metrics.base import LossEvaluator
from ..metrics.depth import DepthEvaluator
from ..ops.direct_alignment import refine_pose
from ..ops.geometry import backproject, disp_to_depth, pose_vec_to_mat, project
from ..ops.photometric import ReprojectionLoss
from ..ops.tta import flip_blend_disparity
from ..registry import TASKS
from .base import Task
from .roles.depth import DepthData, DepthModelRole, DepthPredictor, encoder_rules

# Kept under its old name: the one implementation lives in the drawing module.
colorize = colorize_depth


@TASKS.register("depth")
class DepthTask(DepthData, DepthModelRole, DepthPredictor, Task):
    name = "depth"
    default_head = "depth_decoder"
    classes_from_data = False  # depth has no classes
    metric = "val/abs_rel"
    metric_mode = "min"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.frame_ids = tuple(int(f) for f in cfg.data.frame_ids)
        if len(self.frame_ids) < 2 or self.frame_ids[0] != 0 or 0 in self.frame_ids[1:]:
            raise ConfigError(
                f"data.frame_ids must be the target 0 followed by source frames, e.g. [0, -1, 1]; "
                f"got {list(self.frame_ids)}"
            )
        height, width = self.img_size
        if height % 32 or width % 32 or min(height, width) < 64:
            # Skip connections need every stride up to 32 to halve the size exactly, and the
            # decoder's reflection padding needs the stride-32 map to be at least 2 pixels.
            raise ConfigError(
                f"img_size for depth must be multiples of 32 and at least 64, got {width}x{height}"
            )
        m, loss = cfg.model, cfg.loss
        self.pose_input = m.pose_input
        self.pose_refine, self.pose_refine_after = int(loss.pose_refine), loss.pose_refine_after
        if self.pose_refine and not (m.fixed_scale and m.get("fixed_scale_steps") is None):
            # Seen (seed 1, the pin released after 200 batches): the aligned translation follows
            # whatever scale the depth takes, nothing holds it, and by epoch 2 the depth had
            # drifted to the far limit (abs_rel at the constant baseline's 0.736).
            raise ConfigError(
                "loss.pose_refine needs the mean-disparity pin kept for the whole run "
                "(model.fixed_scale=true, model.fixed_scale_steps=null): direct alignment "
                "follows any depth scale, so nothing else holds it; got "
                f"model.fixed_scale={m.fixed_scale}, "
                f"model.fixed_scale_steps={m.get('fixed_scale_steps')}"
            )
        self.min_depth, self.max_depth = float(m.min_depth), float(m.max_depth)
        self.criterion = ReprojectionLoss(
            scales=loss.scales,
            frame_ids=self.frame_ids,
            alpha=loss.ssim_weight,
            smoothness=loss.smoothness,
            automask=loss.automask,
            min_depth=self.min_depth,
            max_depth=self.max_depth,
        )

    def network_input(self, batch: dict) -> torch.Tensor:
        # The target frame: what the depth network sees (the pose network is not exported).
        return batch[("color_aug", 0, 0)]

    def forward(self, model: nn.Module, batch: dict) -> dict:
        """Disparity of the target at every scale and the motion from it to each source."""
        # One call for both networks: under torchrun ``model`` is the DDP wrapper, which has
        # no other method, and whose forward is what prepares its gradient all-reduce.
        outputs = dict(model(batch[("color_aug", 0, 0)], pose_frames=self.pose_frames(batch)))
        outputs.update(self.pose_outputs(*outputs.pop("pose")))
        if self.pose_refine:  # the count includes this batch (predict_pose adds it)
            counted = getattr(model, "module", model).trained_batches  # the buffer, unwrapped
            outputs["align"] = int(counted) > self.pose_refine_after
        return outputs

    def infer(self, model: nn.Module, images: torch.Tensor) -> dict:
        """The depth net on target frames; ``eval.tta: flip`` adds Monodepth2's post-processing
        (``ops/tta.py``) for evaluation against ground truth and for ``predict``."""
        if self.cfg.eval.tta == "flip":
            return flip_blend_disparity(model, images)
        return model(images)

    def pose_frames(self, batch: dict) -> torch.Tensor:
        """The pose net's input. ``pairs``: each (target, source) pair stacked on channels in
        time order ([source, target] for f < 0, [target, source] for f > 0), all pairs
        concatenated on the batch dimension: one pose-encoder call runs faster than one per
        source. ``all``: every frame of the sample stacked on channels in time order."""
        if self.pose_input == "all":
            return torch.cat([batch[("color_aug", f, 0)] for f in sorted(self.frame_ids)], 1)
        target = batch[("color_aug", 0, 0)]
        pairs = []
        for f in self.frame_ids[1:]:
            source = batch[("color_aug", f, 0)]
            pairs.append(torch.cat([source, target] if f < 0 else [target, source], 1))
        return torch.cat(pairs, 0)

    def pose_outputs(self, axisangle: torch.Tensor, translation: torch.Tensor) -> dict:
        """Split the pose net's output per source; ``("cam_T_cam", 0, f)`` maps target-camera
        points into source f's camera. With pairs, for f < 0 the net saw [source, target], so its
        motion is the inverse of that; with ``all`` each output is the target-to-source motion."""
        outputs = {}
        sources = self.frame_ids[1:]
        if self.pose_input == "all":  # one pass, motion i on dimension 1: (B, 1, 3) each
            per_source = zip(axisangle.split(1, 1), translation.split(1, 1))
        else:  # one pair per source, concatenated on the batch
            per_source = zip(axisangle.chunk(len(sources)), translation.chunk(len(sources)))
        for f, (aa, t) in zip(sources, per_source):
            invert = self.pose_input == "pairs" and f < 0
            outputs[("axisangle", 0, f)] = aa
            outputs[("translation", 0, f)] = t
            # The camera matrices feed the warp: fp32 even when the nets ran under autocast.
            with torch.autocast(aa.device.type, enabled=False):
                outputs[("cam_T_cam", 0, f)] = pose_vec_to_mat(aa.float(), t.float(), invert)
        return outputs

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        if not outputs.get("align"):
            return self.criterion(batch, outputs)
        # fp32 under mixed precision too, as the warp: the projections are pixel positions.
        with torch.autocast(batch[("color", 0, 0)].device.type, enabled=False):
            disagreement = self.refine_motion(outputs, batch)
        losses = self.criterion(batch, outputs)
        # Only the pose net sees this term (the depth behind it is detached) and Adam, the
        # preset's optimizer, rescales each parameter's gradient, so the weight sets the logged
        # size, not the pose net's step: 1 px of disagreement counts as 0.01, about a tenth of
        # the photometric error.
        losses["pose"] = disagreement
        losses["loss"] = losses["loss"] + 0.01 * disagreement
        return losses

    def refine_motion(self, outputs: dict, batch: dict) -> torch.Tensor:
        """``loss.pose_refine``: replace each pose-net motion by direct alignment's
        (``ops/direct_alignment.py``, started from it, on the current depth, no gradient) and
        return the pose net's disagreement with it in pixels, the pose net's only loss.

        The depth net then trains on motions that agree with its own depth frame by frame (the
        pose net sees only the images, so its translation follows the depth's scale only on
        average), and the pose net learns to predict what the alignment finds: its guess is
        the alignment's start, which converges only from near the answer."""
        target = batch[("color", 0, 0)]
        height, width = target.shape[-2:]
        K, inv_K = batch[("K", 0)].float(), batch.get(("inv_K", 0))
        disp = outputs[("disp", 0)].detach().float()
        if disp.shape[-2:] != (height, width):
            disp = nn.functional.interpolate(disp, (height, width), mode="bilinear")
        _, depth = disp_to_depth(disp, self.min_depth, self.max_depth)
        inv_K = torch.linalg.inv(K[:, :3, :3]) if inv_K is None else inv_K.float()
        points = backproject(depth, inv_K)
        half_size = target.new_tensor([width / 2, height / 2])  # grid units to pixels
        disagreement = []
        for f in self.frame_ids[1:]:
            net = outputs[("cam_T_cam", 0, f)]
            aligned = refine_pose(
                target, batch[("color", f, 0)], depth, K, net, self.pose_refine, inv_K
            )
            outputs[("cam_T_cam", 0, f)] = aligned
            # Clamped as the warp clamps: a point behind either camera counts as 2 image widths.
            moved = project(points, K, net, height, width).clamp(-2, 2) - project(
                points, K, aligned, height, width
            ).clamp(-2, 2)
            disagreement.append((moved * half_size).norm(dim=-1).mean())
        return torch.stack(disagreement).mean()

    # ---- evaluation -------------------------------------------------------------------------
    def evaluator(self, dataset, split: str = "val") -> DepthEvaluator | LossEvaluator:
        if not getattr(dataset, "with_depth", True):
            return LossEvaluator(prefix=split)
        e = self.cfg.eval
        return DepthEvaluator(e.min_depth, e.max_depth, len(dataset), e.plot_frames, prefix=split)

    def eval_step(self, model: nn.Module, batch: dict, evaluator: DepthEvaluator) -> None:
        """The depth net alone on the target frame: the metrics need no pose and no loss.
        Without ground truth, both networks and the photometric loss."""
        if ("depth_gt", 0) not in batch:
            evaluator.add_losses(
                self.loss(self.forward(model, batch), batch), self.batch_size(batch)
            )
            return
        disparity = self._disparity(self.infer(model, batch[("color_aug", 0, 0)])[("disp", 0)])
        targets = {"depth": batch[("depth_gt", 0)], "image": batch[("color", 0, 0)]}
        evaluator.update(disparity, targets)


__all__ = ["DepthTask", "colorize", "encoder_rules"]
