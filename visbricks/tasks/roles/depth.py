"""The model and predictor roles of the depth task: two networks, one image out.

Data: image sequences, val with or without ground-truth depth.
Model: ``DepthModel`` (depth encoder-decoder + pose encoder-decoder) with ImageNet or file
weights for both encoders, the pose encoder's first conv widened for stacked frames by a mapping
rule. Predictor: a raw image resized to the network input, disparity back to depth at the image's
own size, drawn as a colour map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...config import Config
from ...data.bundle import DataBundle
from ...data.draw import colorize_depth
from ...data.io import cache_budget
from ...data.normalize import denormalize, normalize, to_image
from ...data.sequence import SequenceDataset
from ...engine.plots import save_image_grid
from ...engine.weights import (
    LoadReport,
    Rule,
    load_weights,
    read_state_dict,
    resolve_imagenet,
    tile_input_channels,
)
from ...errors import ConfigError
from ...models.depth import DepthModel
from ...ops.geometry import disp_to_depth
from .data import DataRole
from .model import ModelRole, _cached_imagenet, model_memory
from .predict import PredictorRole


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


class DepthData(DataRole):
    """Image sequences (``sequence`` format): train with augmentation; val with ground-truth
    depth when the split has it, else (a user's own video) without, validated on the loss."""

    cfg: Config
    frame_ids: tuple[int, ...]
    img_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    metric: str
    metric_mode: str

    def generate(self, kind: str | None, root: Path, params: dict) -> None:
        if kind != "driving":
            raise ConfigError(f"data.synth.kind for depth must be 'driving', got {kind!r}")
        from ...data.synth.driving import write_driving

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
        val = SequenceDataset(self.data_root, d.val, **common)
        gt = [val._depth_path(val.sequences[n], i).is_file() for n, i in val.samples]
        self.has_depth_gt = any(gt)
        if self.has_depth_gt:  # targets without depth are then warned and skipped, as bad
            val = SequenceDataset(self.data_root, d.val, with_depth=True, **common)
        else:
            # A user's own video has no depth to score against: validate on what training
            # optimises, the photometric loss, and pick the best weights by it.
            self.metric, self.metric_mode = "val/loss", "min"
            print(
                f"depth: the val split ({val.split_path}) has no ground-truth depth; validation "
                "reports the photometric loss (val/loss) and best weights follow it"
            )
        return DataBundle(train, val, [])


class DepthModelRole(ModelRole):
    cfg: Config
    frame_ids: tuple[int, ...]
    pose_input: str
    min_depth: float
    max_depth: float

    def build_model(self, load_pretrained: bool = True) -> nn.Module:
        m = self.cfg.model
        # Random initialisation is part of the run: the same seed builds the same two networks
        # (as ModelRole.build_model does for the other tasks).
        torch.manual_seed(self.cfg.seed)
        with model_memory():
            model = DepthModel(
                m.backbone,
                m.pose_backbone,
                self.head_name,
                self.cfg.loss.scales,
                m.in_channels,
                self.min_depth,
                self.max_depth,
                m.fixed_scale,
                m.fixed_scale_over,
                head_args=dict(m.get("head_args") or {}),
                backbone_args=dict(m.get("backbone_args") or {}),
                pose_frames=len(self.frame_ids) if self.pose_input == "all" else 2,
                fixed_scale_steps=m.get("fixed_scale_steps"),
                count_batches=bool(self.cfg.loss.get("pose_refine")),
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


class DepthPredictor(PredictorRole):
    cfg: Config
    frame_ids: tuple[int, ...]
    img_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    min_depth: float
    max_depth: float

    def _disparity(self, disp: torch.Tensor) -> torch.Tensor:
        return disp_to_depth(disp.float(), self.min_depth, self.max_depth)[0]

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
            np.concatenate([net_input(0, i), colorize_depth(disparity[i, 0])], axis=0)
            for i in range(n)
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
        return colorize_depth(1.0 / prediction["_depth"])
