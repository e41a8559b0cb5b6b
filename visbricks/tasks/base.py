"""What every task shares: config → data preparation, model assembly, pretrained weights.

A task turns the config into a model and datasets and knows its loss, its metrics and how to
draw a batch; the Trainer knows none of these and drives any task.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from .. import models as _models  # noqa: F401  (registers backbones, necks and heads)
from ..config import Config, parse_img_size
from ..data.normalize import resolve_normalization
from ..engine.weights import LoadReport, load_weights, read_state_dict, resolve_imagenet
from ..errors import ConfigError
from ..models.backbones import build_backbone
from ..models.model import VisionModel
from ..registry import NECKS


@dataclass
class DataBundle:
    train: Dataset
    val: Dataset
    classes: list[str]
    collate_fn: Callable | None = None
    # Optional batch-sampler factory (aspect-ratio grouping): (dataset, batch, generator) → sampler
    batch_sampler: Callable | None = None
    info: dict[str, Any] = field(default_factory=dict)


class Task:
    name = "task"
    metric = "val/loss"  # what picks best.safetensors unless train.metric says otherwise
    metric_mode = "min"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.img_size = parse_img_size(cfg.img_size)  # (height, width)
        self.mean, self.std = resolve_normalization(cfg.data.normalize)
        self._classes: list[str] | None = None

    # ---- data -------------------------------------------------------------------------------
    @property
    def data_root(self) -> Path:
        if self.cfg.data.root is None:
            raise ConfigError("data.root is not set: give the dataset folder (data.root=PATH)")
        return Path(self.cfg.data.root).expanduser()

    def prepare_data(self) -> None:
        """Generate the synthetic data of ``data.synth`` at ``data.root`` when it is absent."""
        synth = dict(self.cfg.data.synth or {})
        if not synth:
            if not self.data_root.exists():
                raise ConfigError(f"data.root: dataset not found: {self.data_root}")
            return
        kind = synth.pop("kind", None)
        self.generate(kind, self.data_root, synth)

    def generate(self, kind: str | None, root: Path, params: dict) -> None:
        raise ConfigError(f"task {self.name!r} cannot generate data.synth kind {kind!r}")

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            if self.cfg.data.classes:  # given (or saved with the weights): no data needed
                self._classes = list(self.cfg.data.classes)
            else:
                self.prepare_data()
                self._classes = self.find_classes()
        return self._classes

    def find_classes(self) -> list[str]:
        raise NotImplementedError

    def build_data(self) -> DataBundle:
        raise NotImplementedError

    def to_device(self, batch: dict, device: torch.device, channels_last: bool = False) -> dict:
        """Move every tensor of a batch (nested lists too) to ``device``; NHWC images if asked."""

        def move(v):
            if isinstance(v, torch.Tensor):
                v = v.to(device, non_blocking=True)
                if channels_last and v.ndim == 4 and v.is_floating_point():
                    v = v.contiguous(memory_format=torch.channels_last)
                return v
            if isinstance(v, list):
                return [move(x) for x in v]
            return v

        return {k: move(v) for k, v in batch.items()}

    def forward(self, model: nn.Module, batch: dict) -> dict:
        """Model outputs for a batch; tasks with several networks or inputs override this."""
        return model(batch["image"])

    def batch_size(self, batch: dict) -> int:
        return len(batch["image"])

    # ---- model ------------------------------------------------------------------------------
    def build_head(self, in_channels: list[int], strides: list[int]) -> nn.Module:
        raise NotImplementedError

    def build_model(self, load_pretrained: bool = True) -> nn.Module:
        m = self.cfg.model
        # Random initialisation is part of the run: the same seed builds the same model.
        torch.manual_seed(self.cfg.seed)
        backbone = build_backbone(m.backbone, in_channels=m.in_channels)
        channels, strides = backbone.out_channels, backbone.strides
        neck = None
        if m.neck:
            # A neck is sized to the data (channels, levels), so model.neck_args reaches it;
            # a wrong keyword is named here rather than as a TypeError from inside the class.
            kwargs = dict(m.neck_args or {})
            cls = NECKS.get(m.neck)
            try:
                inspect.signature(cls).bind(channels, strides, **kwargs)
            except TypeError as e:
                raise ConfigError(f"model.neck_args for neck {m.neck!r}: {e}") from None
            neck = cls(channels, strides, **kwargs)
            channels, strides = neck.out_channels, neck.strides
        elif m.neck_args:
            raise ConfigError("model.neck_args is set but model.neck is null")
        model = VisionModel(backbone, self.build_head(channels, strides), neck)
        if load_pretrained:
            self.load_pretrained(model)
        return model

    def load_pretrained(self, model: nn.Module) -> LoadReport | None:
        source = self.cfg.model.pretrained
        if source is None:
            return None
        rules = getattr(model.backbone, "imagenet_rules", None)
        if source == "imagenet":
            return load_weights(model, resolve_imagenet(model.backbone.tv_name), "mapping", rules)
        state = read_state_dict(source)
        strategy = self.cfg.model.pretrained_strategy
        if strategy == "auto":
            # Our own files carry backbone./head. names; anything else is taken as a
            # torchvision/timm classifier file and mapped onto the backbone.
            ours = any(k.startswith(("backbone.", "head.", "neck.")) for k in state)
            strategy = "key" if ours else "mapping"
        return load_weights(model, state, strategy, rules if strategy == "mapping" else None)

    # ---- training and evaluation --------------------------------------------------------------
    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader, device: torch.device, plots_dir: Path | None = None
    ) -> dict[str, float]:
        raise NotImplementedError

    def draw_batch(self, batch: dict, path: Path, outputs: dict | None = None) -> None:
        """samples.png (targets) or, with ``outputs``, predictions.png."""

    # ---- inference on raw images (predict) ----------------------------------------------------
    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def postprocess(self, outputs: dict, meta: list[dict]) -> list[dict]:
        raise NotImplementedError

    def annotate(self, image: np.ndarray, prediction: dict) -> np.ndarray:
        raise NotImplementedError
