"""Heads chosen and configured by ``model.head`` / ``model.head_args`` for every task, and the
depth head on the generic UNet decoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visbricks.config import load_config
from visbricks.errors import ConfigError
from visbricks.models.blocks import DeformableConv2d, Predictor, build_block
from visbricks.models.decoders import UNetDecoder
from visbricks.models.depth import DepthDecoder
from visbricks.models.heads.classification import LinearHead
from visbricks.models.heads.locate import LocateHead
from visbricks.models.heads.ssd import SSDHead
from visbricks.registry import HEADS
from visbricks.tasks import build_task

SMALL = ["img_size=64", "model.backbone=mobilenet_v3_small"]
PRESETS = {
    "classify-shapes": ["data.classes=[a,b,c]", *SMALL],
    "locate-shapes": ["data.classes=[a,b,c]", *SMALL],
    "detect-shapes": ["data.classes=[a,b,c]", *SMALL],
    "depth-driving": ["img_size={width: 64, height: 64}", "model.pose_backbone=mobilenet_v3_small"],
}
DEFAULTS = {
    "classify-shapes": LinearHead,
    "locate-shapes": LocateHead,
    "detect-shapes": SSDHead,
    "depth-driving": DepthDecoder,
}


def _model(preset: str, *extra: str) -> tuple[object, nn.Module]:
    task = build_task(load_config(preset, [*PRESETS[preset], *extra]))
    torch.manual_seed(0)
    return task, task.build_model(load_pretrained=False)


def _head(model: nn.Module) -> nn.Module:
    return model.depth_decoder if hasattr(model, "depth_decoder") else model.head


@pytest.mark.parametrize("preset", list(PRESETS))
def test_null_head_is_the_tasks_default_and_head_args_reach_it(preset):
    task, model = _model(preset)
    assert load_config(preset, PRESETS[preset]).model.head is None
    assert type(_head(model)) is DEFAULTS[preset] and task.head_name == task.default_head
    with pytest.raises(ConfigError, match=r"model.head_args.*'no_such_option'"):
        _model(preset, "model.head_args.no_such_option=1")


@pytest.mark.parametrize("preset", ["locate-shapes", "detect-shapes", "depth-driving"])
def test_head_block_is_chosen_in_config(preset):
    args = "{block: deformable, block_args: {kernel_size: 3}}"
    _, model = _model(preset, f"model.head_args={args}")
    head = _head(model)
    assert any(isinstance(m, DeformableConv2d) for m in head.modules())
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert all(torch.isfinite(v).all() for v in out.values())
    with pytest.raises(ConfigError, match=r"model.head.*'rates'"):
        _model(preset, "model.head_args={block: dwsep, block_args: {rates: [2]}}")


def test_ssdlite_head_is_dwsep_and_keeps_the_prior():
    _, model = _model(
        "detect-shapes", "model.head_args.block=dwsep", "model.head_args.prior_prob=0.1"
    )
    probs = model(torch.randn(2, 3, 64, 64))["cls_logits"].softmax(-1)
    # Weights ~N(0, 0.01): every anchor starts near the prior (background 0.9).
    assert (probs[..., 0] - 0.9).abs().max() < 0.05
    assert all(b[0][0].groups == b[0][0].in_channels > 1 for b in model.head.cls_convs)


def test_depth_decoder_is_the_generic_unet_decoder():
    _, model = _model("depth-driving", "model.head_args={upsample: up_bilinear, block: dwsep}")
    head = model.depth_decoder
    assert isinstance(head.decoder, UNetDecoder) and head.decoder.strides == [1, 2, 4, 8]
    out = model(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape[-2:]) for k, v in out.items()} == {
        ("disp", 3): (8, 8),
        ("disp", 2): (16, 16),
        ("disp", 1): (32, 32),
        ("disp", 0): (64, 64),
    }
    # The default decoder convs are Monodepth2's: reflection padding, ELU, no norm.
    _, plain = _model("depth-driving")
    fuse = plain.depth_decoder.decoder.fuse[0]
    assert fuse[0].padding_mode == "reflect" and isinstance(fuse[-1], nn.ELU) and len(fuse) == 2


def test_a_new_head_is_one_class_and_chosen_by_config(shapes_small, tmp_path):
    """A head registered here, selected by ``model.head`` alone, trains on the shapes images."""

    @HEADS.register("test_conv_head")
    class ConvHead(nn.Module):
        def __init__(self, in_channels, strides, num_classes=1, block="conv", width=16):
            super().__init__()
            self.body = build_block(block, in_channels[-1], width)
            self.fc = nn.Linear(width, num_classes)

        def forward(self, features, image_size):
            return {"logits": self.fc(self.body(features[-1]).mean((2, 3)))}

    try:
        cfg = load_config(
            "classify-shapes",
            [
                f"data.root={shapes_small}",
                "data.synth=null",
                "img_size=32",
                "model.backbone=mobilenet_v3_small",
                "model.head=test_conv_head",
                "model.head_args={block: dwsep, width: 24}",
            ],
        )
        task = build_task(cfg)
        torch.manual_seed(0)
        model = task.build_model(load_pretrained=False)
        assert isinstance(model.head, ConvHead) and model.head.fc.in_features == 24
        data = task.build_data()
        loader = torch.utils.data.DataLoader(data.train, batch_size=32, shuffle=True)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        batch = next(iter(loader))
        model.train()
        first = F.cross_entropy(model(batch["image"])["logits"], batch["label"]).item()
        for _ in range(25):
            loss = F.cross_entropy(model(batch["image"])["logits"], batch["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.item() < 0.5 * first
        with pytest.raises(ConfigError, match="model.head 'test_conv_head' gives"):
            # a head that declares outputs the task does not read is refused by name
            ConvHead.outputs = ("masks",)
            build_task(cfg).build_model(load_pretrained=False)
    finally:
        HEADS._items.pop("test_conv_head")


def test_box_tasks_refuse_a_head_without_their_outputs():
    with pytest.raises(ConfigError, match="model.head 'ssd'"):
        build_task(load_config("locate-shapes", [*PRESETS["locate-shapes"], "model.head=ssd"]))


# Every head that takes a block, with the preset that builds it and a tiny input (W, H).
HEAD_PRESETS = {
    "linear": ("classify-shapes", (64, 64)),
    "locate": ("locate-shapes", (64, 64)),
    "ssd": ("detect-shapes", (64, 64)),
    "fcn": ("segment", (64, 64)),  # the own-data preset: segment-shapes' head_args are UNet's
    "fpn": ("segment", (64, 64)),
    "unet": ("segment", (64, 64)),
    "deeplabv3plus": ("segment", (64, 64)),
    "depth_decoder": ("depth-driving", (64, 64)),
    "ufld": ("lanes-driving", (128, 64)),
}


def _conv_blocks() -> list[str]:
    from visbricks.models.blocks import is_upsampling
    from visbricks.registry import BLOCKS

    return [
        n for n in BLOCKS.names()
        if not is_upsampling(n) and not getattr(BLOCKS.get(n), "attention", False)
    ]


def test_every_head_that_takes_a_block_is_covered():
    import inspect

    takes = sorted(
        n for n in HEADS.names() if "block" in inspect.signature(HEADS.get(n)).parameters
    )
    assert takes == sorted(HEAD_PRESETS)


@pytest.mark.parametrize("block", _conv_blocks())
@pytest.mark.parametrize("head", list(HEAD_PRESETS))
def test_every_block_in_every_head_builds_and_runs(head, block, recwarn):
    """Six classes (detect: 6 anchors x 7 = 42 outputs, which 4 groups do not divide): the
    prediction conv stays plain; a grouped block whose groups do not divide its widths adapts
    its group count, said once."""
    preset, (w, h) = HEAD_PRESETS[head]
    extra = [f"img_size={{width: {w}, height: {h}}}", f"model.head={head}",
             f"model.head_args={{block: {block}}}"]
    if preset == "depth-driving":
        extra.append("model.pose_backbone=mobilenet_v3_small")
    else:
        extra += ["model.backbone=mobilenet_v3_small"]
    if preset not in ("depth-driving", "lanes-driving"):
        extra.append("data.classes=[a,b,c,d,e,f]")
    task = build_task(load_config(preset, extra))
    torch.manual_seed(0)
    model = task.build_model(load_pretrained=False).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, h, w))
    assert all(torch.isfinite(v).all() for v in out.values() if isinstance(v, torch.Tensor))
    notes = [str(x.message) for x in recwarn if "does not divide" in str(x.message)]
    assert len(set(notes)) == len(notes), notes  # each fallback said once
    assert all(f"block {block!r}" in n and "block_args." in n for n in notes)
    if (head, block) == ("ssd", "group_shuffle"):
        # The layer that predicts is a plain conv: 42 outputs need not split into groups.
        for conv in model.head.cls_convs:
            assert isinstance(conv, Predictor) and conv[-1].groups == 1
            assert conv[-1].out_channels % 7 == 0
