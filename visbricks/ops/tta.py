"""Test-time augmentation of dense predictions: the image and its mirror image, at one or more
input scales."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["flip_average_logits", "flip_blend_disparity", "multiscale_average_logits"]


def flip_average_logits(
    net: Callable[[Tensor], Mapping[str, Tensor]], images: Tensor, key: str = "logits"
) -> dict[str, Tensor]:
    """``net``'s outputs for ``images`` (B, C, H, W) with ``outputs[key]``, per-pixel class
    logits (B, K, H, W), replaced by the log of the mean class probabilities of the image and of
    its horizontal mirror, mirrored back: mmseg's flip test, which averages probabilities. Log
    probabilities are logits again (their softmax is that mean), so losses, argmax and
    resizing downstream need no second path. Costs a second forward pass: the multi-scale
    test at the input's own size only."""
    return multiscale_average_logits(net, images, [1.0], key)


def multiscale_average_logits(
    net: Callable[[Tensor], Mapping[str, Tensor]],
    images: Tensor,
    scales: Sequence[float],
    key: str = "logits",
    stride: int = 32,
) -> dict[str, Tensor]:
    """mmseg's multi-scale flip test: ``images`` (B, C, H, W) resized bilinearly by each factor
    in ``scales``, each size and its mirror image through ``net``; each pass's logits resized
    back to (H, W), turned into class probabilities and averaged; ``outputs[key]`` is the log of
    that mean (logits again, as in ``flip_average_logits``, which scales ``[1.0]`` reproduce).
    A resized input is padded at the bottom and right to a multiple of ``stride`` (what a
    U-Net's skips need) and its logits cropped before resizing back. Other outputs: the plain
    pass's at the input size. Costs 2 x sum(s**2) forward passes' worth of pixels."""
    scales = [float(s) for s in scales]
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"multi-scale test needs positive scales; got {scales}")
    height, width = images.shape[-2:]
    outputs = dict(net(images))
    total = None
    for scale in scales:
        h, w = max(1, round(height * scale)), max(1, round(width * scale))
        resized = (h, w) != (height, width)
        x = images
        if resized:
            # Antialiased below 1: a plain bilinear shrink aliases thin structures (poles).
            x = F.interpolate(
                images, size=(h, w), mode="bilinear", align_corners=False, antialias=scale < 1
            )
        for mirror in (False, True):
            if not resized and not mirror:
                logits = outputs[key].float()  # the plain pass, already run
            else:
                view = x.flip(-1) if mirror else x
                # The input's own size is used as given (a letterboxed input is padded already).
                view = F.pad(view, (0, -w % stride, 0, -h % stride)) if resized else view
                logits = net(view)[key].float()[..., :h, :w]
            if mirror:
                logits = logits.flip(-1)
            if resized:
                logits = F.interpolate(
                    logits, size=(height, width), mode="bilinear", align_corners=False
                )
            probs = logits.softmax(1)
            total = probs if total is None else total + probs
    mean = total / (2 * len(scales))
    # The smallest normal float32 keeps log() finite where every pass is certain.
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
