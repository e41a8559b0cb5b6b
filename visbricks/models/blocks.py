"""Conv blocks: the bricks necks, decoders and heads build their convolutions from.

Every block is registered in ``BLOCKS`` and built as ``build_block(name, in_channels,
out_channels, stride=1, **options)``; it is an ``nn.Module`` with ``out_channels``. Options most
blocks share: ``kernel_size`` (3), ``norm`` (``bn | gn | none``), ``activation`` (``relu | silu
| elu | gelu | none``), ``padding_mode`` (``zeros | reflect | replicate | circular``) and
``bias`` (null: only when there is no norm). ``attention: se | cbam`` (any block) appends an
attention module to the block. A new block is one class taking ``(in_channels, out_channels,
stride=1, **options)`` plus ``@BLOCKS.register("name")``.

Parameter counts (no norm, so every conv has a bias; ``k`` kernel size, ``g`` groups):
``conv``/``dilated`` ``(C_in k² / g + 1) C_out``; ``dwsep`` ``(k² + 1) C_in + (C_in + 1) C_out``;
``group_shuffle`` ``(C_in k² / g + 1) C_out + (C_out / g + 1) C_out``; ``gated`` twice ``conv``.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation, DeformConv2d, SqueezeExcitation
from torchvision.ops.misc import ConvNormActivation

from ..errors import ConfigError
from ..registry import BLOCKS, check_arguments

NORMS = ("bn", "gn", "none")
ACTIVATIONS: dict[str, Callable[..., nn.Module] | None] = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "gelu": lambda inplace=True: nn.GELU(),  # GELU has no in-place form
    "none": None,
}
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
CONV_TYPES = (nn.Conv2d, nn.ConvTranspose2d, DeformConv2d)


def _norm_layer(norm: str | None) -> Callable[[int], nn.Module] | None:
    norm = "none" if norm is None else norm
    if norm not in NORMS:
        raise ConfigError(f"block option norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "gn":
        # 32 groups (Wu & He 2018) where the channels allow it, else the largest power of two
        # dividing them: GroupNorm needs the channels to split evenly.
        return lambda channels: nn.GroupNorm(math.gcd(32, channels), channels)
    return None


def _activation(activation: str | None) -> Callable[..., nn.Module] | None:
    activation = "none" if activation is None else activation
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"block option activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}"
        )
    return ACTIVATIONS[activation]


def _too_small(padding: int, x: Tensor) -> bool:
    return padding >= min(x.shape[-2:])


class ReflectConv2d(nn.Conv2d):
    """``Conv2d(padding_mode="reflect")`` that replicates the edge instead on a map too small to
    reflect (padding >= its size: a dilated conv on a deep 2x2 map), where F.pad fails."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.padding_mode == "reflect" and _too_small(self.padding[0], input):
            input = F.pad(input, self._reversed_padding_repeated_twice, mode="replicate")
            return F.conv2d(input, weight, bias, self.stride, 0, self.dilation, self.groups)
        return super()._conv_forward(input, weight, bias)


def _conv_layer(padding_mode: str) -> Callable[..., nn.Module]:
    if padding_mode not in PADDING_MODES:
        raise ConfigError(
            f"block option padding_mode must be one of {', '.join(PADDING_MODES)}, "
            f"got {padding_mode!r}"
        )
    # Conv2d pads with F.pad(mode=padding_mode) itself: the same numbers as ReflectionPad2d + an
    # unpadded conv (Monodepth2's decoder), in one module.
    if padding_mode == "reflect":
        return partial(ReflectConv2d, padding_mode="reflect")
    return nn.Conv2d if padding_mode == "zeros" else partial(nn.Conv2d, padding_mode=padding_mode)


_GROUP_NOTES: set[tuple] = set()  # the group fallbacks already reported (once per case)


