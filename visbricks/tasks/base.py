"""A task: the three roles (tasks/roles: data, model, predictor) and what the Trainer calls.

A task turns the config into a model and datasets and knows its loss, its metrics and how to
draw a batch; the Trainer knows none of these and drives any task through the methods below
(the contract is ``engine.contract.TrainableTask``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .. import models as _models  # noqa: F401  (registers backbones, necks and heads)
from ..config import Config, parse_img_size
from ..data.bundle import DataBundle
from ..data.io import set_max_pixels
from ..data.normalize import resolve_normalization
from ..metrics.base import EvalResult, Evaluator
from .roles import DataRole, ModelRole, PredictorRole
from .roles.model import _cached_imagenet, load_timm_pretrained  # noqa: F401  (re-exported)

__all__ = ["DataBundle", "Task"]


class Task(DataRole, ModelRole, PredictorRole):
    name = "task"
    metric = "val/loss"  # what picks best.safetensors unless train.metric says otherwise
    metric_mode = "min"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.img_size = parse_img_size(cfg.img_size)  # (height, width)
        self.mean, self.std = resolve_normalization(cfg.data.normalize)
        self._classes: list[str] | None = None
        set_max_pixels(cfg.data.get("max_pixels"))  # decompression-bomb limit of every decode

    # ---- what the Trainer calls (engine.contract.TrainableTask) -------------------------------
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

    def network_input(self, batch: dict) -> torch.Tensor:
        """The image tensor of a batch that the exported network takes (calibration, export)."""
        return batch["image"]

    def forward(self, model: nn.Module, batch: dict) -> dict:
        """Model outputs for a batch: the network itself in training, through :meth:`infer`
        otherwise (validation, ``eval``), so evaluation sees what ``predict`` sees, test-time
        augmentation included. Tasks with several networks or inputs override this."""
        images = self.network_input(batch)
        return model(images) if getattr(model, "training", False) else self.infer(model, images)

    def infer(self, model: nn.Module, images: torch.Tensor) -> dict:
        """Outputs of ``model`` (eager, or an exported file's runtime) for a batch of network
        inputs outside training (``predict``, videos, evaluation); a task with test-time
        augmentation runs it here."""
        return model(images)

    def batch_size(self, batch: dict) -> int:
        return len(self.network_input(batch))

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def evaluator(self, dataset: Dataset, split: str = "val") -> Evaluator:
        """A fresh evaluator of this task's metrics for ``dataset``, keys prefixed ``split/``."""
        raise NotImplementedError

    def eval_pairs(self, outputs: dict, batch: dict) -> tuple[Any, Any]:
        """``(predictions, targets)`` of a batch, as this task's evaluator's ``update`` takes."""
        raise NotImplementedError

    def eval_step(self, model: nn.Module, batch: dict, evaluator: Evaluator) -> None:
        """One batch (already on the device) into ``evaluator``: outputs, loss terms, pairs."""
        outputs = self.forward(model, batch)
        evaluator.add_losses(self.loss(outputs, batch), self.batch_size(batch))
        evaluator.update(*self.eval_pairs(outputs, batch))

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        loader,
        device: torch.device,
        plots_dir: Path | None = None,
        split: str = "val",
    ) -> EvalResult:
        """The evaluator's result over ``loader``; with ``plots_dir``, its figures written there.

        The caller puts ``model`` in eval mode.
        """
        evaluator = self.evaluator(loader.dataset, split)
        for batch in loader:
            self.eval_step(model, self.to_device(batch, device), evaluator)
        result = evaluator.compute()
        if plots_dir is not None:
            result.plots(plots_dir)
        return result
