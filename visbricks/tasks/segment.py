"""``segment``: semantic segmentation, encoder → decoder (docs/architecture.md §1).

The bricks live elsewhere and are wired here: any registered backbone is the encoder (features at
strides 4–32), a decoder head (``unet``, ``fpn``, ``deeplabv3plus``, ``fcn`` in
``models.heads.segment``) gives logits at the input size; mask formats and augmentation are in
``data.formats.masks`` / ``data.segmentation``; the loss (CE with ignore index, class weights,
OHEM, Dice) in ``models.seg_losses``; the dataset-level confusion-matrix metrics in
``metrics.segmentation``; drawing in ``data.draw``.

Evaluation — training's validation and ``visbricks eval`` alike — scores at the resolution
``eval.resolution`` names (docs/architecture.md §1):

- ``original`` (default, as mmseg): the network sees the image letterboxed to ``img_size``; each
  image's logits are mapped back (padding cut, bilinear to its own size) and the argmax is
  compared with its label map as read — the same map ``predict`` writes, so scoring
  ``predict``'s index masks gives ``eval``'s numbers;
- ``network``: the argmax at ``img_size`` against the label resized there by nearest neighbour
  (padding ignored) — cheaper, and labelled as such in the table and metrics.json.

Mask data, letterboxing and drawing are the mask roles (``tasks/roles/masks.py``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from ..config import Config, section_kwargs
from ..data.formats.masks import SegmentationSet
from ..data.segmentation import class_pixel_counts, median_frequency_weights
from ..errors import ConfigError, DataError
from ..metrics.segmentation import IGNORE_INDEX, SegmentationEvaluator
from ..models.seg_losses import SegmentationLoss
from ..ops.tta import flip_average_logits, multiscale_average_logits
from ..registry import TASKS
from .base import Task
from .roles.masks import (
    SEGMENT_YAML,
    MaskData,
    MaskPredictor,
    _is_background,
    original_class_map,
)

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
        # eval.tta=multiscale: the passes' input scales relative to the letterbox (eval_size),
        # which is at the largest one; checked here so a bad list fails before any work.
        self._tta_factors: list[float] = []
        self._eval_size = self.img_size
        if cfg.eval.tta == "multiscale":
            scales = [float(s) for s in cfg.eval.tta_scales]
            if not scales:
                raise ConfigError("eval.tta=multiscale needs at least one of eval.tta_scales")
            self._tta_factors = [s / max(scales) for s in scales]
            h, w = self.img_size
            self._eval_size = (max(1, round(h * max(scales))), max(1, round(w * max(scales))))

    # ---- model and loss -----------------------------------------------------------------------
    def build_head(self, in_channels: list[int], strides: list[int]) -> nn.Module:
        return self.make_head(in_channels, strides, num_classes=len(self.classes))

    @property
    def criterion(self) -> SegmentationLoss:
        if self._criterion is None:
            loss = self.cfg.loss
            weights = loss.class_weights
            if weights == "median_freq":
                # At img_size, whatever eval.tta letterboxes to: an evaluation option must not
                # change the training loss.
                train = self._dataset("train", False, size=self.img_size)
                counts = class_pixel_counts(train, limit=500)
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
    def infer(self, model: nn.Module, images: torch.Tensor) -> dict:
        """``eval.tta: flip``: the mean class probabilities of the image and its mirror;
        ``multiscale``: the same over the input resized by each of ``eval.tta_scales``."""
        tta = self.cfg.eval.tta
        if tta == "flip":
            return flip_average_logits(model, images)
        if tta == "multiscale":
            if getattr(model, "is_runtime", False):
                # An exported graph takes one input size (runtime.py checks it per call).
                raise ConfigError(
                    f"eval.tta=multiscale runs the network at other input sizes; "
                    f"{getattr(model, 'path', 'an exported model')} takes only its export "
                    "size: predict with the run's weights, or use eval.tta=flip"
                )
            # The input was letterboxed at the largest scale (eval_size): every pass resizes it
            # down, never up, so each scale sees the photo's detail as mmseg's resize of the
            # original image does (upscaling an img_size input gained nothing on CamVid).
            return multiscale_average_logits(model, images, self._tta_factors)
        return model(images)

    @property
    def eval_size(self) -> tuple[int, int]:
        """img_size, or with ``eval.tta: multiscale`` img_size times the largest scale."""
        return self._eval_size

    def evaluator(self, dataset: Dataset, split: str = "val") -> SegmentationEvaluator:
        return SegmentationEvaluator(
            self.classes, IGNORE_INDEX, prefix=split, resolution=self.eval_resolution
        )

    def eval_pairs(
        self, outputs: dict, batch: dict
    ) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor | list[torch.Tensor]]:
        """Network resolution: the batch's (N, H, W) maps as they are. Original resolution: one
        (h, w) map per image, mapped back as ``predict`` maps it, with its label as read."""
        if self.eval_resolution == "network":
            return outputs["logits"].argmax(1), batch["semantic"]
        originals = batch.get("semantic_original")
        if originals is None:
            raise DataError(
                "eval.resolution=original scores against each image's label map as read, which "
                "this batch does not carry (a training split's dataset?); evaluate the task's "
                "val dataset or set eval.resolution=network"
            )
        # Image by image: sizes differ, and one original-size logit map at a time keeps
        # memory bounded by the largest image, not the batch.
        preds = [
            original_class_map(lg, size, box)
            for lg, size, box in zip(outputs["logits"], batch["orig_size"], batch["letterbox"])
        ]
        return preds, originals