def fit_groups(block: str, option: str, requested: int, **channels: int) -> int:
    """``requested`` groups if they divide every one of ``channels``, else the largest count
    below it that does (1 at worst), said once per distinct case: heads and necks size their
    convs by the data (42 = 6 anchors x 7 classes), not by the groups a user picked for a
    block, so a grouped block adapts rather than refusing the model."""
    common = math.gcd(*channels.values())
    if common % requested == 0:
        return requested
    fit = max(d for d in range(1, requested + 1) if common % d == 0)
    key = (block, option, requested, *channels.items())
    if key not in _GROUP_NOTES:
        _GROUP_NOTES.add(key)
        counts = " and ".join(f"{k} ({v})" for k, v in channels.items())
        warnings.warn(
            f"block {block!r}: {option}={requested} does not divide {counts}; using "
            f"{option}={fit}, the largest count that does (set block_args.{option} to choose)",
            stacklevel=2,
        )
    return fit


def _positive(name: str, **values: int) -> None:
    bad = {k: v for k, v in values.items() if not isinstance(v, int) or v < 1}
    if bad:
        raise ConfigError(
            f"block {name!r}: {', '.join(f'{k}={v!r}' for k, v in bad.items())} "
            "must be positive integers"
        )


class ConvUnit(Conv2dNormActivation):
    """conv → norm → activation (torchvision's ``Conv2dNormActivation``), by option names.

    ``conv_layer`` swaps the convolution (reflect padding, deformable, transposed) while the
    module keeps torchvision's layout: children ``0`` (conv), ``1`` (norm), ``2`` (activation).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        norm: str | None = "bn",
        activation: str | None = "relu",
        padding_mode: str = "zeros",
        dilation: int = 1,
        groups: int = 1,
        bias: bool | None = None,
        padding: int | None = None,
        conv_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        ConvNormActivation.__init__(
            self,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            groups,
            _norm_layer(norm),
            _activation(activation),
            dilation,
            True,
            bias,
            conv_layer or _conv_layer(padding_mode),
        )


# ---- the conv family --------------------------------------------------------------------------
@BLOCKS.register("conv")
class ConvBlock(ConvUnit):
    """conv + norm + activation; ``groups`` > 1 is a grouped conv."""

    block_name = "conv"  # as registered: the name a group fallback note gives

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        norm: str | None = "bn",
        activation: str | None = "relu",
        padding_mode: str = "zeros",
        bias: bool | None = None,
        groups: int = 1,
        dilation: int = 1,
    ) -> None:
        _positive("conv", kernel_size=kernel_size, groups=groups, dilation=dilation)
        groups = fit_groups(
            self.block_name, "groups", groups, in_channels=in_channels, out_channels=out_channels
        )
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            norm,
            activation,
            padding_mode,
            dilation,
            groups,
            bias,
        )


@BLOCKS.register("dilated")
class DilatedBlock(ConvBlock):
    """Dilated (atrous) conv: a k x k kernel with ``dilation - 1`` holes between taps. Same
    parameters as ``conv``; each layer widens the receptive field by ``(k - 1) * dilation``."""

    block_name = "dilated"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        dilation: int = 2,
        kernel_size: int = 3,
        norm: str | None = "bn",
        activation: str | None = "relu",
        padding_mode: str = "zeros",
        bias: bool | None = None,
        groups: int = 1,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            stride,
            kernel_size,
            norm,
            activation,
            padding_mode,
            bias,
            groups,
            dilation,
        )


class _ImagePool(nn.Sequential):
    """ASPP's image-level branch: global average → 1x1 conv → broadcast back to the map."""

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:  # type: ignore[override]
        return F.interpolate(super().forward(x), size=tuple(size), mode="nearest")


@BLOCKS.register("aspp")
class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabV3, Chen et al. 2017): a 1x1 conv, one dilated
    k x k conv per rate and an image-pooling branch in parallel, concatenated and projected
    by a 1x1 conv. ``stride`` > 1 strides every conv branch. The dilated branches zero-pad
    whatever ``padding_mode`` says (taken for uniformity with the other blocks): a rate-18 tap
    cannot be reflected across a map smaller than 18 pixels, and DeepLab zero-pads."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        rates: Sequence[int] = (6, 12, 18),
        kernel_size: int = 3,
        norm: str | None = "bn",
        activation: str | None = "relu",
        padding_mode: str = "zeros",
        bias: bool | None = None,
    ) -> None:
        super().__init__()
        rates = [int(r) for r in rates]
        _positive(
            "aspp", kernel_size=kernel_size, **{f"rates[{i}]": r for i, r in enumerate(rates)}
        )
        _conv_layer(padding_mode)  # validates the name
        opts = dict(norm=norm, activation=activation, bias=bias)
        branches = [ConvUnit(in_channels, out_channels, 1, stride, **opts)]
        branches += [
            ConvUnit(in_channels, out_channels, kernel_size, stride, dilation=r, **opts)
            for r in rates
        ]
        self.branches = nn.ModuleList(branches)
        # No norm on a 1x1 map: BatchNorm over one value per channel fails for a batch of one
        # and GroupNorm would zero it; the branch keeps its bias instead.
        self.pool = _ImagePool(
            nn.AdaptiveAvgPool2d(1),
            ConvUnit(in_channels, out_channels, 1, norm="none", activation=activation),
        )
        self.project = ConvUnit(out_channels * (len(rates) + 2), out_channels, 1, **opts)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        outs = [branch(x) for branch in self.branches]
        outs.append(self.pool(x, outs[0].shape[-2:]))
        return self.project(torch.cat(outs, 1))


