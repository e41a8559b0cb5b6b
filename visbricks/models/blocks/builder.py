"""Building blocks by name for necks and heads: options, specs, predictors, initialisation."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn
from torchvision.ops import DeformConv2d

from ...errors import ConfigError
from ...registry import BLOCKS, check_arguments
from .attention import Attended

CONV_TYPES = (nn.Conv2d, nn.ConvTranspose2d, DeformConv2d)


def _defaults(name: str) -> dict[str, Any]:
    """Option name → default of block ``name``: its ``Options`` dataclass, or for a user's
    block written with plain keywords, its constructor's parameters after the third."""
    cls = BLOCKS.get(name)
    options = getattr(cls, "Options", None)
    if options is not None:
        return {f.name: f.default for f in dataclasses.fields(options)}
    params = list(inspect.signature(cls).parameters.values())[3:]
    return {p.name: p.default for p in params if p.kind is p.POSITIONAL_OR_KEYWORD}


def block_options(name: str) -> list[str]:
    """The option names block ``name`` accepts (besides ``attention``)."""
    return list(_defaults(name))


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
    if not hasattr(cls, "Options"):  # a block with its own keywords: bind them first
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
    defaults = _defaults(block)
    if "groups" not in defaults:
        return 1
    return int(options.get("groups", defaults["groups"]))


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
