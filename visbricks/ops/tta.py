"""Test-time augmentation of dense predictions: the image and its mirror image."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping

import torch
from torch import Tensor

__all__ = ["flip_average_logits", "flip_blend_disparity"]


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


def flip_blend_disparity(
    net: Callable[[Tensor], Mapping], images: Tensor, key: Hashable = ("disp", 0)
) -> dict:
    """Monodepth2's post-processing (its ``--post_process``, from Godard et al. 2017): the
    disparity (B, 1, H, W) ``outputs[key]`` of ``images`` and that of their mirror images,
    mirrored back, blended across the width: the mean in the middle, but within 5-10 % of the
    left border the mirror pass's, within 5-10 % of the right border the plain pass's (ramps
    of 1 - clip(20 (x - 0.05), 0, 1)), because the border a view cannot see past is where its
    disparity goes wrong. The weights add up to one, so blending the network's sigmoid or the
    scaled disparity of ``disp_to_depth`` gives the same result. Other outputs: the plain pass's.
    """
    outputs = dict(net(images))
    plain = outputs[key].float()
    mirrored = net(images.flip(-1))[key].float().flip(-1)
    x = torch.linspace(0, 1, plain.shape[-1], device=plain.device)
    left = 1.0 - (20 * (x - 0.05)).clamp(0, 1)  # 1 at the left border, 0 past 10 % of the width
    right = left.flip(0)
    outputs[key] = right * plain + left * mirrored + (1 - left - right) * (plain + mirrored) / 2
    return outputs