class _KeepInit(nn.Conv2d):
    """A conv that necks/heads leave at its own initialisation (``init_convs`` skips it)."""

    keep_init = True


class DeformableConv2d(nn.Module):
    """``torchvision.ops.DeformConv2d`` with the conv predicting its offsets (and, ``modulated``,
    its DCNv2 mask) from the same input. The offset conv starts at zero and the mask is
    ``2 * sigmoid``, 1 at zero: at initialisation the block *is* a plain conv and learns to
    deform from there (Dai et al. 2017; Zhu et al. 2019). A ``padding_mode`` other than zeros
    pads the input explicitly (samples pushed beyond that border still read zeros)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        modulated: bool = False,
        offset_groups: int = 1,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.pad = None
        if padding_mode != "zeros" and padding:
            self.pad, padding = (padding,) * 4, 0
        self.padding_mode = padding_mode
        self.conv = DeformConv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias
        )
        self.modulated = modulated
        self.taps = offset_groups * kernel_size * kernel_size
        self.offset = _KeepInit(
            in_channels,
            (3 if modulated else 2) * self.taps,
            kernel_size,
            stride,
            padding,
            dilation,
        )
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.in_channels, self.out_channels = in_channels, out_channels

    @property
    def weight(self) -> nn.Parameter:
        return self.conv.weight

    @property
    def bias(self) -> nn.Parameter | None:
        return self.conv.bias

    def forward(self, x: Tensor) -> Tensor:
        if self.pad is not None:
            reflect_fails = self.padding_mode == "reflect" and _too_small(self.pad[0], x)
            x = F.pad(x, self.pad, mode="replicate" if reflect_fails else self.padding_mode)
        out = self.offset(x)
        offset, mask = out[:, : 2 * self.taps], None
        if self.modulated:
            mask = 2 * torch.sigmoid(out[:, 2 * self.taps :])
        return self.conv(x, offset, mask)


@BLOCKS.register("deformable")
class DeformableBlock(ConvUnit):
    """Deformable conv (DCN; ``modulated: true`` for DCNv2) + norm + activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        modulated: bool = False,
        offset_groups: int = 1,
        norm: str | None = "bn",
        activation: str | None = "relu",
        padding_mode: str = "zeros",
        bias: bool | None = None,
        dilation: int = 1,
    ) -> None:
        _positive("deformable", kernel_size=kernel_size, offset_groups=offset_groups)
        _conv_layer(padding_mode)  # validates the name
        offset_groups = fit_groups(
            "deformable", "offset_groups", offset_groups, in_channels=in_channels
        )
        layer = partial(
            DeformableConv2d,
            modulated=bool(modulated),
            offset_groups=offset_groups,
            padding_mode=padding_mode,
        )
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            norm,
            activation,
            dilation=dilation,
            bias=bias,
            conv_layer=layer,
        )


