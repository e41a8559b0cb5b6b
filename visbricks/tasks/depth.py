"""``depth``: self-supervised monocular depth from video (Monodepth2) on image sequences.

Training needs no depth labels: the depth net predicts the target frame's disparity, the pose
net the motion to each neighbour, and the loss (``ReprojectionLoss``) warps the neighbours into
the target. Ground-truth depth of the val split is used only for the metrics, with per-image
median scaling since monocular depth is known only up to scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.draw import colorize_depth
from ..data.io import cache_budget
from ..data.normalize import denormalize, normalize, to_image
from ..data.sequence import SequenceDataset
from ..engine.plots import save_image_grid
from ..engine.weights import (
    LoadReport,
    Rule,
    load_weights,
    read_state_dict,
    resolve_imagenet,
    tile_input_channels,
)
from ..errors import ConfigError
from ..metrics.depth import DepthEvaluator
from ..models.depth import DepthModel
from ..ops.geometry import disp_to_depth, pose_vec_to_mat
from ..ops.photometric import ReprojectionLoss
from ..registry import TASKS
from .base import DataBundle, Task, _cached_imagenet

# Kept under its old name: the one implementation lives in the drawing module.
colorize = colorize_depth


def encoder_rules(backbone: nn.Module, tile: bool = False) -> list[Rule]:
    """Mapping rules from a torchvision classifier file onto ``backbone`` itself.

    Reuses the backbone's own ImageNet rules (written for a model's ``backbone.``) without that
    prefix; the classifier's rules are dropped, so its tensors are reported as unexpected.
    With ``tile``, values pass through ``tile_input_channels``: a first conv built for stacked
    frames (6 input channels) gets the 3-channel weights repeated and divided by the number of
    frames; every other tensor already has the file's shape and is left as it is.
    """
    rules = []
    for pattern, replace in backbone.imagenet_rules:
        if replace.startswith("backbone."):
            transform = tile_input_channels if tile else None
            rules.append(Rule(pattern, replace[len("backbone.") :], transform))
    return rules


@TASKS.register("depth")
class DepthTask(Task):
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

    # ---- data -------------------------------------------------------------------------------
    def generate(self, kind: str | None, root: Path, params: dict) -> None:
        if kind != "driving":
            raise ConfigError(f"data.synth.kind for depth must be 'driving', got {kind!r}")
        from ..data.synth.driving import write_driving

        write_driving(root, **params, progress=True)

    def find_classes(self) -> list[str]:
        return []  # depth has no classes

    def datasets(self) -> DataBundle:
        d = self.cfg.data
        if d.format != "sequence":
            raise ConfigError(f"data.format for depth must be 'sequence', got {d.format!r}")
        common = dict(
            img_size=self.img_size,
            frame_ids=self.frame_ids,
            scales=self.cfg.loss.scales,
            mean=self.mean,
            std=self.std,
            strict=d.strict,
            cache=cache_budget(d.cache, d.cache_mb),
        )
        aug = d.aug
        train = SequenceDataset(
            self.data_root,
            d.train,
            hflip=aug.hflip,
            color_jitter=aug.color_jitter,
            hue=aug.hue,
            color_p=aug.color_p,
            **common,
        )
        val = SequenceDataset(self.data_root, d.val, with_depth=True, **common)
        return DataBundle(train, val, [])

    def network_input(self, batch: dict) -> torch.Tensor:
        # The target frame: what the depth network sees (the pose network is not exported).
        return batch[("color_aug", 0, 0)]

    # ---- model ------------------------------------------------------------------------------
    def build_model(self, load_pretrained: bool = True) -> nn.Module:
        m = self.cfg.model
        model = DepthModel(
            m.backbone,
            m.pose_backbone,
            self.head_name,
            self.cfg.loss.scales,
            m.in_channels,
            self.min_depth,
            self.max_depth,
            m.fixed_scale,
            head_args=dict(m.get("head_args") or {}),
            backbone_args=dict(m.get("backbone_args") or {}),
        )
        if load_pretrained:
            self.load_pretrained(model)
        return model

    def load_pretrained(self, model: nn.Module) -> list[LoadReport]:
        """``imagenet`` or a torchvision file: both encoders (the pose encoder's first conv
        widened by a mapping rule); a visbricks depth file: by key."""
        source = self.cfg.model.pretrained
        if source is None:
            return []
        strategy = self.cfg.model.pretrained_strategy
        state = None
        auto = source == "auto"
        if auto:
            # As for the other tasks: the cached ImageNet file (never downloaded), else random.
            cached = _cached_imagenet(model.depth_encoder.tv_name)
            if cached is None:
                print(
                    "model.pretrained=auto: no cached ImageNet weights for this backbone; "
                    "training from random initialisation (model.pretrained=imagenet fetches)"
                )
                return []
            source = "imagenet"
        if source != "imagenet":
            state = read_state_dict(source)
            if strategy == "auto":
                ours = any(k.startswith(("depth_encoder.", "pose_encoder.")) for k in state)
                strategy = "key" if ours else "mapping"
            if strategy != "mapping":
                return [load_weights(model, state, strategy)]
        reports = []
        encoders = [model.depth_encoder, model.pose_encoder]
        if state is not None and model.pose_encoder.tv_name != model.depth_encoder.tv_name:
            # One file holds one architecture: the depth encoder's. A different pose backbone
            # keeps its random init rather than a report of nothing loaded.
            print(
                f"model.pretrained: {source} is for the depth encoder "
                f"({model.depth_encoder.tv_name}); the pose encoder "
                f"({model.pose_encoder.tv_name}) starts from random weights"
            )
            encoders = encoders[:1]
        if auto:  # an encoder whose file is not cached keeps its random init
            encoders = [e for e in encoders if _cached_imagenet(e.tv_name) is not None]
        for encoder in encoders:
            weights = state if state is not None else resolve_imagenet(encoder.tv_name)
            rules = encoder_rules(encoder, tile=encoder is model.pose_encoder)
            reports.append(load_weights(encoder, weights, "mapping", rules))
        return reports

    def forward(self, model: nn.Module, batch: dict) -> dict:
        """Disparity of the target at every scale and the motion from it to each source."""
        outputs = dict(model(batch[("color_aug", 0, 0)]))
        outputs.update(self.pose_outputs(*model.predict_pose(self.pose_pairs(batch))))
        return outputs

    def pose_pairs(self, batch: dict) -> torch.Tensor:
        """Each (target, source) pair stacked on channels in time order ([source, target] for
        f < 0, [target, source] for f > 0), all pairs concatenated on the batch dimension: one
        pose-encoder call runs faster than one per source."""
        target = batch[("color_aug", 0, 0)]
        pairs = []
        for f in self.frame_ids[1:]:
            source = batch[("color_aug", f, 0)]
            pairs.append(torch.cat([source, target] if f < 0 else [target, source], 1))
        return torch.cat(pairs, 0)

    def pose_outputs(self, axisangle: torch.Tensor, translation: torch.Tensor) -> dict:
        """Split the pose net's batch back per source; ``("cam_T_cam", 0, f)`` maps target-camera
        points into source f's camera. For f < 0 the net saw [source, target], so its motion is
        the inverse of that."""
        outputs = {}
        sources = self.frame_ids[1:]
        chunks = zip(sources, axisangle.chunk(len(sources)), translation.chunk(len(sources)))
        for f, aa, t in chunks:
            outputs[("axisangle", 0, f)] = aa
            outputs[("translation", 0, f)] = t
            # The camera matrices feed the warp: fp32 even when the nets ran under autocast.
            with torch.autocast(aa.device.type, enabled=False):
                outputs[("cam_T_cam", 0, f)] = pose_vec_to_mat(aa.float(), t.float(), f < 0)
        return outputs

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        return self.criterion(batch, outputs)

    # ---- evaluation -------------------------------------------------------------------------
    def _disparity(self, disp: torch.Tensor) -> torch.Tensor:
        return disp_to_depth(disp.float(), self.min_depth, self.max_depth)[0]

    def evaluator(self, dataset, split: str = "val") -> DepthEvaluator:
        e = self.cfg.eval
        return DepthEvaluator(e.min_depth, e.max_depth, len(dataset), e.plot_frames, prefix=split)

    def eval_step(self, model: nn.Module, batch: dict, evaluator: DepthEvaluator) -> None:
        """The depth net alone on the target frame: the metrics need no pose and no loss."""
        disparity = self._disparity(model(batch[("color_aug", 0, 0)])[("disp", 0)])
        targets = {"depth": batch[("depth_gt", 0)], "image": batch[("color", 0, 0)]}
        evaluator.update(disparity, targets)

    # ---- drawing and prediction ---------------------------------------------------------------
    def draw_batch(self, batch: dict, path: Path, outputs: dict | None = None) -> None:
        """samples.png: each sample's frames as the networks see them (augmented), earliest on
        top; with outputs, predictions.png: input above its predicted disparity."""

        def net_input(f, i):
            return to_image(denormalize(batch[("color_aug", f, 0)][i], self.mean, self.std))

        n = min(8, self.batch_size(batch))
        if outputs is None:
            order = sorted(self.frame_ids)
            tiles = [np.concatenate([net_input(f, i) for f in order], axis=0) for i in range(n)]
            title = "frames " + ", ".join(str(f) for f in order) + " (top to bottom)"
            save_image_grid(tiles, path, titles=[title] * n)
            return
        disparity = self._disparity(outputs[("disp", 0)].detach()).cpu().numpy()
        tiles = [
            np.concatenate([net_input(0, i), colorize(disparity[i, 0])], axis=0) for i in range(n)
        ]
        save_image_grid(tiles, path, titles=["input / predicted disparity"] * n)

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, dict]:
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=self.img_size, mode="bilinear", antialias=True)
        return normalize(x[0] / 255, self.mean, self.std), {"size": image.shape[:2]}

    def postprocess(self, outputs: dict, meta: list[dict]) -> list[dict]:
        """Depth at each input's own size, in the model's (scale-ambiguous) units.

        ``_depth`` (the map) stays out of predictions.json; the summary numbers go in.
        """
        disparity = self._disparity(outputs[("disp", 0)])
        results = []
        for disp, m in zip(disparity, meta):
            disp = F.interpolate(
                disp[None], size=tuple(m["size"]), mode="bilinear", align_corners=False
            )[0, 0]
            depth = (1.0 / disp).cpu().numpy()
            results.append(
                {
                    "depth_min": float(depth.min()),
                    "depth_median": float(np.median(depth)),
                    "depth_max": float(depth.max()),
                    "_depth": depth,
                }
            )
        return results

    def annotate(self, image: np.ndarray, prediction: dict) -> np.ndarray:
        return colorize(1.0 / prediction["_depth"])


__all__ = ["DepthTask", "colorize", "encoder_rules"]
