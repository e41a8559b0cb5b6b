"""Conv blocks: the bricks necks, decoders and heads build their convolutions from.

Every block is registered in ``BLOCKS`` and built as ``build_block(name, in_channels,
out_channels, stride=1, **options)``; it is an ``nn.Module`` with ``out_channels``. Its options
are one dataclass, ``Options`` (``options.py``): most blocks share ``ConvOptions`` —
``kernel_size`` (3), ``norm`` (``bn | gn | none``), ``activation`` (``relu | silu | elu | gelu
| none``), ``bias`` (null: only when there is no norm), ``padding_mode`` (``zeros | reflect |
replicate | circular``), ``dilation`` — plus their own fields. ``attention: se | cbam`` (any
block) appends an attention module. A new block is one class taking ``(in_channels,
out_channels, stride=1, **options)`` (with an ``Options`` dataclass, or plain keywords) plus
``@BLOCKS.register("name")``.

Files: ``options.py`` (option types, norm/activation/padding lookups, ``ConvUnit``),
``conv.py`` (conv, dilated, aspp, deformable, dwsep, group_shuffle, gated), ``upsample.py``
(up_transposed, up_bilinear), ``attention.py`` (se, cbam), ``builder.py`` (build by name).
"""

from .attention import CBAM, SE, Attended
from .builder import (
    CONV_TYPES,
    Predictor,
    block_groups,
    block_options,
    block_spec,
    build_block,
    build_upsample,
    init_convs,
    is_upsampling,
    output_conv,
    predictor_spec,
)
from .conv import (
    ASPP,
    ConvBlock,
    DeformableBlock,
    DeformableConv2d,
    DepthwiseSeparable,
    DilatedBlock,
    GatedConv,
    GroupShuffle,
)
from .options import (
    ACTIVATIONS,
    NORMS,
    PADDING_MODES,
    ConvOptions,
    ConvUnit,
    GroupedOptions,
    NormActOptions,
    ReflectConv2d,
    fit_groups,
    parse_options,
)
from .upsample import UpBilinear, UpTransposed

__all__ = [
    "ACTIVATIONS", "ASPP", "CBAM", "CONV_TYPES", "NORMS", "PADDING_MODES", "SE", "Attended",
    "ConvBlock", "ConvOptions", "ConvUnit", "DeformableBlock", "DeformableConv2d",
    "DepthwiseSeparable", "DilatedBlock", "GatedConv", "GroupShuffle", "GroupedOptions",
    "NormActOptions", "Predictor", "ReflectConv2d", "UpBilinear", "UpTransposed", "block_groups",
    "block_options", "block_spec", "build_block", "build_upsample", "fit_groups", "init_convs",
    "is_upsampling", "output_conv", "parse_options", "predictor_spec",
]  # fmt: skip