@BLOCKS.register("dwsep")
class DepthwiseSeparable(nn.Sequential):
    """Depthwise k x k conv (one filter per channel) → pointwise 1x1 conv, each with norm and
    activation (MobileNet, Howard et al. 2017): ``k² C_in + C_in C_out`` weights instead of
    ``k² C_in C_out``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        norm: str | None = "bn",
        activation: str | None = "relu",
        padding_mode: str = "zeros",
        bias: bool | None = None,
        dilation: int = 1,
    ) -> None:
        _positive("dwsep", kernel_size=kernel_size, dilation=dilation)
        opts = dict(norm=norm, activation=activation, bias=bias)
        super().__init__(
            ConvUnit(
                in_channels,
                in_channels,
                kernel_size,
                stride,
                padding_mode=padding_mode,
                dilation=dilation,
                groups=in_channels,
                **opts,
            ),
            ConvUnit(in_channels, out_channels, 1, **opts),
        )
        self.out_channels = out_channels


@BLOCKS.register("group_shuffle")
class GroupShuffle(nn.Sequential):
    """Group conv → channel shuffle → 1x1 group conv (ShuffleNet, Zhang et al. 2018; the
    interleaved group convolutions of the notes). The shuffle re-deals the channels so that each
    group of the second conv sees one channel from every group of the first: the output depends
    on every input channel, at ``1 / groups`` of a dense conv's weights."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        groups: int = 4,
        kernel_size: int = 3,
        norm: str | None = "bn",
        activation: str | None = "relu",
        padding_mode: str = "zeros",
        bias: bool | None = None,
    ) -> None:
        _positive("group_shuffle", kernel_size=kernel_size, groups=groups)
        groups = fit_groups(
            "group_shuffle", "groups", groups, in_channels=in_channels, out_channels=out_channels
        )
        opts = dict(norm=norm, activation=activation, bias=bias)
        super().__init__(
            ConvUnit(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding_mode=padding_mode,
                groups=groups,
                **opts,
            ),
            nn.ChannelShuffle(groups),
            ConvUnit(out_channels, out_channels, 1, groups=groups, **opts),
        )
        self.out_channels = out_channels


class _Upsampling:
    """Marks a block that doubles the resolution (necks/decoders use them as ``upsample``)."""

    upsamples = True

    @staticmethod
    def _check_stride(name: str, stride: int) -> None:
        if stride != 1:
            raise ConfigError(f"block {name!r} upsamples x2 and takes no stride, got {stride}")


@BLOCKS.register("up_transposed")
class UpTransposed(_Upsampling, ConvUnit):
    """x2 upsampling by a transposed conv (+ norm + activation); the output is exactly twice the
    input size for any kernel size (padding and output_padding chosen for it)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        norm: str | None = "bn",
        activation: str | None = "relu",
        bias: bool | None = None,
    ) -> None:
        self._check_stride("up_transposed", stride)
        _positive("up_transposed", kernel_size=kernel_size)
        if kernel_size < 2:
            raise ConfigError("block 'up_transposed' needs kernel_size >= 2 to double the size")
        # out = 2 (H - 1) - 2 p + k + op = 2 H  ⇔  k - 2 p + op = 2
        padding, output_padding = (kernel_size - 1) // 2, kernel_size % 2
        layer = partial(nn.ConvTranspose2d, output_padding=output_padding)
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            2,
            norm,
            activation,
            padding=padding,
            bias=bias,
            conv_layer=layer,
        )


@BLOCKS.register("up_bilinear")
class UpBilinear(_Upsampling, nn.Sequential):
    """x2 bilinear upsampling then a conv (+ norm + activation): no checkerboard artefacts."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        norm: str | None = "bn",
        activation: str | None = "relu",
        padding_mode: str = "zeros",
        bias: bool | None = None,
    ) -> None:
        self._check_stride("up_bilinear", stride)
        nn.Sequential.__init__(
            self,
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            ConvBlock(
                in_channels, out_channels, 1, kernel_size, norm, activation, padding_mode, bias
            ),
        )
        self.out_channels = out_channels


class _Gate(ReflectConv2d):
    keep_init = True


