"""One Trainer for every task: the task supplies loss, metrics and drawings; this drives the loop.

Reproducibility: each epoch reseeds every RNG from (seed, epoch) and the shuffling generator too,
so an epoch's data order and augmentation do not depend on what ran before it. Together with the
saved model, optimizer, schedule, scaler and EMA state, ``resume`` then reproduces an
uninterrupted run bitwise on CPU in deterministic mode.
"""

from __future__ import annotations

import contextlib
import csv
import os
import time
from pathlib import Path

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..config import Config, save_config
from ..errors import TrainingDiverged, VisbricksError
from ..registry import TASKS
from ..tasks.base import DataBundle, Task
from .checkpoint import (
    get_rng_state,
    save_checkpoint,
    save_safetensors,
    seed_everything,
    set_rng_state,
)
from .ema import ModelEMA
from .optim import LRSchedule, build_optimizer, check_module_paths, param_groups
from .plots import plot_history
from .rundir import new_run_dir


def select_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VisbricksError(f"device={spec!r} but CUDA is not available here; use device=auto")
    return device


def set_deterministic(enabled: bool) -> None:
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


class Trainer:
    def __init__(
        self,
        cfg: Config,
        model: nn.Module,
        data: DataBundle,
        task: Task | None = None,
        run_dir: str | Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.task = task or TASKS.get(cfg.task)(cfg)
        self.data = data
        self.device = select_device(cfg.device)
        set_deterministic(cfg.deterministic)
        self.model = model.to(self.device)
        t = cfg.train
        cl = cfg.model.channels_last
        self.channels_last = cl if cl is not None else self.device.type == "cuda"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.amp = bool(t.amp) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        check_module_paths(self.model, list(t.freeze) + list(t.lr_mult), "train.freeze/lr_mult")
        self.frozen: set[str] = set()
        self.ema: ModelEMA | None = None
        self.epoch = 0  # next epoch to run
        self.best: float | None = None
        self.history: list[dict] = []

        ckpt = None
        if cfg.resume:
            ckpt = torch.load(cfg.resume, map_location="cpu", weights_only=True)
            self.run_dir = Path(cfg.resume).resolve().parent.parent
        else:
            self.run_dir = (
                Path(run_dir) if run_dir else new_run_dir(cfg.project, cfg.task, cfg.name)
            )
        self.plots_dir = self.run_dir / "plots"
        self.weights_dir = self.run_dir / "weights"
        self.plots_dir.mkdir(parents=True, exist_ok=True)
        self.weights_dir.mkdir(parents=True, exist_ok=True)

        self.generator = torch.Generator()  # shuffling; reseeded every epoch
        self.train_loader = self._loader(data.train, train=True)
        self.val_loader = self._loader(data.val, train=False)
        self.steps_per_epoch = -(-self._batches_per_epoch() // t.accumulate)
        self._apply_freeze(0, rebuild=True)
        if ckpt is not None:
            # Replay the unfreezing up to the saved epoch so parameter groups come in the order
            # the saved optimizer state has them.
            for e in range(1, ckpt["epoch"]):
                self._apply_freeze(e, quiet=True)
        if t.ema:
            self.ema = ModelEMA(self.model, t.ema_decay)
        if ckpt is not None:
            self._load_checkpoint(ckpt)
        save_config(cfg, self.run_dir / "config.yaml")
        self.writer = None
        if t.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.run_dir))

    # ---- setup ----------------------------------------------------------------------------------
    def _loader(self, dataset, train: bool) -> DataLoader:
        cfg = self.cfg
        kwargs = dict(
            num_workers=cfg.workers,
            collate_fn=self.data.collate_fn,
            pin_memory=self.device.type == "cuda",
            persistent_workers=cfg.workers > 0,
        )
        if train and self.data.batch_sampler is not None:
            sampler = self.data.batch_sampler(dataset, cfg.batch_size, self.generator)
            return DataLoader(dataset, batch_sampler=sampler, **kwargs)
        return DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            shuffle=train,
            drop_last=train and len(dataset) > cfg.batch_size,
            generator=self.generator if train else None,
            **kwargs,
        )

    def _batches_per_epoch(self) -> int:
        n = len(self.train_loader)
        mb = self.cfg.train.max_batches
        return min(n, mb) if mb else n

    def _apply_freeze(self, epoch: int, rebuild: bool = False, quiet: bool = False) -> None:
        """Freeze modules whose ``freeze`` epochs are not over; optimize the unfrozen."""
        t = self.cfg.train
        frozen = {name for name, until in t.freeze.items() if epoch < until}
        for name in t.freeze:
            module = self.model.get_submodule(name)
            module.requires_grad_(name not in frozen)
        if rebuild:
            groups = param_groups(
                self.model, self.cfg.optim.lr, self.cfg.optim.weight_decay, t.lr_mult, frozen
            )
            self.optimizer = build_optimizer(self.cfg.optim, groups)
            self.schedule = LRSchedule(
                self.optimizer, self.cfg.sched, self.steps_per_epoch, self.cfg.epochs
            )
        else:
            for name in sorted(self.frozen - frozen):
                for group in param_groups(
                    self.model,
                    self.cfg.optim.lr,
                    self.cfg.optim.weight_decay,
                    t.lr_mult,
                    frozen,
                    only=[name],
                ):
                    self.optimizer.add_param_group(group)
                self.schedule.apply()
                if not quiet:
                    print(f"epoch {epoch + 1}: unfroze {name!r} (now trained)")
        self.frozen = frozen

    def _set_train_mode(self) -> None:
        self.model.train()
        for name in self.frozen:
            # Frozen means frozen: BatchNorm keeps its running statistics too.
            self.model.get_submodule(name).eval()

    # ---- checkpoints ----------------------------------------------------------------------------
    def _checkpoint(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "epoch": self.epoch,
            "best": self.best,
            "rng": get_rng_state(),
            "generator": self.generator.get_state(),
            "config": self.cfg.to_dict(),
            "classes": list(self.data.classes),
        }

    def _load_checkpoint(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema and ckpt["ema"]:
            self.ema.load_state_dict(ckpt["ema"])
        self.epoch, self.best = ckpt["epoch"], ckpt["best"]
        set_rng_state(ckpt["rng"])
        self.generator.set_state(ckpt["generator"])
        self.history = self._read_results()[: self.epoch]
        if self.cfg.epochs != ckpt["config"]["epochs"]:
            # Extending a run stretches the schedule over the new length from where it stands.
            self.schedule = LRSchedule(
                self.optimizer, self.cfg.sched, self.steps_per_epoch, self.cfg.epochs
            )
            self.schedule.load_state_dict(ckpt["schedule"])
        print(f"resumed {self.run_dir} at epoch {self.epoch + 1}/{self.cfg.epochs}")

    def _read_results(self) -> list[dict]:
        path = self.run_dir / "results.csv"
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]

    def _write_results(self) -> None:
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        tmp = self.run_dir / ".results.csv.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            for row in self.history:
                writer.writerow({k: (int(v) if k == "epoch" else v) for k, v in row.items()})
        os.replace(tmp, self.run_dir / "results.csv")

    def _eval_model(self) -> nn.Module:
        return self.ema.module if self.ema else self.model

    def _save_best(self, metrics: dict) -> None:
        save_safetensors(self._eval_model().state_dict(), self.weights_dir / "best.safetensors")
        info = {
            "epoch": self.epoch,
            "metrics": {k: float(v) for k, v in metrics.items()},
            "classes": list(self.data.classes),
            "config": self.cfg.to_dict(),
        }
        tmp = self.weights_dir / ".best.yaml.tmp"
        with open(tmp, "w") as f:
            yaml.safe_dump(info, f, sort_keys=False)
        os.replace(tmp, self.weights_dir / "best.yaml")

    # ---- the loop ---------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg, t = self.cfg, self.cfg.train
        metric_key = t.metric or self.task.metric
        mode = self.task.metric_mode if not t.metric else ("min" if "loss" in t.metric else "max")
        metrics: dict = {}
        print(f"run folder: {self.run_dir}")
        while self.epoch < cfg.epochs:
            epoch = self.epoch
            self._apply_freeze(epoch)
            # Reseeding per epoch makes each epoch independent of the ones before it (resume).
            seed_everything(cfg.seed * 1000 + epoch)
            self.generator.manual_seed(cfg.seed * 1000 + epoch)
            start = time.time()
            train_stats = self._train_epoch(epoch)
            row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"], **train_stats}
            last = epoch + 1 == cfg.epochs
            if last or (epoch + 1) % t.val_every == 0:
                metrics = self.evaluate(plots=t.plots)
                row.update(metrics)
            row["time"] = time.time() - start
            self.history.append(row)
            self.epoch += 1
            value = row.get(metric_key)
            if value is not None and (
                self.best is None or (value > self.best if mode == "max" else value < self.best)
            ):
                self.best = value
                self._save_best(row)
            self._write_results()
            save_checkpoint(self._checkpoint(), self.weights_dir / "last.ckpt")
            if t.plots:
                plot_history(self.history, self.plots_dir)
            if self.writer:
                for k, v in row.items():
                    if k != "epoch":
                        self.writer.add_scalar(k, v, epoch + 1)
                self.writer.flush()
            shown = ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k.startswith("val/"))
            print(f"epoch {epoch + 1}/{cfg.epochs}: {shown} ({row['time']:.1f}s)")
        if self.writer:
            self.writer.close()
        return metrics

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        cfg, t = self.cfg, self.cfg.train
        self._set_train_mode()
        n_batches = self._batches_per_epoch()
        sums: dict[str, float] = {}
        seen = 0
        start = time.time()
        bar = tqdm(
            total=n_batches,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            leave=False,
            dynamic_ncols=True,
            disable=None,
        )
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(self.train_loader):
            if i >= n_batches:
                break
            if i == 0 and t.plots:
                self.task.draw_batch(batch, self.plots_dir / "samples.png")
            batch = self.task.to_device(batch, self.device, self.channels_last)
            autocast = (
                torch.autocast("cuda", dtype=torch.float16)
                if self.amp
                else contextlib.nullcontext()
            )
            with autocast:
                outputs = self.task.forward(self.model, batch)
                losses = self.task.loss(outputs, batch)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss is {loss.item()} at epoch {epoch + 1}, step {i + 1} (batch {i}); "
                    f"the last good checkpoint is {self.weights_dir / 'last.ckpt'} "
                    "— lower optim.lr or set train.grad_clip"
                )
            self.scaler.scale(loss / t.accumulate).backward()
            if (i + 1) % t.accumulate == 0 or i + 1 == n_batches:
                if t.grad_clip:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.schedule.step()
                if self.ema:
                    self.ema.update(self.model)
            bs = self.task.batch_size(batch)
            seen += bs
            for k, v in losses.items():
                if isinstance(v, torch.Tensor) and v.ndim == 0:
                    sums[k] = sums.get(k, 0.0) + v.item() * bs
            bar.set_postfix(
                loss=f"{sums['loss'] / seen:.4f}",
                lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                img_s=f"{seen / (time.time() - start):.1f}",
            )
            bar.update()
        bar.close()
        return {f"train/{k}": v / max(1, seen) for k, v in sums.items()}

    @torch.no_grad()
    def evaluate(self, plots: bool = False) -> dict[str, float]:
        model = self._eval_model()
        was_training = model.training
        model.eval()
        metrics = self.task.evaluate(
            model, self.val_loader, self.device, self.plots_dir if plots else None
        )
        if plots:
            batch = next(iter(self.val_loader))
            outputs = self.task.forward(model, self.task.to_device(batch, self.device))
            self.task.draw_batch(batch, self.plots_dir / "predictions.png", outputs)
        model.train(was_training)
        return metrics
