"""``segment``: semantic segmentation, encoder → decoder (docs/architecture.md §1).

The bricks live elsewhere and are wired here: any registered backbone is the encoder (features at
strides 4–32), a decoder head (``unet``, ``fpn``, ``deeplabv3plus``, ``fcn`` in
``models.heads.segment``) gives logits at the input size; mask formats and augmentation are in
``data.formats.masks`` / ``data.segmentation``; the loss (CE with ignore index, class weights,
OHEM, Dice) in ``models.seg_losses``; the dataset-level confusion-matrix metrics in
``metrics.segmentation``; drawing in ``data.draw``.

Evaluation runs at the network's input resolution (letterboxed to ``img_size``, padding ignored),
like mmseg's "whole" mode on resized data; ``predict`` maps masks back to the original image.
Mask data, letterboxing and drawing are the mask roles (``tasks/roles/masks.py``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from ..config import Config, section_kwargs
from ..data.formats.masks import SegmentationSet
from ..data.segmentation import class_pixel_counts, median_frequency_weights
from ..errors import ConfigError
from ..metrics.segmentation import IGNORE_INDEX, SegmentationEvaluator
from ..models.seg_losses import SegmentationLoss
from ..registry import TASKS
from .base import Task
from .roles.masks import SEGMENT_YAML, MaskData, MaskPredictor, _is_background

__all__ = ["SEGMENT_YAML", "SegmentTask", "_is_background"]


@TASKS.register("segment")
class SegmentTask(MaskData, MaskPredictor, Task):
    name = "segment"
    metric = "val/mIoU"
    metric_mode = "max"
    default_head = "unet"
    head_outputs = ("logits",)
    head_output_stride = 1  # per-pixel logits at the input size: any decoder that declares it
    head_kind = "segmentation decoder"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self._sets: dict[str, SegmentationSet] = {}
        self._criterion: SegmentationLoss | None = None
        self._eval_transform = None

    # ---- model and loss -----------------------------------------------------------------------
    def build_head(self, in_channels: list[int], strides: list[int]) -> nn.Module:
        return self.make_head(in_channels, strides, num_classes=len(self.classes))

    @property
    def criterion(self) -> SegmentationLoss:
        if self._criterion is None:
            loss = self.cfg.loss
            weights = loss.class_weights
            if weights == "median_freq":
                counts = class_pixel_counts(self._dataset("train", False), limit=500)
                weights = median_frequency_weights(counts)
            elif isinstance(weights, str):
                raise ConfigError(
                    f"loss.class_weights must be a list, 'median_freq' or null, got {weights!r}"
                )
            kwargs = section_kwargs(SegmentationLoss, loss, "loss", class_weights=weights)
            self._criterion = SegmentationLoss(len(self.classes), IGNORE_INDEX, **kwargs)
        return self._criterion

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        return self.criterion(outputs["logits"], batch["semantic"])

    # ---- evaluation ---------------------------------------------------------------------------
    def evaluator(self, dataset: Dataset, split: str = "val") -> SegmentationEvaluator:
        return SegmentationEvaluator(self.classes, IGNORE_INDEX, prefix=split)

    def eval_pairs(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return outputs["logits"].argmax(1), batch["semantic"]