@BLOCKS.register("gated")
class GatedConv(nn.Module):
    """Gated conv (Yu et al., free-form inpainting, 2019): ``act(norm(conv_f(x))) *
    sigmoid(conv_g(x))``, a learned soft mask on every output channel and pixel."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        norm: str | None = "bn",
        activation: str | None = "relu",
        padding_mode: str = "zeros",
        bias: bool | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        _positive("gated", kernel_size=kernel_size, dilation=dilation)
        self.feature = ConvBlock(
            in_channels,
            out_channels,
            stride,
            kernel_size,
            norm,
            activation,
            padding_mode,
            bias,
            dilation=dilation,
        )
        self.gate = _Gate(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            (kernel_size - 1) // 2 * dilation,
            dilation,
            padding_mode=padding_mode,
        )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.feature(x) * torch.sigmoid(self.gate(x))


# ---- attention ----------------------------------------------------------------------------------
def _squeezed(channels: int, reduction: int) -> int:
    # At least 8 hidden units (as MobileNetV3's SE): one or two ReLU units on narrow necks die
    # and then pass no gradient to the attention at all.
    return min(channels, max(8, channels // reduction))


class _Attention:
    """Marks an attention module: channels in = out, applied after a block (``attention:``)."""

    attention = True
    keep_init = True

    @staticmethod
    def _check(name: str, in_channels: int, out_channels: int, stride: int) -> None:
        if in_channels != out_channels or stride != 1:
            raise ConfigError(
                f"attention {name!r} keeps the shape: in_channels ({in_channels}) must equal "
                f"out_channels ({out_channels}) and stride must be 1 (got {stride})"
            )


@BLOCKS.register("se")
class SE(_Attention, SqueezeExcitation):
    """Squeeze-and-excitation (Hu et al. 2018): channel weights from globally pooled features
    (torchvision's ``SqueezeExcitation``)."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, reduction: int = 16
    ) -> None:
        self._check("se", in_channels, out_channels, stride)
        _positive("se", reduction=reduction)
        SqueezeExcitation.__init__(self, in_channels, _squeezed(in_channels, reduction))
        self.out_channels = out_channels


@BLOCKS.register("cbam")
class CBAM(_Attention, nn.Module):
    """Convolutional block attention (Woo et al. 2018): channel attention from a shared MLP on
    the average- and max-pooled features, then spatial attention from a k x k conv on the
    channel-wise mean and max."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        reduction: int = 16,
        spatial_kernel: int = 7,
    ) -> None:
        nn.Module.__init__(self)
        self._check("cbam", in_channels, out_channels, stride)
        _positive("cbam", reduction=reduction, spatial_kernel=spatial_kernel)
        hidden = _squeezed(in_channels, reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, in_channels, 1),
        )
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        peak = self.mlp(F.adaptive_max_pool2d(x, 1))
        x = x * torch.sigmoid(avg + peak)
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.spatial(pooled))


class Attended(nn.Sequential):
    """A block followed by an attention module (``attention:`` option)."""

    def __init__(self, block: nn.Module, attention: nn.Module) -> None:
        super().__init__(block, attention)
        self.out_channels = block.out_channels
        self.upsamples = getattr(block, "upsamples", False)


# ---- building -----------------------------------------------------------------------------------
def block_options(name: str) -> list[str]:
    """The option names block ``name`` accepts (besides ``attention``)."""
    params = list(inspect.signature(BLOCKS.get(name)).parameters)[3:]
    return [p for p in params if p not in ("args", "kwargs")]


def is_upsampling(name: str) -> bool:
    return bool(getattr(BLOCKS.get(name), "upsamples", False))


def build_block(
    name: str,
    in_channels: int,
    out_channels: int,
    stride: int = 1,
    attention: str | None = None,
    **options: Any,
) -> nn.Module:
    """Block ``name`` with ``options``; a wrong option is one ConfigError naming it."""
    cls = BLOCKS.get(name)
    if getattr(cls, "attention", False):
        raise ConfigError(
            f"{name!r} is an attention module, not a conv block: use it as attention: {name}"
        )
    hint = f" (its options: {', '.join(block_options(name))}, attention)"
    check_arguments(cls, f"block {name!r}", hint, in_channels, out_channels, stride, **options)
    block = cls(in_channels, out_channels, stride, **options)
    if attention:
        att = BLOCKS.get(attention)
        if not getattr(att, "attention", False):
            raise ConfigError(
                f"attention must name an attention module "
                f"({', '.join(n for n in BLOCKS.names() if getattr(BLOCKS.get(n), 'attention', 0))}"
                f"), got {attention!r}"
            )
        block = Attended(block, att(block.out_channels, block.out_channels))
    return block


def block_spec(
    block: str, block_args: dict | None, attention: str | None, **defaults: Any
) -> Callable[..., nn.Module]:
    """``(in, out, stride=1, **more) -> block`` for the neck/head options ``block``,
    ``block_args`` and ``attention``: the brick's ``defaults`` (e.g. no norm on a predictor),
    then the user's ``block_args`` on top, then per-call ``more``."""
    if block_args is not None and not isinstance(block_args, dict):
        raise ConfigError(f"block_args must be a mapping of block options, got {block_args!r}")
    if is_upsampling(block):
        raise ConfigError(
            f"block {block!r} doubles the resolution, and these convs keep it; choose a conv "
            f"block (upsampling blocks go where an option is named upsample)"
        )
    options = {**defaults, **(block_args or {})}

    def make(in_channels: int, out_channels: int, stride: int = 1, **more: Any) -> nn.Module:
        return build_block(
            block, in_channels, out_channels, stride, attention=attention, **{**options, **more}
        )

    return make


