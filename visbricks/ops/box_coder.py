"""Box ↔ regression-target coding shared by the detection loss and post-processing.

Training encodes ground truth with :meth:`BoxCoder.encode` and inference decodes predictions with
:meth:`BoxCoder.decode` of the *same* instance, so the two can never drift apart (a classic
source of silently wrong boxes when the variances differ between the loss and the decoder).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.ops import box_convert

from ..errors import ConfigError

# torchvision's bbox_xform_clip: exp() of a larger log-ratio would make boxes >1000/16 times the
# anchor and overflow float16 early in training.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)

# Smallest width/height fed to log() when encoding, so a degenerate ground truth gives a large
# finite target instead of -inf (which would turn the whole loss into NaN).
_MIN_SIDE = 1e-6


class BoxCoder:
    """SSD box coding with variances ``(vx, vy, vw, vh)``:

    ``dx = (gx - ax) / aw / vx``, ``dy = (gy - ay) / ah / vy``,
    ``dw = log(gw / aw) / vw``, ``dh = log(gh / ah) / vh`` (centres and sizes in pixels).

    The variances only rescale the targets so that all four have roughly unit spread; they are
    the ``1 / weights`` of torchvision's ``BoxCoder`` (0.1, 0.1, 0.2, 0.2 ↔ 10, 10, 5, 5).
    """

    def __init__(
        self, variances: Sequence[float] = (0.1, 0.1, 0.2, 0.2), clip: float = BBOX_XFORM_CLIP
    ) -> None:
        if len(variances) != 4 or any(v <= 0 for v in variances):
            raise ConfigError(f"box coder variances must be 4 positive numbers, got {variances!r}")
        self.variances = tuple(float(v) for v in variances)
        self.clip = float(clip)

    def __repr__(self) -> str:
        return f"BoxCoder(variances={self.variances}, clip={self.clip:.4f})"

    def _var(self, ref: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.variances, dtype=ref.dtype, device=ref.device)

    def encode(self, gt_xyxy: torch.Tensor, anchors_xyxy: torch.Tensor) -> torch.Tensor:
        """Regression targets (..., 4) of ``gt_xyxy`` relative to ``anchors_xyxy`` (broadcast)."""
        gt = box_convert(gt_xyxy, "xyxy", "cxcywh")
        an = box_convert(anchors_xyxy, "xyxy", "cxcywh")
        centre = (gt[..., :2] - an[..., :2]) / an[..., 2:]
        size = torch.log(gt[..., 2:].clamp(min=_MIN_SIDE) / an[..., 2:])
        return torch.cat([centre, size], dim=-1) / self._var(gt)

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """XYXY boxes (..., 4) from ``deltas`` relative to ``anchors`` (broadcast); the inverse of
        :meth:`encode` up to the clamp of the log-size terms."""
        an = box_convert(anchors, "xyxy", "cxcywh").to(deltas.dtype)
        d = deltas * self._var(deltas)
        centre = an[..., :2] + d[..., :2] * an[..., 2:]
        size = an[..., 2:] * torch.exp(d[..., 2:].clamp(max=self.clip))
        return box_convert(torch.cat([centre, size], dim=-1), "cxcywh", "xyxy")
