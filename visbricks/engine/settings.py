"""What the Trainer reads of a config, resolved once into one frozen object.

The Trainer and its callbacks read ``trainer.settings`` and never ``cfg``: every ``auto`` is
already a concrete choice for this device (engine/precision.py), the metric that picks the best
weights already has its direction, and nothing changes while a run trains. ``optim`` and
``sched`` stay config sections: they go whole to the optimizer and schedule builders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..config import Config
from ..errors import ConfigError
from .precision import Precision, resolve_amp, resolve_channels_last, resolve_workers


@dataclass(frozen=True)
class TrainSettings:
    # the run
    epochs: int
    batch_size: int
    seed: int
    deterministic: bool
    # resolved for the device
    precision: Precision
    channels_last: bool
    workers: int
    # train.*
    time: float | None
    freeze: dict[str, int]
    lr_mult: dict[str, float]
    grad_clip: float | None
    accumulate: int
    compile: tuple[str, ...]  # what torch.compile wraps for training: (), ("model",), ...
    log_every: float
    ema: bool
    ema_decay: float
    ema_tau: float
    val_every: int
    metric: str  # the metric that picks best.safetensors (train.metric or the task's)
    metric_mode: str  # "max" or "min"
    patience: int | None
    plots: bool
    tensorboard: bool
    max_batches: int | None
    callbacks: tuple[str, ...]

    @classmethod
    def resolve(
        cls, cfg: Config, device: torch.device, task_metric: str, task_mode: str
    ) -> TrainSettings:
        t = cfg.train
        precision = resolve_amp(t.amp, device)
        return cls(
            epochs=int(cfg.epochs),
            batch_size=int(cfg.batch_size),
            seed=int(cfg.seed),
            deterministic=bool(cfg.deterministic),
            precision=precision,
            channels_last=resolve_channels_last(cfg.model.channels_last, device, precision),
            workers=resolve_workers(
                cfg.workers, device, bool(cfg.data.cache), deterministic=cfg.deterministic
            ),
            time=t.time,
            freeze=dict(t.freeze),
            lr_mult=dict(t.lr_mult),
            grad_clip=t.grad_clip,
            accumulate=int(t.accumulate),
            compile=compile_targets(t.compile),
            log_every=t.log_every,
            ema=bool(t.ema),
            ema_decay=t.ema_decay,
            ema_tau=float(t.ema_tau),
            val_every=int(t.val_every),
            metric=t.metric or task_metric,
            metric_mode=metric_mode(t.metric, t.metric_mode, task_metric, task_mode),
            patience=t.get("patience"),
            plots=bool(t.plots),
            tensorboard=bool(t.tensorboard),
            max_batches=t.max_batches,
            callbacks=tuple(t.get("callbacks") or ()),
        )

    def improves(self, value: Any, best: float | None) -> bool:
        """Whether ``value`` of the metric is better than ``best`` (strictly; None: none yet)."""
        if value is None:
            return False
        if best is None:
            return True
        return value > best if self.metric_mode == "max" else value < best


def metric_mode(metric: str | None, mode: str | None, task_metric: str, task_mode: str) -> str:
    """``max`` or ``min``: which way ``train.metric`` improves. The task knows its own metric's
    direction; any other metric needs ``train.metric_mode`` (a name says nothing reliable:
    ``val/abs_rel`` is an error, lower is better, with no "loss" in it)."""
    if mode is not None:
        if mode not in ("max", "min"):
            raise ConfigError(f"train.metric_mode must be max or min, got {mode!r}")
        return mode
    if metric is None or metric == task_metric:
        return task_mode
    raise ConfigError(
        f"train.metric={metric} is not the task's own metric ({task_metric}): set "
        "train.metric_mode=max (higher is better) or train.metric_mode=min"
    )


def compile_targets(value: bool | str) -> tuple[str, ...]:
    """``train.compile`` as what it wraps: false → (), true | model → ("model",), loss →
    ("loss",), all → ("model", "loss") (the config check has already limited the values)."""
    if value is False:
        return ()
    return {"loss": ("loss",), "all": ("model", "loss")}.get(str(value), ("model",))