class Predictor(nn.Sequential):
    """A grouped block at its input width, then the plain 1x1 conv that predicts (class scores,
    box offsets): see :func:`predictor_spec`."""

    def __init__(self, features: nn.Module, out_channels: int) -> None:
        super().__init__(features, nn.Conv2d(features.out_channels, out_channels, 1))
        self.out_channels = out_channels


def block_groups(block: str, options: dict[str, Any]) -> int:
    """The ``groups`` block ``block`` is built with under ``options`` (1 without the option)."""
    param = inspect.signature(BLOCKS.get(block)).parameters.get("groups")
    if param is None:
        return 1
    return int(options.get("groups", param.default))


def predictor_spec(
    block: str, block_args: dict | None, attention: str | None, **defaults: Any
) -> Callable[[int, int], nn.Module]:
    """``(in, out) -> module`` for a head's final prediction layer, whose output conv is a plain
    (ungrouped) conv whatever ``block`` is, as SSDLite's and ShuffleNet's last layers are: a
    grouped output would split the predictions among groups and need their count to divide
    anchors x classes. A block without groups (conv, dilated, deformable, dwsep: SSDLite's
    head, aspp, gated) predicts itself, as :func:`block_spec` builds it; a grouped one
    (``group_shuffle``, ``conv`` with ``groups``) runs at the input width and a plain 1x1 conv
    predicts from it (:class:`Predictor`)."""
    make = block_spec(block, block_args, attention, **defaults)
    if block_groups(block, {**defaults, **(block_args or {})}) == 1:
        return make
    return lambda in_channels, out_channels: Predictor(make(in_channels, in_channels), out_channels)


def build_upsample(
    name: str,
    in_channels: int,
    out_channels: int,
    block_args: dict | None = None,
    attention: str | None = None,
    **defaults: Any,
) -> nn.Module:
    """An upsampling block for a neck/decoder's ``upsample`` option, with the ``defaults`` and
    those of the user's ``block_args`` that it accepts (the rest are for the conv blocks)."""
    if not is_upsampling(name):
        raise ConfigError(
            f"upsample must be nearest or an upsampling block "
            f"({', '.join(n for n in BLOCKS.names() if is_upsampling(n))}), got {name!r}"
        )
    accepted = set(block_options(name))
    options = {k: v for k, v in {**defaults, **(block_args or {})}.items() if k in accepted}
    return build_block(name, in_channels, out_channels, attention=attention, **options)


# ---- initialisation helpers ----------------------------------------------------------------------
def init_convs(module: nn.Module) -> Iterator[nn.Module]:
    """The convolutions a neck/head initialises, in module order: every conv except those that
    keep their own initialisation (deformable offsets at zero, gates, attention)."""
    skip: list[str] = []
    for name, m in module.named_modules():
        if any(name.startswith(s + ".") for s in skip):
            continue
        if getattr(m, "keep_init", False):
            skip.append(name)
            continue
        if isinstance(m, CONV_TYPES):
            yield m


def output_conv(block: nn.Module) -> nn.Module:
    """The conv that produces a block's output channels (its bias sets a predictor's prior)."""
    convs = [c for c in init_convs(block) if c.out_channels == block.out_channels]
    if not convs:
        raise ConfigError(f"block {type(block).__name__} has no conv producing its output")
    return convs[-1]
