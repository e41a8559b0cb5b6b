"""Backbones: torchvision classifiers cut into stages that return multi-level features.

Every backbone is an ``nn.Module`` whose ``forward(x)`` returns a list of feature maps ordered by
increasing stride (4, 8, 16, 32) and which carries ``out_channels`` and ``strides`` — the whole
interface between a backbone and the neck/head/decoder after it (as in segmentation_models_pytorch).
``min_stride=2`` (``model.backbone_args: {min_stride: 2}``) adds the stem's stride-2 map in front
(strides 2, 4, ..., 32), as smp's encoders, timm's ``features_only`` and Monodepth2's encoder give
it: a U-Net decoder then has a skip connection at stride 2 too. ``min_stride=1`` also puts the
input image itself in front (stride 1, ``in_channels`` channels): the full-resolution skip of the
original U-Net, for decoders that go down to stride 1. Off (4) by default.

Module names inside a backbone are torchvision's own (``layer1``, ``features.3`` ...), so a
torchvision ImageNet file loads by key after one prefix rule (see ``imagenet_rules``).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torchvision
from torch import nn

from ..errors import ConfigError
from ..registry import BACKBONES, check_arguments

MIN_STRIDES = (1, 2, 4)


def _check_min_stride(min_stride: object) -> int:
    if isinstance(min_stride, bool) or min_stride not in MIN_STRIDES:
        raise ConfigError(
            f"model.backbone_args.min_stride must be one of {MIN_STRIDES}, got {min_stride!r}"
        )
    return int(min_stride)


class StagedBackbone(nn.Module):
    """Runs ``stages`` in order and returns the output of each one.

    Subclasses register torchvision's modules under their original names and list, for each
    output level, the child modules that make up that stage.
    """

    stage_modules: list[list[str]]
    # (pattern, replacement) rules mapping torchvision's state-dict keys onto a VisionModel whose
    # backbone is this module and whose classifier is ``head.fc``.
    imagenet_rules: list[tuple[str, str]]
    tv_name: str

    def __init__(self, strides: list[int]) -> None:
        super().__init__()
        self.strides = strides
        self.out_channels: list[int] = []
        self.input_level = False  # min_stride 1: the input is the first feature map

    def _stage_forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for names in self.stage_modules:
            for name in names:
                x = self.get_submodule(name)(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self._stage_forward(x)
        return [x, *features] if self.input_level else features

    def _apply_min_stride(self, min_stride: object) -> None:
        min_stride = _check_min_stride(min_stride)
        if min_stride <= 2:
            self._add_stride2_level()
        if min_stride == 1:
            self.input_level = True
            self.strides = [1, *self.strides]

    def _add_stride2_level(self) -> None:
        """Split the first stage after its last module whose output is at stride 2."""
        first = self.stage_modules[0]
        size = 64
        x = torch.zeros(1, self.in_channels, size, size)
        last_at_2 = None
        was_training = self.training
        self.eval()
        with torch.no_grad():
            for i, name in enumerate(first):
                x = self.get_submodule(name)(x)
                if x.shape[-1] == size // 2:
                    last_at_2 = i
        self.train(was_training)
        if last_at_2 is None or last_at_2 == len(first) - 1:
            raise ConfigError(
                f"backbone {self.tv_name!r} has no stride-2 map inside its first stage; "
                "model.backbone_args.min_stride must stay 4"
            )
        self.stage_modules = [
            first[: last_at_2 + 1],
            first[last_at_2 + 1 :],
            *self.stage_modules[1:],
        ]
        self.strides = [2, *self.strides]

    def _infer_channels(self) -> None:
        # One tiny dry run is simpler and less error-prone than a channel table per variant.
        was_training = self.training
        self.eval()
        in_ch = self.in_channels
        with torch.no_grad():
            feats = self._stage_forward(torch.zeros(1, in_ch, 64, 64))
        self.out_channels = [in_ch] * self.input_level + [f.shape[1] for f in feats]
        self.train(was_training)


def _replace_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    if in_channels == conv.in_channels:
        return conv
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
    )


class ResNetBackbone(StagedBackbone):
    def __init__(self, arch: str, in_channels: int = 3, min_stride: int = 4) -> None:
        super().__init__([4, 8, 16, 32])
        tv = getattr(torchvision.models, arch)(weights=None)
        self.tv_name = arch
        self.in_channels = in_channels
        self.conv1 = _replace_first_conv(tv.conv1, in_channels)
        self.bn1, self.relu, self.maxpool = tv.bn1, tv.relu, tv.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            tv.layer1,
            tv.layer2,
            tv.layer3,
            tv.layer4,
        )
        self.stage_modules = [
            ["conv1", "bn1", "relu", "maxpool", "layer1"],
            ["layer2"],
            ["layer3"],
            ["layer4"],
        ]
        self.imagenet_rules = [(r"^fc\.", "head.fc."), (r"^", "backbone.")]
        self._apply_min_stride(min_stride)
        self._infer_channels()


class FeaturesBackbone(StagedBackbone):
    """torchvision models whose convolutional part is one ``features`` Sequential."""

    def __init__(
        self,
        arch: str,
        stage_ends: list[int],
        classifier_key: str,
        in_channels: int = 3,
        strides: list[int] | None = None,
        min_stride: int = 4,
    ) -> None:
        super().__init__(strides or [4, 8, 16, 32])
        tv = getattr(torchvision.models, arch)(weights=None)
        self.tv_name = arch
        self.in_channels = in_channels
        self.features = tv.features
        self._patch_first_conv(in_channels)
        children = [name for name, _ in self.features.named_children()]
        bounds = [0, *[e + 1 for e in stage_ends]]
        self.stage_modules = [
            [f"features.{children[i]}" for i in range(a, b)] for a, b in zip(bounds, bounds[1:])
        ]
        # Anything after the last stage end (e.g. densenet's final norm) belongs to the last stage.
        self.stage_modules[-1] += [f"features.{c}" for c in children[bounds[-1] :]]
        self.imagenet_rules = [
            (rf"^classifier\.{classifier_key}\.", "head.fc."),
            (r"^features\.", "backbone.features."),
        ]
        self._apply_min_stride(min_stride)
        self._infer_channels()

    def _patch_first_conv(self, in_channels: int) -> None:
        for name, module in self.features.named_modules():
            if isinstance(module, nn.Conv2d):
                parent_name, _, child = name.rpartition(".")
                parent = self.features.get_submodule(parent_name) if parent_name else self.features
                setattr(parent, child, _replace_first_conv(module, in_channels))
                return


class DenseNetBackbone(FeaturesBackbone):
    def __init__(self, arch: str, in_channels: int = 3, min_stride: int = 4) -> None:
        # features: conv0 norm0 relu0 pool0 denseblock1 transition1 denseblock2 ... norm5.
        # The transition's pooling opens the next stride, so it starts the next stage.
        super().__init__(arch, [4, 6, 8, 10], "", in_channels, min_stride=min_stride)
        self.imagenet_rules = [
            (r"^classifier\.", "head.fc."),
            (r"^features\.", "backbone.features."),
        ]


def _register_resnet(arch: str) -> None:
    @BACKBONES.register(arch)
    def build(in_channels: int = 3, min_stride: int = 4) -> ResNetBackbone:
        return ResNetBackbone(arch, in_channels, min_stride)


for _arch in ("resnet18", "resnet34", "resnet50"):
    _register_resnet(_arch)

# Stage ends are indices into ``features``: the last layer before the next stride-2 step.
_FEATURE_ARCHS = {
    # VGG: the max-pool closing each block ends a stride; blocks 1-2 both end inside stride 4.
    "vgg11": ([5, 10, 15, 20], "6"),
    "vgg16": ([9, 16, 23, 30], "6"),
    "mobilenet_v2": ([3, 6, 13, 18], "1"),
    "mobilenet_v3_small": ([1, 3, 8, 12], "3"),
    "mobilenet_v3_large": ([3, 6, 12, 16], "3"),
}


def _register_features(arch: str, ends: list[int], key: str) -> None:
    @BACKBONES.register(arch)
    def build(in_channels: int = 3, min_stride: int = 4) -> FeaturesBackbone:
        return FeaturesBackbone(arch, ends, key, in_channels, min_stride=min_stride)


for _arch, (_ends, _key) in _FEATURE_ARCHS.items():
    _register_features(_arch, _ends, _key)


@BACKBONES.register("densenet121")
def densenet121(in_channels: int = 3, min_stride: int = 4) -> DenseNetBackbone:
    return DenseNetBackbone("densenet121", in_channels, min_stride)


class TimmBackbone(nn.Module):
    """Any timm model with ``features_only=True``; selected as ``model.backbone: timm:<name>``."""

    def __init__(self, name: str, in_channels: int = 3, min_stride: int = 4) -> None:
        super().__init__()
        min_stride = _check_min_stride(min_stride)
        try:
            import timm
        except ImportError:  # pragma: no cover - depends on the environment
            raise ConfigError(
                f"backbone 'timm:{name}' needs timm: pip install 'visbricks[timm]'"
            ) from None
        self.body = timm.create_model(
            name, pretrained=False, features_only=True, in_chans=in_channels
        )
        info = self.body.feature_info
        # Keep the levels with stride ≥ 4 so every backbone offers the same 4/8/16/32 pyramid
        # (≥ 2 with min_stride 2 or 1, where the model has a stride-2 level).
        keep = [i for i, r in enumerate(info.reduction()) if r >= max(2, min_stride)]
        if min_stride <= 2 and info.reduction()[keep[0]] != 2:
            raise ConfigError(
                f"backbone 'timm:{name}' has no stride-2 feature map; "
                "model.backbone_args.min_stride must stay 4"
            )
        self.keep = keep
        self.input_level = min_stride == 1
        self.out_channels = [in_channels] * self.input_level + [info.channels()[i] for i in keep]
        self.strides = [1] * self.input_level + [info.reduction()[i] for i in keep]
        self.tv_name = name
        self.imagenet_rules = [(r"^", "backbone.body.")]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        return [x] * self.input_level + [feats[i] for i in self.keep]


def build_backbone(name: str, in_channels: int = 3, **backbone_args: Any) -> nn.Module:
    """The backbone ``name`` (registered, or ``timm:<name>``); ``backbone_args`` are
    ``model.backbone_args`` (today ``min_stride``), a wrong keyword is a ConfigError naming it."""
    if name.startswith("timm:"):
        builder = functools.partial(TimmBackbone, name.split(":", 1)[1])
    else:
        builder = BACKBONES.get(name)
    where = f"model.backbone_args for backbone {name!r}"
    check_arguments(builder, where, "", in_channels=in_channels, **backbone_args)
    return builder(in_channels=in_channels, **backbone_args)
