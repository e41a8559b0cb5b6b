"""Exponential moving average of the weights, evaluated and published instead of the raw ones."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """ema = d·ema + (1−d)·model after every optimizer step.

    The decay ramps up as ``decay·(1 − exp(−updates/tau))`` so the average is not dominated by
    the random initialisation early on (YOLOv5/timm practice, tau = 2,000 steps). That ramp is
    slow for a short run: after 2,000 steps d is 0.63, an average over ~3 steps, so
    ``train.ema_tau`` sizes it to the run. Floating-point buffers (BN statistics) are averaged
    too, integer ones copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, tau: float = 2000.0) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        ema_state = self.module.state_dict()
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if value.dtype.is_floating_point:
                target.mul_(d).add_(value.detach(), alpha=1 - d)
            else:
                target.copy_(value)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]
