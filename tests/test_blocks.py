"""The block library: every block in an FPN and a UNet decoder (shapes, gradients, parameter
counts against the closed-form formulas of the notes), deformable = plain conv at zero offsets,
dilated receptive-field growth in the summary, and a new block chosen by config alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visbricks.errors import ConfigError
from visbricks.models.blocks import build_block, is_upsampling
from visbricks.models.decoders import UNetDecoder
from visbricks.models.necks import FPN
from visbricks.registry import BLOCKS

CONV_BLOCKS = [
    n
    for n in BLOCKS.names()
    if not is_upsampling(n) and not getattr(BLOCKS.get(n), "attention", False)
]
UP_BLOCKS = [n for n in BLOCKS.names() if is_upsampling(n)]
IN_CH, STRIDES = [8, 16, 24, 32], [4, 8, 16, 32]


def _features(batch: int = 2, size: int = 64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(batch, c, -(-size // s), -(-size // s), generator=g)
        for c, s in zip(IN_CH, STRIDES)
    ]


def _conv(cin: int, cout: int, k: int, groups: int = 1) -> int:
    """The notes' formula: (C_in·k·k/groups + 1)·C_out, conv with bias."""
    return (cin * k * k // groups + 1) * cout


def _block_params(name: str, cin: int, cout: int, k: int = 3) -> int:
    """Closed-form parameter count of a bare block (norm none: every conv has a bias)."""
    if name in ("conv", "dilated", "up_transposed", "up_bilinear"):
        return _conv(cin, cout, k)
    if name == "dwsep":
        return _conv(cin, cin, k, groups=cin) + _conv(cin, cout, 1)
    if name == "group_shuffle":
        return _conv(cin, cout, k, groups=4) + _conv(cout, cout, 1, groups=4)
    if name == "gated":
        return 2 * _conv(cin, cout, k)
    if name == "deformable":
        return _conv(cin, cout, k) + _conv(cin, 2 * k * k, k)  # + the offset conv
    if name == "aspp":  # 1x1, three dilated kxk, image pooling 1x1, 1x1 projection of 5 branches
        return 2 * _conv(cin, cout, 1) + 3 * _conv(cin, cout, k) + _conv(5 * cout, cout, 1)
    raise AssertionError(f"no formula for block {name!r}")


def _n(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _all_grads(module: nn.Module, loss: torch.Tensor) -> None:
    loss.backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("name", [*CONV_BLOCKS, *UP_BLOCKS])
def test_block_parameters_match_closed_form(name):
    block = build_block(name, 16, 32, norm="none", activation="none")
    assert block.out_channels == 32
    assert _n(block) == _block_params(name, 16, 32)
    x = torch.randn(2, 16, 10, 12)
    scale = 2 if is_upsampling(name) else 1
    assert tuple(block(x).shape) == (2, 32, 10 * scale, 12 * scale)


def test_conv_groups_and_dwsep_formulas():
    grouped = build_block("conv", 16, 32, groups=4, kernel_size=5, norm="none")
    assert _n(grouped) == _conv(16, 32, 5, groups=4) == (16 * 25 // 4 + 1) * 32
    dws = build_block("dwsep", 16, 32, kernel_size=5, norm="none")
    assert _n(dws) == (25 + 1) * 16 + (16 + 1) * 32
    dense = build_block("conv", 16, 32, kernel_size=5, norm="none")
    assert _n(dws) < _n(grouped) < _n(dense)


def test_norm_options_add_their_parameters():
    bare = build_block("conv", 16, 32, norm="none")
    bn = build_block("conv", 16, 32, norm="bn")
    gn = build_block("conv", 16, 32, norm="gn", activation="silu")
    # BatchNorm replaces the conv's bias (32) by a scale and a shift (2 x 32).
    assert _n(bn) == _n(bare) - 32 + 64 == _n(gn)
    assert isinstance(gn[1], nn.GroupNorm) and gn[1].num_groups == 32
    assert isinstance(gn[2], nn.SiLU)


@pytest.mark.parametrize("name", CONV_BLOCKS)
def test_fpn_with_each_block(name):
    args = {"groups": 4} if name == "group_shuffle" else {}
    torch.manual_seed(0)
    fpn = FPN(IN_CH, STRIDES, 16, (1, 2, 3), 2, block=name, block_args=args, attention="se")
    outs = fpn(_features())
    assert [tuple(o.shape) for o in outs] == [
        (2, 16, -(-64 // s), -(-64 // s)) for s in fpn.strides
    ]
    assert fpn.strides == [8, 16, 32, 64, 128]
    _all_grads(fpn, sum(o.square().mean() for o in outs))
    # 3 lateral 1x1 convs, then 3 output + 2 extra blocks, each followed by SE (two 1x1 convs
    # 16 -> 8 -> 16 with biases).
    se = (16 + 1) * 8 + (8 + 1) * 16
    lateral = sum(_conv(c, 16, 1) for c in IN_CH[1:])
    assert _n(fpn) == lateral + 5 * (_block_params(name, 16, 16) + se)


@pytest.mark.parametrize("name", CONV_BLOCKS)
def test_unet_decoder_with_each_block(name):
    args = {"norm": "gn", "groups": 4} if name == "group_shuffle" else {"norm": "gn"}
    torch.manual_seed(0)
    dec = UNetDecoder(IN_CH, STRIDES, [8, 8, 16, 16], [2, 4, 8], block=name, block_args=args)
    outs = dec(_features())
    assert dec.strides == [2, 4, 8] and dec.out_channels == [8, 8, 16]
    assert [tuple(o.shape) for o in outs] == [(2, 8, 32, 32), (2, 8, 16, 16), (2, 16, 8, 8)]
    _all_grads(dec, sum(o.square().mean() for o in outs))


@pytest.mark.parametrize("name", UP_BLOCKS)
def test_upsampling_blocks_in_fpn_and_decoder(name):
    torch.manual_seed(0)
    fpn = FPN(IN_CH, STRIDES, 16, (1, 2, 3), 0, upsample=name)
    outs = fpn(_features(size=72))  # 72 px: 9x9 at stride 8, 5x5 at 16 (odd maps are resized)
    assert [tuple(o.shape[-2:]) for o in outs] == [(9, 9), (5, 5), (3, 3)]
    _all_grads(fpn, sum(o.square().mean() for o in outs))
    up_params = 2 * _block_params(name, 16, 16)
    assert _n(fpn) == sum(_conv(c, 16, 1) for c in IN_CH[1:]) + 3 * _conv(16, 16, 3) + up_params

    dec = UNetDecoder(IN_CH, STRIDES, 8, [1], upsample=name, block_args={"norm": "none"})
    out = dec(_features())[0]
    assert tuple(out.shape) == (2, 8, 64, 64)
    _all_grads(dec, out.square().mean())
    with pytest.raises(ConfigError, match="upsample"):
        UNetDecoder(IN_CH, STRIDES, 8, [4], block=name)


@pytest.mark.parametrize("modulated", [False, True])
def test_deformable_at_zero_offsets_is_the_plain_conv(modulated):
    torch.manual_seed(0)
    block = build_block(
        "deformable", 6, 5, norm="none", activation="none", modulated=modulated, dilation=2
    ).double()
    x = torch.randn(2, 6, 11, 13, dtype=torch.float64)
    conv = block[0].conv
    plain = F.conv2d(x, conv.weight, conv.bias, padding=2, dilation=2)
    assert not block[0].offset.weight.any()  # starts at zero offsets (and mask 2·sigmoid(0) = 1)
    torch.testing.assert_close(block(x), plain, rtol=0, atol=1e-12)
    # Reflect padding is padded explicitly: at zero offsets the reflect-padded plain conv.
    reflect = build_block(
        "deformable", 6, 5, norm="none", activation="none", padding_mode="reflect"
    ).double()
    conv = reflect[0].conv
    padded = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), conv.weight, conv.bias)
    torch.testing.assert_close(reflect(x), padded, rtol=0, atol=1e-12)
    # Offsets move the samples: the same weights then give a different output.
    with torch.no_grad():
        block[0].offset.bias.fill_(0.5)
    assert (block(x) - plain).abs().max() > 1e-3


def test_dilated_receptive_field_grows_by_k_minus_1_times_rate():
    from visbricks.deploy.summary import layer_receptive_fields, summarize

    for rate, k in ((1, 3), (2, 3), (3, 5)):
        net = nn.Sequential(
            *(build_block("dilated", 4, 4, dilation=rate, kernel_size=k) for _ in range(3))
        )
        names = ["0", "1", "2"]
        fields = layer_receptive_fields(net, names, 4, 96)
        assert [fields[n][0] for n in names] == [
            (1 + (i + 1) * (k - 1) * rate, False) for i in range(3)
        ]
    text = summarize(net, (32, 32), 4, depth=1, rf_size=96)
    rows = {line.split()[0]: line.split()[-1] for line in text.splitlines()[1:4]}
    assert rows == {"0": "13", "1": "25", "2": "37"}  # k = 5, rate 3: +12 per layer


def test_wrong_options_are_one_error_naming_them():
    with pytest.raises(ConfigError, match="rate"):
        build_block("dwsep", 8, 8, rate=2)
    with pytest.raises(ConfigError, match="norm"):
        build_block("conv", 8, 8, norm="batch")
    # Groups that do not divide the widths (set by data or the neck, not by the user) fall back
    # to the largest count that does, said once; they never refuse the model.
    with pytest.warns(UserWarning, match=r"groups=3 does not divide .*using groups=2"):
        shuffle = build_block("group_shuffle", 8, 8, groups=3)
    assert {m.groups for m in shuffle.modules() if isinstance(m, torch.nn.Conv2d)} == {2}
    with pytest.raises(ConfigError, match="attention"):
        build_block("conv", 8, 8, attention="dwsep")
    with pytest.raises(ConfigError, match="did you mean 'dwsep'"):
        build_block("dwsap", 8, 8)
    with pytest.raises(ConfigError, match="upsample"):
        FPN(IN_CH, STRIDES, block="up_bilinear")


def test_cbam_attention_reweights_channels_and_pixels():
    block = build_block("conv", 8, 8, attention="cbam")
    x = torch.randn(2, 8, 10, 10)
    y = block(x)
    base = block[0](x)
    assert y.shape == base.shape and not torch.allclose(y, base)
    assert (y.abs() <= base.abs() + 1e-6).all()  # sigmoid gates only attenuate


def test_a_new_block_is_one_class_and_chosen_by_config(tmp_path):
    from visbricks.config import load_config
    from visbricks.tasks import build_task

    @BLOCKS.register("test_residual")
    class Residual(nn.Module):
        def __init__(
            self, in_channels, out_channels, stride=1, kernel_size=3, norm="bn", activation="relu"
        ):
            super().__init__()
            self.body = build_block(
                "conv",
                in_channels,
                out_channels,
                stride,
                kernel_size=kernel_size,
                norm=norm,
                activation=activation,
            )
            self.skip = build_block(
                "conv",
                in_channels,
                out_channels,
                stride,
                kernel_size=1,
                norm="none",
                activation="none",
            )
            self.out_channels = out_channels

        def forward(self, x):
            return self.body(x) + self.skip(x)

    try:
        cfg = load_config(
            "detect-shapes",
            [
                "data.classes=[a,b]",
                f"data.root={tmp_path}",
                "img_size=64",
                "model.backbone=mobilenet_v3_small",
                "model.neck_args.block=test_residual",
                "model.head_args={block: test_residual, block_args: {kernel_size: 1}}",
            ],
        )
        model = build_task(cfg).build_model(load_pretrained=False)
        assert sum(isinstance(m, Residual) for m in model.neck.modules()) == 4
        assert sum(isinstance(m, Residual) for m in model.head.modules()) == 8
        out = model(torch.randn(2, 3, 64, 64))
        assert out["cls_logits"].shape[-1] == 3
        with pytest.raises(ConfigError, match="model.neck_args.*dilation"):
            bad = load_config(
                "detect-shapes",
                [
                    "data.classes=[a,b]",
                    "model.neck_args.block=test_residual",
                    "model.neck_args.block_args={dilation: 2}",
                ],
            )
            build_task(bad).build_model(load_pretrained=False)
    finally:
        BLOCKS._items.pop("test_residual")


@pytest.mark.parametrize("name", CONV_BLOCKS)
def test_summary_prints_a_model_with_each_block(name, capsys):
    from visbricks.cli import main

    args = "{block_args: {groups: 2}}" if name == "group_shuffle" else "{}"
    overrides = [
        "data.classes=[a,b,c]",
        "img_size=64",
        "model.backbone=mobilenet_v3_small",
        f"model.neck_args={{out_channels: 32, levels: [1, 2, 3], extra_levels: 1, block: {name}}}",
        f"model.head_args={args}",
        f"model.head_args.block={name}",
    ]
    assert main(["summary", "detect-shapes", *overrides, "--depth", "3", "--rf-size", "64"]) == 0
    out = capsys.readouterr().out
    kind = BLOCKS.get(name).__name__  # the class name shows in the type column
    rows = [
        line for line in out.splitlines() if line.startswith(("neck.output.", "head.cls_convs."))
    ]
    # A grouped head predictor is the block followed by a plain 1x1 conv (blocks.Predictor).
    head_kind = "Predictor" if name == "group_shuffle" else kind
    assert len(rows) == 3 + 4
    assert all((kind if r.startswith("neck") else head_kind)[:20] in r for r in rows), rows
    # Each neck output row ends with its measured receptive field (in pixels, or ≥ if clipped).
    assert all(row.split()[-1].lstrip("≥").isdigit() for row in rows)


def test_reflect_padding_replicates_on_maps_too_small_to_reflect():
    block = build_block("dilated", 4, 4, dilation=3, padding_mode="reflect", norm="none").double()
    conv = block[0]
    big = torch.randn(1, 4, 9, 9, dtype=torch.float64)
    reflected = F.conv2d(F.pad(big, (3,) * 4, mode="reflect"), conv.weight, conv.bias, dilation=3)
    torch.testing.assert_close(block(big), F.relu(reflected))
    small = torch.randn(1, 4, 2, 3, dtype=torch.float64)  # F.pad(mode="reflect") refuses this
    edge = F.conv2d(F.pad(small, (3,) * 4, mode="replicate"), conv.weight, conv.bias, dilation=3)
    torch.testing.assert_close(block(small), F.relu(edge))
