"""Test-time augmentation of dense predictions: the image and its mirror image."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

__all__ = ["flip_average_logits"]


def flip_average_logits(
    net: Callable[[Tensor], Mapping[str, Tensor]], images: Tensor, key: str = "logits"
) -> dict[str, Tensor]:
    """``net``'s outputs for ``images`` (B, C, H, W) with ``outputs[key]``, per-pixel class
    logits (B, K, H, W), replaced by the log of the mean class probabilities of the image and of
    its horizontal mirror, mirrored back: mmseg's flip test, which averages probabilities. Log
    probabilities are logits again (their softmax is that mean), so losses, argmax and
    resizing downstream need no second path. Costs a second forward pass."""
    outputs = dict(net(images))
    mirrored = net(images.flip(-1))[key].float().flip(-1)
    mean = (outputs[key].float().softmax(1) + mirrored.softmax(1)) / 2
    # The smallest normal float32 keeps log() finite where both passes are certain.
    outputs[key] = mean.clamp_min(torch.finfo(torch.float32).tiny).log()
    return outputs
