"""Backbones: the strides/out_channels interface and ``model.backbone_args: {min_stride: 2}``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from visbricks.config import load_config
from visbricks.errors import ConfigError
from visbricks.models.backbones import build_backbone
from visbricks.tasks import build_task

ARCHS = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "vgg11", "densenet121"]


@pytest.mark.parametrize("arch", ARCHS)
def test_min_stride_2_adds_the_stem_map_in_front_of_the_same_pyramid(arch):
    torch.manual_seed(0)
    plain = build_backbone(arch).eval()
    torch.manual_seed(0)
    with_stem = build_backbone(arch, min_stride=2).eval()
    assert plain.strides == [4, 8, 16, 32] and with_stem.strides == [2, 4, 8, 16, 32]
    # Same modules under the same names: weight files load by key either way.
    assert list(plain.state_dict()) == list(with_stem.state_dict())
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        a, b = plain(x), with_stem(x)
    assert [tuple(f.shape[-2:]) for f in b] == [(64 // s, 96 // s) for s in with_stem.strides]
    assert [f.shape[1] for f in b] == with_stem.out_channels
    assert with_stem.out_channels[1:] == plain.out_channels
    for fa, fb in zip(a, b[1:]):  # the four shared levels are the same computation
        torch.testing.assert_close(fa, fb, rtol=0, atol=0)


def test_min_stride_1_puts_the_input_in_front():
    b = build_backbone("mobilenet_v3_small", in_channels=4, min_stride=1)
    assert b.strides == [1, 2, 4, 8, 16, 32] and b.out_channels[0] == 4
    x = torch.rand(1, 4, 64, 64)
    features = b(x)
    assert features[0] is x and [f.shape[1] for f in features] == b.out_channels


def test_timm_backbone_min_stride():
    pytest.importorskip("timm")
    b = build_backbone("timm:resnet18", min_stride=2)
    assert b.strides == [2, 4, 8, 16, 32]
    assert [f.shape[-1] for f in b(torch.rand(1, 3, 64, 64))] == [32, 16, 8, 4, 2]
    b = build_backbone("timm:resnet18", min_stride=1)
    assert b.strides == [1, 2, 4, 8, 16, 32] and b.out_channels[0] == 3
    assert [f.shape[-1] for f in b(torch.rand(1, 3, 64, 64))] == [64, 32, 16, 8, 4, 2]


def test_backbone_args_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"backbone_args for backbone 'resnet18'.*min_strde"):
        build_backbone("resnet18", min_strde=2)
    for bad in (8, 3, True, "2"):
        with pytest.raises(ConfigError, match=r"model\.backbone_args\.min_stride must be one of"):
            build_backbone("resnet18", min_stride=bad)
    task = build_task(load_config("segment-shapes", ["model.backbone_args={dilation: 2}"]))
    with pytest.raises(ConfigError, match=r"backbone_args.*dilation"):
        task.build_model(load_pretrained=False)


def test_unet_gets_stride_2_and_stride_1_skips_from_config():
    def model(min_stride):
        cfg = load_config(
            "segment-shapes",
            [
                "model.backbone=mobilenet_v3_small",
                f"model.backbone_args={{min_stride: {min_stride}}}",
                "model.head_args={out_stride: 1, channels: [8, 16, 32, 48, 64]}",
            ],
        )
        return build_task(cfg).build_model(load_pretrained=False)

    def fuse_in(model, level):  # decoder levels coarsest first: 16, 8, 4, 2, 1
        block = model.head.decoder.fuse[level]
        return next(m for m in block.modules() if isinstance(m, nn.Conv2d)).in_channels

    plain, stem, full = model(4), model(2), model(1)
    assert [m.backbone.strides[0] for m in (plain, stem, full)] == [4, 2, 1]
    # Stride 2 (16 decoder channels) fuses the 16-channel stem map; stride 1 (8) the RGB image.
    assert [fuse_in(m, -2) for m in (plain, stem, full)] == [16, 16 + 16, 16 + 16]
    assert [fuse_in(m, -1) for m in (plain, stem, full)] == [8, 8, 8 + 3]
    out = full(torch.rand(2, 3, 64, 64))["logits"]
    assert out.shape == (2, 7, 64, 64)


def test_depth_encoder_takes_backbone_args():
    cfg = load_config(
        "depth-driving",
        [
            "img_size={width: 64, height: 64}",
            "model.pose_backbone=mobilenet_v3_small",
            "model.backbone_args={min_stride: 2}",
        ],
    )
    model = build_task(cfg).build_model(load_pretrained=False)
    assert model.depth_encoder.strides == [2, 4, 8, 16, 32]
    assert model.pose_encoder.strides == [4, 8, 16, 32]
    disp = model(torch.rand(1, 3, 64, 64))
    assert disp[("disp", 0)].shape == (1, 1, 64, 64)
