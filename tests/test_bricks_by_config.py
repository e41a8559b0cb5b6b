"""Bricks register themselves and are chosen by config alone: a user's decoder head (declaring
what it produces) trains in the segment task, a user's conv block goes into a head through
``model.head_args.block``, and every head module of the package registers without a list."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import visbricks.models.heads as heads_package
from visbricks.config import load_config
from visbricks.engine.trainer import Trainer
from visbricks.errors import ConfigError
from visbricks.registry import BLOCKS, HEADS
from visbricks.tasks import build_task

TINY = [
    "img_size=64", "batch_size=4", "workers=0", "train.plots=false", "train.tensorboard=false",
    "data.synth.n_train=16", "data.synth.n_val=8", "data.synth.width=64", "data.synth.height=64",
    "model.backbone=resnet18", "deterministic=true",
]  # fmt: skip


class TinyDecoder(nn.Module):
    """Per-pixel logits from the stride-4 feature map, upsampled to the input size."""

    outputs = ("logits",)
    output_stride = 1

    def __init__(self, in_channels, strides, num_classes: int, channels: int = 16) -> None:
        super().__init__()
        self.level = list(strides).index(4)
        self.mix = nn.Sequential(
            nn.Conv2d(in_channels[self.level], channels, 3, padding=1), nn.ReLU()
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features, image_size):
        logits = self.classifier(self.mix(features[self.level]))
        return {"logits": F.interpolate(logits, size=image_size, mode="bilinear")}


class MishConv(nn.Module):
    """A user's conv block: conv, BatchNorm, Mish (the options a head passes are its own)."""

    def __init__(self, in_channels, out_channels, stride=1, kernel_size=3, **options) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2),
            nn.BatchNorm2d(out_channels),
            nn.Mish(),
        )

    def forward(self, x):
        return self.body(x)


@pytest.fixture
def registered():
    HEADS.register("test_tiny_decoder")(TinyDecoder)
    BLOCKS.register("test_mish")(MishConv)
    yield
    HEADS._items.pop("test_tiny_decoder")
    BLOCKS._items.pop("test_mish")


def test_a_users_decoder_is_chosen_by_config_and_trains(registered, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        "segment-shapes",
        [*TINY, "epochs=3", "model.head=test_tiny_decoder", "model.head_args={}",
         "optim.lr=0.01"],
    )  # fmt: skip
    task = build_task(cfg)
    assert task.head_name == "test_tiny_decoder"
    model = task.build_model()
    assert isinstance(model.head, TinyDecoder)
    trainer = Trainer(cfg, model, task.build_data(), task)
    trainer.fit()
    losses = [row["train/loss"] for row in trainer.history]
    assert losses[-1] < losses[0], losses
    assert 0 < trainer.history[-1]["val/mIoU"] <= 1


def test_a_head_that_gives_no_per_pixel_logits_is_refused_naming_the_decoders(tmp_path):
    cfg = load_config("segment-shapes", [*TINY, "model.head=linear", "model.head_args={}"])
    with pytest.raises(ConfigError, match=r"not a segmentation decoder.*fpn.*unet"):
        build_task(cfg).build_model()


def test_a_users_block_is_chosen_by_config_alone(registered):
    cfg = load_config("segment-shapes", [*TINY, "model.head_args.block=test_mish"])
    model = build_task(cfg).build_model(load_pretrained=False)
    assert any(isinstance(m, MishConv) for m in model.head.modules())
    logits = model(torch.rand(2, 3, 64, 64))["logits"]
    assert logits.shape == (2, 7, 64, 64)


def test_every_head_module_registers_without_a_list():
    modules = [m.name for m in pkgutil.iter_modules(heads_package.__path__)]
    assert "depth" in modules  # depth_decoder lives with the other heads
    by_module = {HEADS.get(n).__module__.rsplit(".", 1)[-1] for n in HEADS.names()}
    assert set(modules) <= by_module, set(modules) - by_module
    assert HEADS.get("depth_decoder").__module__ == "visbricks.models.heads.depth"
    importlib.reload(importlib.import_module("visbricks.models.depth"))  # re-export stays
