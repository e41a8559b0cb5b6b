"""``depth_decoder``: Monodepth2's multi-scale disparity decoder, a head like any other (the depth
network in ``models/depth.py`` builds it by name)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import HEADS
from ..blocks import output_conv
from ..decoders import UNetDecoder


@HEADS.register("depth_decoder")
class DepthDecoder(nn.Module):
    """U-Net decoder from encoder features (strides 4..32) to disparity at strides 1, 2, 4, 8.

    The decoder is the generic :class:`~visbricks.models.decoders.UNetDecoder`: each level
    upsamples by 2 (nearest) and concatenates the encoder feature of that stride when there is
    one; its convs are Monodepth2's reflection-padded 3x3 conv + ELU (reflection padding avoids
    the dark border zero padding leaves in the disparity): ``block: conv`` with
    ``block_args: {padding_mode: reflect, activation: elu, norm: none}``, which ``block`` /
    ``block_args`` / ``attention`` / ``upsample`` change. ``("disp", s)`` is a sigmoid in
    [0, 1] at 1/2**s of the input size; the task maps it to depth in [min_depth, max_depth].
    ``init_disp`` is the sigmoid's starting value (through the output bias).

    With ``fixed_scale`` every output is rescaled so that its per-image mean is ``init_disp``
    (clamped at 1). Monocular depth has no observable scale, and trained from scratch that free
    scale collapses: depth shrinks to min_depth, where the sigmoid saturates and the gradient
    vanishes, faster than the pose net grows its translation (seen within ~15 steps on the
    synthetic streets). Normalising inverse depth by its mean removes that direction (Wang et
    al., "Learning Depth from Monocular Videos using Direct Methods", CVPR 2018). Because
    disparity is bounded in [0, 1], a pinned mean also bounds how much of the image can be near.
    (Pinning the mean *logit* instead does not: the net then made most pixels near and a few
    extremely far, worse than the constant baseline after one epoch.)

    ``fixed_scale_over="batch"`` pins the mean of the whole batch instead, and evaluation divides
    by a running mean of those batch means (as BatchNorm does), one per scale. A per-image pin
    forces every image to the same mean disparity, so a frame with a car a few metres away, whose
    true mean disparity is far higher, must push some of its pixels farther to keep the mean;
    over the batch, an image's mean follows its content and the unobservable scale is still
    removed. On the generated streets, side by side: abs_rel 0.273 -> 0.208 in 510 s and
    0.200 -> 0.164 in the preset's 1,020 s (docs/benchmarks.md, depth).

    ``fixed_scale_over="running"`` trains with the running mean's value and the batch mean's
    gradient (Ioffe's Batch Renormalization, 2017). Under the batch pin the depth scale of a
    training step depends on which frames share its batch; with the running value every step and
    evaluation share one slowly moving scale, and as with the batch pin no gradient rescales the
    whole batch. (That the pose net, which sees one pair, could then follow the scale better was
    the idea; its measured translation-length spread did not change, so why it helps is open.)
    On the generated streets (1,020 s each): abs_rel 0.151 -> 0.138, δ<1.25 0.877 -> 0.879 on a
    Xeon, 0.172 -> 0.148 and 0.158 (two runs), 0.842 -> 0.862 and 0.853 on an AMD EPYC; the
    ``depth-driving`` preset's default. The correction is clipped to 1/1.25-1.25, as Batch
    Renormalization clips its r: unclipped (0.133 in one run) the output drifted to zero
    disparity with the running mean when the raw disparities moved faster than it follows (40
    Adam steps at lr 1e-3 on one batch).

    ``fixed_scale_steps`` releases the batch or running pin after that many training batches
    (ignored without ``fixed_scale``: nothing to release): the running mean then stays at its
    last value, the output is the raw disparity times one constant per scale, and the depth net
    may change its scale with the pose net's translation, as an unpinned Monodepth2 does. The
    pin is needed only for the start (the collapse above happens in the first ~15 steps); kept
    on, it costs accuracy: with the ground-truth motion the pinned depth reached abs_rel 0.141,
    the unpinned 0.112 (docs/benchmarks.md, depth). The count is a buffer, so a resumed run
    releases on time.
    """

    output_stride = 1  # ("disp", 0) is at the input size; its keys depend on ``scales``

    def __init__(
        self,
        in_channels: list[int],
        strides: list[int],
        scales: int = 4,
        channels: tuple[int, ...] = (16, 32, 64, 128, 256),
        init_disp: float = 0.5,
        fixed_scale: bool = False,
        fixed_scale_over: str = "image",
        block: str = "conv",
        block_args: dict | None = None,
        attention: str | None = None,
        upsample: str = "nearest",
        fixed_scale_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.init_disp = init_disp
        self.init_logit = math.log(init_disp / (1 - init_disp))
        self.fixed_scale = fixed_scale
        if fixed_scale_over not in ("image", "batch", "running"):
            raise ConfigError(
                "model.fixed_scale_over must be 'image', 'batch' or 'running', "
                f"got {fixed_scale_over!r}"
            )
        self.fixed_scale_over = fixed_scale_over
        if not fixed_scale:
            fixed_scale_steps = None  # no pin, nothing to release
        if fixed_scale_steps is not None and (fixed_scale_over == "image" or fixed_scale_steps < 0):
            # A per-image pin has no running mean to keep once released.
            raise ConfigError(
                "model.fixed_scale_steps needs model.fixed_scale_over batch or running and a "
                f"count >= 0, got fixed_scale_over={fixed_scale_over!r}, "
                f"fixed_scale_steps={fixed_scale_steps} (set model.fixed_scale_steps=null)"
            )
        self.fixed_scale_steps = fixed_scale_steps
        if strides[-1] != 2 ** (len(channels)):
            raise ConfigError(
                f"depth decoder needs an encoder whose last stride is {2 ** len(channels)}, "
                f"got strides {strides}"
            )
        if not 1 <= scales <= len(channels):
            raise ConfigError(f"depth decoder scales must be in 1..{len(channels)}, got {scales}")
        self.scales = scales
        options = {"padding_mode": "reflect", "activation": "elu", "norm": "none"}
        self.decoder = UNetDecoder(
            in_channels,
            strides,
            list(channels),
            [2**level for level in range(scales)],
            block=block,
            upsample=upsample,
            block_args={**options, **(block_args or {})},
            attention=attention,
            predict_channels=1,
        )
        for conv in self.decoder.predict.values():
            nn.init.constant_(output_conv(conv).bias, self.init_logit)
        if fixed_scale and fixed_scale_over in ("batch", "running"):
            # Index s: the batch-mean disparity at 1/2**s of the input, what evaluation divides by.
            self.register_buffer("running_mean", torch.full((scales,), float(init_disp)))
        if fixed_scale_steps is not None:
            # Only with the option: checkpoints written without it load unchanged.
            self.register_buffer("pinned_steps", torch.zeros((), dtype=torch.long))

    def forward(self, features: list[Tensor]) -> dict:
        outputs = {}
        disps = self.decoder(features)
        # Only training reads the count: evaluation divides by the running mean either way, and
        # an export then traces no tensor-to-int.
        released = self.training and self.released
        if self.training and self.fixed_scale_steps is not None and not released:
            self.pinned_steps += 1
        # Coarsest first, the order the scales were always listed in.
        for stride, logit in reversed(list(zip(self.decoder.strides, disps))):
            disp = torch.sigmoid(logit)
            scale = int(math.log2(stride))
            if self.fixed_scale:
                mean = self.running_mean[scale] if released else self._pinned_mean(disp, scale)
                disp = (disp * (self.init_disp / mean.to(disp.dtype))).clamp(max=1)
            outputs[("disp", scale)] = disp
        return outputs

    @property
    def released(self) -> bool:
        """Whether ``fixed_scale_steps`` training batches have passed (the pin is off)."""
        steps = self.fixed_scale_steps
        return steps is not None and int(self.pinned_steps) >= steps

    def _pinned_mean(self, disp: Tensor, scale: int) -> Tensor:
        """The mean that ``disp`` is divided by: per image, or the batch's (running at eval)."""
        if self.fixed_scale_over == "image":
            # The floor keeps the division's gradient (~1 / mean**2) finite when all of
            # a coarse scale's disparities collapse towards 0 (NaN gradients otherwise).
            return disp.mean((2, 3), keepdim=True).clamp(min=1e-4)
        if not self.training:
            return self.running_mean[scale].to(disp.dtype)
        mean = disp.float().mean().clamp(min=1e-4)
        pinned = mean
        if self.fixed_scale_over == "running":
            # Batch Renormalization's trick: the value is the running mean's (before this step's
            # update), the gradient the batch mean's times a constant; the correction is clipped
            # as Batch Renormalization clips its r, so the output's batch mean stays within
            # 1.25x of the pinned value.
            r = (self.running_mean[scale] / mean).detach().clamp(1 / 1.25, 1.25)
            pinned = mean * r
        with torch.no_grad():
            self.running_mean[scale].lerp_(mean.detach(), 0.1)  # BatchNorm's momentum
        return pinned.to(disp.dtype)
