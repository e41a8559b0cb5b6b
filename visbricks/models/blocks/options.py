"""What every block is made of: the shared option types and the conv → norm → activation unit.

A block's options are one frozen dataclass (its ``Options``): the common ``NormActOptions``
(kernel size, norm, activation, bias), ``ConvOptions`` (+ padding mode and dilation) and a few
per-block fields on top. ``parse_options`` turns the user's keywords into that object, so a
misspelt option is one ConfigError listing the block's options, and ``block_options`` reads
the same fields for hints and for the necks that forward options between blocks.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation
from torchvision.ops.misc import ConvNormActivation

from ...errors import ConfigError

NORMS = ("bn", "gn", "none")
ACTIVATIONS: dict[str, Callable[..., nn.Module] | None] = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "gelu": lambda inplace=True: nn.GELU(),  # GELU has no in-place form
    "none": None,
}
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


@dataclasses.dataclass(frozen=True)
class NormActOptions:
    """Options of every conv-based block: ``kernel_size``, ``norm`` (bn | gn | none),
    ``activation`` (relu | silu | elu | gelu | none) and ``bias`` (null: only without norm)."""

    kernel_size: int = 3
    norm: str | None = "bn"
    activation: str | None = "relu"
    bias: bool | None = None

    def unit(self) -> dict[str, Any]:
        """The keywords ``ConvUnit`` takes from these options."""
        return dict(norm=self.norm, activation=self.activation, bias=self.bias)


@dataclasses.dataclass(frozen=True)
class ConvOptions(NormActOptions):
    """``NormActOptions`` + ``padding_mode`` (zeros | reflect | replicate | circular) and
    ``dilation``: the options of a block whose convs pad their input."""

    padding_mode: str = "zeros"
    dilation: int = 1


@dataclasses.dataclass(frozen=True)
class GroupedOptions(ConvOptions):
    groups: int = 1


O = TypeVar("O")


def parse_options(block: str, options_type: type[O], options: dict[str, Any]) -> O:
    """``options_type(**options)``; an option the block does not have is one ConfigError that
    names it and lists the block's options."""
    names = [f.name for f in dataclasses.fields(options_type)]  # type: ignore[arg-type]
    unknown = [k for k in options if k not in names]
    if unknown:
        raise ConfigError(
            f"block {block!r}: unknown option {', '.join(map(repr, unknown))} "
            f"(its options: {', '.join(names)}, attention)"
        )
    return options_type(**options)


def norm_layer(norm: str | None) -> Callable[[int], nn.Module] | None:
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


def activation_layer(activation: str | None) -> Callable[..., nn.Module] | None:
    activation = "none" if activation is None else activation
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"block option activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}"
        )
    return ACTIVATIONS[activation]


def too_small(padding: int, x: Tensor) -> bool:
    return padding >= min(x.shape[-2:])


class ReflectConv2d(nn.Conv2d):
    """``Conv2d(padding_mode="reflect")`` that replicates the edge instead on a map too small to
    reflect (padding >= its size: a dilated conv on a deep 2x2 map), where F.pad fails."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.padding_mode == "reflect" and too_small(self.padding[0], input):
            input = F.pad(input, self._reversed_padding_repeated_twice, mode="replicate")
            return F.conv2d(input, weight, bias, self.stride, 0, self.dilation, self.groups)
        return super()._conv_forward(input, weight, bias)


def padded_conv(padding_mode: str) -> Callable[..., nn.Module]:
    """The conv class for ``padding_mode`` (checked by name)."""
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


def positive(name: str, **values: int) -> None:
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
            norm_layer(norm),
            activation_layer(activation),
            dilation,
            True,
            bias,
            conv_layer or padded_conv(padding_mode),
        )
