"""Self-supervised depth losses: SSIM + L1 photometric error, edge-aware smoothness and the
Monodepth2 minimum-reprojection loss with auto-masking (Godard et al., ICCV 2019)."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visbricks.errors import ConfigError, DataError, VisbricksError
from visbricks.ops.geometry import disp_to_depth, warp

__all__ = ["SSIM", "ReprojectionLoss", "photometric_error", "smoothness_loss"]


class SSIM(nn.Module):
    """Per-pixel SSIM dissimilarity (1 - SSIM) / 2 in [0, 1] over 3x3 windows.

    Uses a box window (average pooling) on reflection-padded images, as Monodepth2 does: the
    output keeps the input size and the border is not darkened by zero padding.
    """

    C1 = 0.01**2
    C2 = 0.03**2

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(3, 1)
        self.pad = nn.ReflectionPad2d(1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """x, y: (B, C, H, W) in 0..1 -> (B, C, H, W) dissimilarity."""
        if x.shape != y.shape or x.dim() != 4:
            raise VisbricksError(
                f"SSIM needs two (B, C, H, W) tensors of one shape; got {tuple(x.shape)} "
                f"and {tuple(y.shape)}"
            )
        x, y = self.pad(x), self.pad(y)
        mu_x, mu_y = self.pool(x), self.pool(y)
        sigma_x = self.pool(x * x) - mu_x * mu_x
        sigma_y = self.pool(y * y) - mu_y * mu_y
        sigma_xy = self.pool(x * y) - mu_x * mu_y
        num = (2 * mu_x * mu_y + self.C1) * (2 * sigma_xy + self.C2)
        den = (mu_x * mu_x + mu_y * mu_y + self.C1) * (sigma_x + sigma_y + self.C2)
        return torch.clamp((1 - num / den) / 2, 0, 1)


_ssim = SSIM()


def photometric_error(pred: Tensor, target: Tensor, alpha: float = 0.85) -> Tensor:
    """alpha * (1 - SSIM) / 2 + (1 - alpha) * |pred - target|, averaged over channels: (B,1,H,W).

    SSIM compares local structure, so it tolerates the brightness changes between frames that
    plain L1 punishes; the L1 term keeps the loss sensitive to absolute colour.
    """
    l1 = (pred - target).abs().mean(1, keepdim=True)
    if alpha == 0:
        return l1
    return alpha * _ssim(pred, target).mean(1, keepdim=True) + (1 - alpha) * l1


def smoothness_loss(disp: Tensor, image: Tensor) -> Tensor:
    """Edge-aware first-order smoothness of disparity (B,1,H,W) against image (B,C,H,W).

    Disparity gradients are down-weighted by exp(-|image gradient|): depth may jump where the
    image has an edge. Disparity is divided by its per-image mean first, otherwise the network
    could lower this term simply by shrinking all disparities (the scale is unobservable).
    """
    if disp.dim() != 4 or disp.shape[1] != 1 or disp.shape[-2:] != image.shape[-2:]:
        raise VisbricksError(
            f"smoothness_loss needs disp (B,1,H,W) and image (B,C,H,W) of one size; got "
            f"{tuple(disp.shape)} and {tuple(image.shape)}"
        )
    disp = disp / (disp.mean((2, 3), keepdim=True) + 1e-7)
    grad_disp_x = (disp[..., :, :-1] - disp[..., :, 1:]).abs()
    grad_disp_y = (disp[..., :-1, :] - disp[..., 1:, :]).abs()
    grad_img_x = (image[..., :, :-1] - image[..., :, 1:]).abs().mean(1, keepdim=True)
    grad_img_y = (image[..., :-1, :] - image[..., 1:, :]).abs().mean(1, keepdim=True)
    return (grad_disp_x * torch.exp(-grad_img_x)).mean() + (
        grad_disp_y * torch.exp(-grad_img_y)
    ).mean()


def _get(mapping: Mapping[Any, Tensor], key: Any, where: str, error: type[Exception]) -> Tensor:
    try:
        return mapping[key]
    except KeyError:
        have = sorted((k for k in mapping if isinstance(k, tuple)), key=str)
        raise error(f"ReprojectionLoss: {where} lacks key {key!r}; it has {have}") from None


class ReprojectionLoss(nn.Module):
    """Monodepth2's self-supervised loss for monocular video.

    Per scale s: the disparity ("disp", s) is upsampled to the input resolution and turned into
    depth; every source frame is warped into the target with its predicted pose
    ("cam_T_cam", 0, f) using the full-resolution intrinsics; the per-pixel photometric error
    is the minimum over sources (a pixel occluded in one source is usually visible in the
    other). With `automask`, the errors of the *unwarped* sources compete in that minimum too:
    pixels where doing nothing explains the target better than the predicted motion (static
    camera, objects moving with the camera, textureless sky) then carry the identity error,
    which has no gradient, and drop out of training. Edge-aware smoothness on the scale's own
    disparity is weighted `smoothness / 2**s`. The loss is the mean over scales.

    The photometric terms compare the non-augmented frames inputs[("color", f, 0)]; the
    networks see ("color_aug", f, s), so colour jitter never appears as a photometric error.

    `forward` returns {"loss", "photo", "smooth"} (photo + smooth == loss, each a mean over
    scales) and writes detached visualisations into `outputs`: ("depth", 0, s),
    ("color", f, s) (warped sources) and "automask" (scale 0, True = pixel used).
    """

    def __init__(
        self,
        scales: int = 4,
        frame_ids: Sequence[int] = (0, -1, 1),
        alpha: float = 0.85,
        smoothness: float = 1e-3,
        automask: bool = True,
        min_depth: float = 0.1,
        max_depth: float = 100.0,
    ) -> None:
        super().__init__()
        frame_ids = tuple(frame_ids)
        if scales < 1:
            raise ConfigError(f"loss scales must be >= 1; got {scales}")
        if len(frame_ids) < 2 or frame_ids[0] != 0 or len(set(frame_ids)) != len(frame_ids):
            raise ConfigError(
                f"frame_ids must start with the target 0 and list distinct sources; got {frame_ids}"
            )
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"loss alpha must be in [0, 1]; got {alpha}")
        if not 0 < min_depth < max_depth:
            raise ConfigError(f"need 0 < min_depth < max_depth; got {min_depth}, {max_depth}")
        self.scales = scales
        self.frame_ids = frame_ids
        self.alpha = alpha
        self.smoothness = smoothness
        self.automask = automask
        self.min_depth = min_depth
        self.max_depth = max_depth

    def forward(
        self, inputs: Mapping[Any, Tensor], outputs: MutableMapping[Any, Tensor]
    ) -> dict[str, Tensor]:
        device = _get(inputs, ("color", 0, 0), "inputs", DataError).device
        # Under mixed precision the projection matmuls would otherwise run in half precision,
        # whose ~1e-3 relative error is a pixel or more of misregistration at full resolution.
        with torch.autocast(device_type=device.type, enabled=False):
            return self._loss(inputs, outputs)

    def _loss(
        self, inputs: Mapping[Any, Tensor], outputs: MutableMapping[Any, Tensor]
    ) -> dict[str, Tensor]:
        sources = self.frame_ids[1:]
        target = _get(inputs, ("color", 0, 0), "inputs", DataError).float()
        height, width = target.shape[-2:]
        K = _get(inputs, ("K", 0), "inputs", DataError).float()
        inv_K = inputs.get(("inv_K", 0))
        inv_K = inv_K.float() if inv_K is not None else None
        source_images = [
            _get(inputs, ("color", f, 0), "inputs", DataError).float() for f in sources
        ]
        poses = [
            _get(outputs, ("cam_T_cam", 0, f), "outputs", ConfigError).float() for f in sources
        ]

        # The identity errors do not depend on the scale or the prediction: compute them once.
        identity = None
        if self.automask:
            identity = torch.cat(
                [photometric_error(img, target, self.alpha) for img in source_images], 1
            )

        photo_total = target.new_zeros(())
        smooth_total = target.new_zeros(())
        for scale in range(self.scales):
            disp = _get(outputs, ("disp", scale), "outputs", ConfigError).float()
            full_disp = disp
            if disp.shape[-2:] != (height, width):
                # Computing the loss at full resolution for every scale (rather than on
                # downsampled images) stops low-resolution scales from learning texture-copy
                # artefacts in large low-texture regions (Monodepth2, section 3.3).
                full_disp = F.interpolate(
                    disp, size=(height, width), mode="bilinear", align_corners=False
                )
            _, depth = disp_to_depth(full_disp, self.min_depth, self.max_depth)
            outputs[("depth", 0, scale)] = depth.detach()

            reprojection = []
            for frame_id, image, pose in zip(sources, source_images, poses, strict=True):
                warped, _ = warp(image, depth, K, pose, inv_K)
                outputs[("color", frame_id, scale)] = warped.detach()
                reprojection.append(photometric_error(warped, target, self.alpha))
            errors = torch.cat(reprojection, 1)
            if identity is not None:
                # Random noise breaks exact ties (e.g. a static camera and a textureless
                # region) in favour of neither branch.
                noisy_identity = identity + 1e-5 * torch.randn_like(identity)
                errors = torch.cat([noisy_identity, errors], 1)
            best, index = errors.min(1, keepdim=True)
            if identity is not None and scale == 0:
                outputs["automask"] = (index >= identity.shape[1]).detach()
            photo = best.mean()

            smooth = (
                self.smoothness
                / 2**scale
                * smoothness_loss(disp, self._colour_at(inputs, scale, disp.shape[-2:]))
            )
            photo_total = photo_total + photo
            smooth_total = smooth_total + smooth

        photo_total = photo_total / self.scales
        smooth_total = smooth_total / self.scales
        return {"loss": photo_total + smooth_total, "photo": photo_total, "smooth": smooth_total}

    @staticmethod
    def _colour_at(inputs: Mapping[Any, Tensor], scale: int, size: torch.Size) -> Tensor:
        """The target colour image at the disparity's resolution for the smoothness term."""
        image = inputs.get(("color", 0, scale))
        if image is not None and image.shape[-2:] == size:
            return image.float()
        # A dataset that only provides full resolution still works: average-pool it down.
        full = _get(inputs, ("color", 0, 0), "inputs", DataError).float()
        return F.interpolate(full, size=tuple(size), mode="area")
