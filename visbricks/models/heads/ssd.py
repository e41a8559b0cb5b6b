"""SSD head: per feature level, one 3x3 conv for class scores and one for box deltas.

Class index 0 of ``cls_logits`` is background; user class ``c`` is column ``c + 1``. The shift
exists only between this head, ``SSDLoss`` and ``ssd_postprocess``; nothing outside sees it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ...errors import ConfigError
from ...ops.anchors import AnchorGenerator
from ...registry import HEADS
from ..blocks import init_convs, output_conv, predictor_spec


def softmax_background_bias(num_classes: int, prior_prob: float) -> float:
    """Background-logit bias that makes softmax give ``1 - prior_prob`` to background when all
    foreground biases are 0: ``e^b / (e^b + C) = 1 - p``  ⇒  ``b = log(C (1 - p) / p)``.
    Each foreground class then starts at ``p / C``."""
    return math.log(num_classes * (1.0 - prior_prob) / prior_prob)


def sigmoid_prior_bias(prior_prob: float) -> float:
    """RetinaNet's foreground bias ``-log((1 - p) / p)``: every sigmoid starts at ``p``."""
    return -math.log((1.0 - prior_prob) / prior_prob)


def _flatten(x: torch.Tensor, channels: int) -> torch.Tensor:
    # (B, k*ch, H, W) -> (B, H*W*k, ch): the (y, x, k) order AnchorGenerator lays anchors out in.
    b, _, h, w = x.shape
    return x.view(b, -1, channels, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, channels)


@HEADS.register("ssd")
class SSDHead(nn.Module):
    """Single-shot detection head over a list of feature maps.

    ``in_channels``/``strides`` are the neck's attributes of the same names (without
    ``strides``, each level's stride is taken as the power of two nearest image / feature size);
    the anchor generator must have one level per feature map. ``focal=True`` initialises the
    class biases for a sigmoid/focal loss (column 0 is then unused) instead of a softmax.

    Each predictor is a ``block`` (+ ``block_args``, ``attention``), bare by default (no norm,
    no activation): ``conv`` is the original SSD's 3x3 conv, ``dwsep`` SSDLite's head. Its
    output conv is always a plain one: a grouped block (``group_shuffle``) runs at the level's
    width and a 1x1 conv predicts from it (``blocks.predictor_spec``).
    """

    outputs = ("cls_logits", "box_deltas", "anchors")
    output_stride = None  # per anchor

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int] | None = None,
        num_classes: int = 1,
        anchor_generator: AnchorGenerator | None = None,
        prior_prob: float = 0.01,
        focal: bool = False,
        block: str = "conv",
        block_args: dict | None = None,
        attention: str | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
        if not 0.0 < prior_prob < 1.0:
            raise ConfigError(f"prior_prob must be in (0, 1), got {prior_prob}")
        if anchor_generator is None:
            raise ConfigError("the SSD head needs an anchor_generator (the detect task gives it)")
        if len(in_channels) != anchor_generator.num_levels:
            raise ConfigError(
                f"SSD head gets {len(in_channels)} feature maps but the anchor generator has "
                f"{anchor_generator.num_levels} levels of sizes/aspect_ratios; make them match"
            )
        if strides is not None and len(strides) != len(in_channels):
            raise ConfigError(f"strides {list(strides)} must have one entry per feature map")
        self.num_classes = num_classes
        self.anchor_generator = anchor_generator
        self.strides = list(strides) if strides is not None else None
        self.focal = focal
        ks = anchor_generator.num_anchors_per_location()
        make = predictor_spec(block, block_args, attention, norm="none", activation="none")
        self.cls_convs = nn.ModuleList(
            make(c, k * (num_classes + 1)) for c, k in zip(in_channels, ks)
        )
        self.box_convs = nn.ModuleList(make(c, k * 4) for c, k in zip(in_channels, ks))
        self._init_weights(prior_prob)

    def _init_weights(self, prior_prob: float) -> None:
        for block in [*self.cls_convs, *self.box_convs]:
            for conv in init_convs(block):
                nn.init.normal_(conv.weight, std=0.01)
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)
        c1 = self.num_classes + 1
        for block in self.cls_convs:
            conv = output_conv(block)
            if conv.bias is None:  # block_args gave the predictor a norm: no conv bias to set
                continue
            bias = conv.bias.data.view(-1, c1)  # (k, C + 1)
            if self.focal:
                bias[:, 1:] = sigmoid_prior_bias(prior_prob)
            else:
                bias[:, 0] = softmax_background_bias(self.num_classes, prior_prob)

    def _strides(
        self, features: Sequence[torch.Tensor], image_size: tuple[int, int]
    ) -> list[tuple[float, float]]:
        if self.strides is not None:
            return [(float(s), float(s)) for s in self.strides]

        # Without explicit strides, a level's stride is the power of two nearest the
        # image/feature size ratio: padded stride-2 convs round odd sizes up (75 px -> 38 at
        # stride 2), so the plain ratio is not the stride unless the input was padded.
        def nearest_pow2(image: int, feature: int) -> float:
            return float(2 ** max(round(math.log2(image / feature)), 0))

        return [
            (nearest_pow2(image_size[0], f.shape[-2]), nearest_pow2(image_size[1], f.shape[-1]))
            for f in features
        ]

    def forward(
        self, features: Sequence[torch.Tensor], image_size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """``features`` from the neck, ``image_size = (height, width)`` of the (padded) input.

        Returns ``cls_logits`` (B, A, C + 1), ``box_deltas`` (B, A, 4) and ``anchors`` (A, 4),
        flattened in the same (level, y, x, k) order."""
        if len(features) != len(self.cls_convs):
            raise ConfigError(
                f"SSD head was built for {len(self.cls_convs)} feature maps, got {len(features)}"
            )
        c1 = self.num_classes + 1
        cls = [_flatten(conv(f), c1) for conv, f in zip(self.cls_convs, features)]
        box = [_flatten(conv(f), 4) for conv, f in zip(self.box_convs, features)]
        first = features[0]
        anchors = self.anchor_generator(
            (int(image_size[0]), int(image_size[1])),
            [(int(f.shape[-2]), int(f.shape[-1])) for f in features],
            self._strides(features, image_size),
            device=first.device,
            # float32 even under autocast: fp16 anchors lose whole pixels on large images.
            dtype=torch.float64 if first.dtype == torch.float64 else torch.float32,
        )
        return {
            "cls_logits": torch.cat(cls, 1),
            "box_deltas": torch.cat(box, 1),
            "anchors": anchors,
        }
