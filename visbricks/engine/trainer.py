"""One Trainer for every task: the task supplies loss, metrics and drawings; this drives the loop.

Reproducibility: each epoch reseeds every RNG from (seed, epoch) and the shuffling generator too,
so an epoch's data order and augmentation do not depend on what ran before it. Together with the
saved model, optimizer, schedule, scaler and EMA state, ``resume`` then reproduces an
uninterrupted run bitwise on CPU in deterministic mode.
"""

from __future__ import annotations

import copy
import csv
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from ..config import Config, save_config
from ..data.bundle import DataBundle
from ..errors import ConfigError, TrainingDiverged, VisbricksError
from ..files import atomic_write, remove_stale_temps
from ..metrics.base import EvalResult
from . import distributed
from .batch_size import choose_batch_size
from .budget import TimeBudget
from .callbacks import EVENTS, Callback, EpochEnd, build_callbacks, overrides
from .checkpoint import (
    RESUME_KEYS,
    get_rng_state,
    read_checkpoint,
    seed_everything,
    set_rng_state,
)
from .contract import TrainableTask, training_forward
from .ema import ModelEMA
from .layout import choose_channels_last, layout_probe_applies
from .lr_finder import LRFindResult, lr_range_test, save_lr_find
from .optim import LRSchedule, build_optimizer, check_module_paths, param_groups
from .precision import select_device, to_float32
from .rundir import new_run_dir, resume_run_dir
from .settings import TrainSettings


def set_deterministic(enabled: bool) -> None:
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


class Trainer:
    """Drives any task (``TrainableTask``): epochs of ``train_step``, validation, and the
    callbacks that write what a run leaves behind (engine/callbacks.py)."""

    def __init__(
        self,
        cfg: Config,
        model: nn.Module,
        data: DataBundle,
        task: TrainableTask,
        run_dir: str | Path | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.cfg = cfg
        # Given, never looked up, so the engine does not depend on the tasks layer above it.
        self.task = task
        self.data = data
        # Under torchrun: process group, this rank's device (engine/distributed.py); else no-op.
        self.dist = distributed.setup(select_device(cfg.device))
        self.device = self.dist.device
        set_deterministic(cfg.deterministic)
        self.model = self.dist.prepare_model(model).to(self.device)
        ckpt = read_checkpoint(cfg.resume, RESUME_KEYS) if cfg.resume else None
        # A relative data.root is read against the folder training starts in, but `eval RUN`,
        # `predict` and a resume may start anywhere: the run records the folder it read, so
        # they find the same data instead of regenerating a synthetic preset's beside them.
        root = (cfg.get("data") or {}).get("root")
        if isinstance(root, str) and not Path(root).expanduser().is_absolute():
            cfg = self.cfg = _with_value(cfg, ("data", "root"), str(Path(root).resolve()))
        # batch_size: auto and optim.lr: auto become numbers before anything reads them, in a
        # copy of cfg (the caller's stays as given); config.yaml and last.ckpt keep the numbers.
        # Seconds the auto choices take: train.time is the whole run's wall clock, so the
        # budget counts them as already spent (as a resumed run counts its earlier processes).
        self.tuning_s = 0.0
        if cfg.batch_size == "auto":
            tick = time.perf_counter()
            cfg = self.cfg = self._auto_batch_size(cfg, model, data, task, ckpt)
            self.tuning_s += time.perf_counter() - tick
        if layout_probe_applies(cfg, self.device):
            tick = time.perf_counter()
            cfg = self.cfg = self._auto_layout(cfg, model, data, task, ckpt)
            self.tuning_s += time.perf_counter() - tick
        # Every setting the loop reads, resolved once: "auto" becomes what this device runs
        # fastest (engine/precision.py); printed and written to config.yaml.
        self.settings = s = TrainSettings.resolve(cfg, self.device, task.metric, task.metric_mode)
        self.precision = s.precision
        self.amp = self.precision.enabled
        self.channels_last = s.channels_last
        self.workers = s.workers
        # Built before the run folder is claimed: a bad train.callbacks name leaves no folder.
        self.callbacks = build_callbacks(self, list(callbacks))
        # Per event, the callbacks that handle it on this rank (the loop calls only those).
        self._hooks = {
            event: [
                cb
                for cb in self.callbacks
                if overrides(cb, event) and (self.dist.is_main or not cb.main_only)
            ]
            for event in EVENTS
        }
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.needs_scaler)
        # The compiled wrapper shares parameters with self.model, which checkpoints keep using
        # (its state_dict has no "_orig_mod." prefixes).
        self.train_model: nn.Module = (
            torch.compile(self.model) if "model" in s.compile else self.model
        )
        # train.compile: loss|all compiles the task's loss on its own: inductor fuses the
        # elementwise chains of a loss such as depth's warp + SSIM, which eager runs op by op.
        # Uncompiled, task.loss is looked up at each step (a caller may have replaced it).
        self._compiled_loss = torch.compile(task.loss) if "loss" in s.compile else None
        self._train_base = self.train_model  # what DDP wraps under torchrun
        self._compile_reported = not s.compile
        self._compile_s = 0.0  # the first step's compile time, until train.time accounts it
        check_module_paths(self.model, [*s.freeze, *s.lr_mult], "train.freeze/lr_mult")
        self.frozen: set[str] = set()
        self.ema: ModelEMA | None = None
        self.epoch = 0  # next epoch to run
        self.best: float | None = None
        self.history: list[dict] = []
        self.last_eval: EvalResult | None = None  # the latest evaluate() (its .table is the report)
        self.stop_reason: str | None = None  # set by stop(): the loop ends after this epoch

        self.lr_find: LRFindResult | None = None  # the range test's curve (optim.lr: auto)
        if cfg.optim.lr == "auto":
            tick = time.perf_counter()
            cfg = self.cfg = self._auto_lr(cfg, model, data, task, ckpt)
            self.tuning_s += time.perf_counter() - tick

        def claim_run_dir() -> Path:
            if cfg.resume:
                # The checkpoint's own run folder, checked; a copied last.ckpt starts a new one.
                return resume_run_dir(cfg.resume, cfg.project, cfg.task, cfg.name)
            return Path(run_dir) if run_dir else new_run_dir(cfg.project, cfg.task, cfg.name)

        self.run_dir = self.dist.run_on_main(claim_run_dir)  # one folder, whatever the ranks
        self.plots_dir = self.run_dir / "plots"
        self.weights_dir = self.run_dir / "weights"
        self.staging_dir = self.plots_dir / ".val"  # this validation's plots, published if best
        self.plots_dir.mkdir(parents=True, exist_ok=True)
        self.weights_dir.mkdir(parents=True, exist_ok=True)
        if self.lr_find is not None and self.dist.is_main:
            save_lr_find(self.lr_find, self.plots_dir)  # plots/lr_find.png, lr_find.csv
        if self.dist.is_main:
            # Temps of runs killed mid-write, in this run and its siblings: a run killed during
            # its first checkpoint has nothing to resume, so the next start is a new folder.
            for run in {self.run_dir, *self.run_dir.parent.iterdir()}:
                for folder in (run, run / "weights"):
                    remove_stale_temps(folder)

        self.generator = torch.Generator()  # shuffling; reseeded every epoch
        self.train_loader = self.make_loader(data.train, train=True)
        self.val_loader = self.make_loader(data.val, train=False)
        self.steps_per_epoch = -(-self._batches_per_epoch() // s.accumulate)
        self._apply_freeze(0, rebuild=True)
        if ckpt is not None:
            # Replay the unfreezing up to the saved epoch so parameter groups come in the order
            # the saved optimizer state has them.
            for e in range(1, ckpt["epoch"]):
                self._apply_freeze(e, quiet=True)
        if s.ema:
            self.ema = ModelEMA(self.model, s.ema_decay, s.ema_tau)
        # train.time: the optimizer steps are planned to fit the budget (engine/budget.py).
        self.budget = TimeBudget(s.time, self.steps_per_epoch, s.val_every) if s.time else None
        if self.budget is not None:
            self.budget.spent = self.tuning_s  # a resume replaces it with the saved total
        if ckpt is not None:
            self._load_checkpoint(ckpt)
        if self.dist.is_main:
            save_config(self._resolved_config(), self.run_dir / "config.yaml")

    def _emit(self, event: str, *args) -> None:
        for cb in self._hooks[event]:
            getattr(cb, event)(self, *args)

    def stop(self, reason: str) -> None:
        """End training after the current epoch (a callback's call: early stopping)."""
        if self.stop_reason is None:
            self.stop_reason = reason
            print(reason, flush=True)

    # ---- setup ----------------------------------------------------------------------------------
    def _auto_batch_size(self, cfg: Config, model: nn.Module, data, task, ckpt) -> Config:
        """``batch_size: auto`` → a number (engine/batch_size.py); a resumed run keeps the
        batch its first start chose."""
        if ckpt is not None:
            return _with_value(cfg, ("batch_size",), ckpt["config"]["batch_size"])
        choice = self.dist.run_on_main(
            lambda: choose_batch_size(cfg, model, data, task, self.device)
        )
        # batch_size is the global batch: every process measured for its own device.
        size = choice.batch_size * self.dist.world_size
        print(choice.describe(), flush=True)
        return _with_value(cfg, ("batch_size",), size)

    def _auto_layout(self, cfg: Config, model: nn.Module, data, task, ckpt) -> Config:
        """``model.channels_last: auto`` in fp32 on a CPU → the layout measured faster
        (engine/layout.py); a resumed run keeps its first start's choice."""
        kept = ckpt["config"]["model"].get("channels_last") if ckpt is not None else None
        if isinstance(kept, bool):
            return _with_value(cfg, ("model", "channels_last"), kept)
        per_process = max(1, int(cfg.batch_size) // self.dist.world_size)
        choice = self.dist.run_on_main(
            lambda: choose_channels_last(cfg, model, data, task, self.device, per_process)
        )
        print(choice.describe(), flush=True)
        return _with_value(cfg, ("model", "channels_last"), choice.channels_last)

    def _auto_lr(self, cfg: Config, model: nn.Module, data, task, ckpt) -> Config:
        """``optim.lr: auto`` → the range test's suggestion (engine/lr_finder.py), run on a
        copy of the initial model; a resumed run keeps the lr its first start chose."""
        if ckpt is not None:
            return _with_value(cfg, ("optim", "lr"), ckpt["config"]["optim"]["lr"])
        result = self.dist.run_on_main(lambda: lr_range_test(cfg, model, data, task, self.device))
        self.lr_find = result
        print(
            f"optim.lr=auto: {result.suggestion:.3g} ({result.rule}; lr range test over "
            f"{len(result.lrs)} steps from {result.start:.1e}"
            + (f", stopped: {result.stopped}" if result.stopped else "")
            + ")",
            flush=True,
        )
        return _with_value(cfg, ("optim", "lr"), float(f"{result.suggestion:.3g}"))

    def _resolved_config(self) -> dict:
        """The config with the ``auto`` choices replaced by what this run used."""
        resolved = self.cfg.to_dict()
        resolved["train"]["amp"] = self.precision.mode
        resolved["model"]["channels_last"] = self.channels_last
        resolved["workers"] = self.workers
        return resolved

    def describe_setup(self) -> str:
        return (
            f"device {self.device}: {self.precision.describe()}, "
            f"channels_last={'on' if self.channels_last else 'off'}, workers={self.workers}"
            + (f", torch.compile ({' + '.join(self.settings.compile)})" if self.settings.compile
               else "")
        )

    def make_loader(self, dataset, train: bool) -> DataLoader:
        s = self.settings
        workers = self.workers
        kwargs = dict(
            num_workers=workers,
            collate_fn=self.data.collate_fn,
            pin_memory=self.device.type == "cuda",
            # Persistent workers keep their RNG across epochs; deterministic runs restart them
            # each epoch so that an epoch's augmentation depends only on (seed, epoch) (resume).
            persistent_workers=workers > 0 and not s.deterministic,
            prefetch_factor=4 if workers > 0 else None,
        )
        if self.dist.active:  # several processes: each loads its share of the global batch
            return self.dist.loader(dataset, train, s.batch_size, s.seed, **kwargs)
        if train and self.data.batch_sampler is not None:
            sampler = self.data.batch_sampler(dataset, s.batch_size, self.generator)
            return DataLoader(dataset, batch_sampler=sampler, **kwargs)
        return DataLoader(
            dataset,
            batch_size=s.batch_size,
            # The shuffle draws from self.generator alone (the loader's worker seeding does not),
            # so it is the permutation a DistributedSampler draws for the same seed and epoch.
            sampler=RandomSampler(dataset, generator=self.generator) if train else None,
            drop_last=train and len(dataset) > s.batch_size,
            **kwargs,
        )

    def _batches_per_epoch(self) -> int:
        n = len(self.train_loader)
        mb = self.settings.max_batches
        return min(n, mb) if mb else n

    def _param_groups(self, frozen: set[str], only: list[str] | None = None) -> list[dict]:
        o = self.cfg.optim
        return param_groups(self.model, o.lr, o.weight_decay, self.settings.lr_mult, frozen, only)

    def _apply_freeze(self, epoch: int, rebuild: bool = False, quiet: bool = False) -> None:
        """Freeze modules whose ``freeze`` epochs are not over; optimize the unfrozen."""
        freeze = self.settings.freeze
        frozen = {name for name, until in freeze.items() if epoch < until}
        for name in freeze:
            module = self.model.get_submodule(name)
            module.requires_grad_(name not in frozen)
        if rebuild:
            self.optimizer = build_optimizer(self.cfg.optim, self._param_groups(frozen))
            self.schedule = LRSchedule(
                self.optimizer, self.cfg.sched, self.steps_per_epoch, self.settings.epochs
            )
        else:
            for name in sorted(self.frozen - frozen):
                for group in self._param_groups(frozen, only=[name]):
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

    # ---- what the callbacks write ---------------------------------------------------------------
    def checkpoint_state(self) -> dict:
        """What weights/last.ckpt holds: everything a resume needs (RESUME_KEYS and more)."""
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
            "budget": self.budget.state_dict() if self.budget else None,
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
        if self.budget is not None and ckpt.get("budget"):
            # The same plan, from where it stood; a new train.time extends or shortens it.
            self.budget.load_state_dict(ckpt["budget"])
            self.budget.seconds = float(self.settings.time)
            if self.budget.plan is not None:
                self.schedule.set_total(self.budget.plan.total_steps, self.settings.epochs)
            planned = self.budget.plan.total_steps if self.budget.plan else "?"
            print(
                f"resumed {self.run_dir} at epoch {self.epoch + 1}, step "
                f"{self.schedule.last_step}/{planned} of a {self.budget.seconds:g} s budget "
                f"({self.budget.spent:.1f} s spent)"
            )
            return
        if self.settings.epochs != ckpt["config"]["epochs"]:
            # Extending a run stretches the schedule over the new length from where it stands.
            self.schedule = LRSchedule(
                self.optimizer, self.cfg.sched, self.steps_per_epoch, self.settings.epochs
            )
            self.schedule.load_state_dict(ckpt["schedule"])
        print(f"resumed {self.run_dir} at epoch {self.epoch + 1}/{self.settings.epochs}")

    def _read_results(self) -> list[dict]:
        path = self.run_dir / "results.csv"
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            return [{k: _cell(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]

    def write_results(self) -> None:
        """results.csv from ``history`` (one row an epoch, the union of their columns)."""
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=keys)
                writer.writeheader()
                for row in self.history:
                    writer.writerow({k: (int(v) if k == "epoch" else v) for k, v in row.items()})

        atomic_write(self.run_dir / "results.csv", write)

    def eval_model(self) -> nn.Module:
        """The weights that are evaluated and published: the EMA's when on."""
        return self.ema.module if self.ema else self.model

    # ---- the loop ---------------------------------------------------------------------------
    def fit(self) -> dict:
        s = self.settings
        metrics: dict = {}
        print(f"run folder: {self.run_dir}")
        print(self.describe_setup())
        if self.budget is not None:
            self.budget.start()
        self._bookkeeping_s = 0.0  # the callbacks' time after the last epoch (train.time)
        self._emit("on_fit_start")
        while not self._finished():
            epoch = self.epoch
            self._apply_freeze(epoch)
            # Reseeding per epoch makes each epoch independent of the ones before it (resume).
            seed_everything(s.seed * 1000 + epoch)
            self.generator.manual_seed(s.seed * 1000 + epoch)
            if self.dist.active:  # DDP over the parameters trained this epoch; same shuffle
                self.dist.set_epoch(self.train_loader, epoch)
                self.train_model = self.dist.wrap(self._train_base)
            start, steps_before = time.time(), self.schedule.last_step
            train_stats = self._train_epoch(epoch)
            row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"], **train_stats}
            last = self._finished(epoch + 1)
            validated = last or (epoch + 1) % self._val_every() == 0
            val_start = time.time()
            if validated:
                metrics = self.evaluate(plots=s.plots, plots_dir=self.staging_dir).metrics
                row.update(metrics)
            val_s = time.time() - val_start
            row["time"] = time.time() - start
            row["amp"] = self.precision.mode
            if self.budget is not None:
                row["steps"] = self.schedule.last_step
                if self.budget.plan is not None:
                    row["planned_steps"] = self.budget.plan.total_steps
                row["planned_time"] = self.budget.seconds
                row["elapsed"] = self.budget.elapsed()
            self.history.append(row)
            self.epoch += 1
            value = row.get(s.metric)
            improved = s.improves(value, self.best)
            if improved:
                self.best = value
            end = EpochEnd(epoch, row, validated, improved, value)
            self._emit("on_validation_end", end)  # best weights, their plots
            if self.budget is not None and not last:
                # What this epoch cost besides its steps at the measured pace and validation:
                # loader start-up, the first step, and (measured one epoch late) checkpoint and
                # plots. The plan is made or corrected before the checkpoint, which keeps it.
                self.budget.pause()
                steps_run = self.schedule.last_step - steps_before
                overhead = time.time() - start - val_s - steps_run * self.budget.pace()
                overhead += self._bookkeeping_s
                # torch.compile's first step is paid once, not again in every epoch to come.
                overhead -= self._compile_s
                self._compile_s = 0.0
                self._plan_budget(val_s if validated else None, max(0.0, overhead))
            bookkeeping_start = time.time()
            self._emit("on_epoch_end", end)  # results.csv, last.ckpt, curves, TensorBoard, ...
            self._bookkeeping_s = time.time() - bookkeeping_start
        if self.budget is not None:
            plan = self.budget.plan
            print(
                f"train.time: budget {self.budget.seconds:g} s, used {self.budget.elapsed():.1f} s"
                + (
                    f" ({self.tuning_s:.1f} s choosing batch_size/layout/optim.lr: auto)"
                    if self.tuning_s
                    else ""
                )
                + f" for {self.schedule.last_step} optimizer steps"
                + (f" ({plan.total_steps} planned, {self.budget.replans} re-plans)" if plan else "")
            )
        self._emit("on_fit_end")
        return metrics

    # ---- the time budget (train.time) ---------------------------------------------------------
    def _finished(self, epochs_done: int | None = None) -> bool:
        """Whether training is over after ``epochs_done`` epochs (default: those done)."""
        if self.stop_reason is not None:
            return True
        epochs_done = self.epoch if epochs_done is None else epochs_done
        if self.budget is None:
            return epochs_done >= self.settings.epochs
        plan = self.budget.plan
        if plan is None:  # not measured yet: over only if the budget is gone already
            return epochs_done > 0 and self.budget.remaining() <= 0
        return self.schedule.last_step >= plan.total_steps

    def _val_every(self) -> int:
        if self.budget is not None and self.budget.plan is not None:
            return self.budget.plan.val_every
        return self.settings.val_every

    def epochs_left(self) -> int | None:
        """Epochs still to run, this one included; under ``train.time`` of the current plan
        (None before the first plan is made)."""
        if self.budget is None:
            return self.settings.epochs - self.epoch
        plan = self.budget.plan
        return plan.epochs(self.steps_per_epoch) - self.epoch if plan else None

    def epochs_shown(self) -> str:
        """The epoch count of a progress line: planned (~N) under a time budget."""
        if self.budget is None:
            return str(self.settings.epochs)
        plan = self.budget.plan
        return f"~{plan.epochs(self.steps_per_epoch)}" if plan else "?"

    def _plan_budget(self, val_s: float | None, overhead_s: float | None) -> None:
        """Make the plan (once enough steps were timed) or correct it; every rank follows
        rank 0's plan. ``val_s`` / ``overhead_s``: measured at an epoch end, else estimated."""
        budget = self.budget
        assert budget is not None
        steps, epochs = self.schedule.last_step, self.epoch
        if budget.plan is None:
            if not budget.can_measure():
                return  # one step timed: no pace yet
            if val_s is None:
                val_s = self._estimate_validation()

            def make():
                return budget.make_plan(steps, epochs, val_s, overhead_s or 0.0)

            plan = self.dist.run_on_main(make)
            budget.plan = plan
            print(
                f"train.time={budget.seconds:g}s: {plan.step_s:.3f} s/step, validation "
                f"~{plan.val_s:.1f} s; planned {plan.total_steps} optimizer steps "
                f"({plan.total_steps / self.steps_per_epoch:.1f} epochs), validation every "
                f"{plan.val_every} epoch{'s' if plan.val_every > 1 else ''}",
                flush=True,
            )
        else:
            plan = self.dist.run_on_main(lambda: budget.check(steps, epochs, val_s, overhead_s))
            if plan is None:
                return
            budget.plan = plan
            print(
                f"train.time: re-planned to {plan.total_steps} steps at {plan.step_s:.3f} s/step",
                flush=True,
            )
        self.schedule.set_total(budget.plan.total_steps, self.settings.epochs)

    def _after_step(self) -> None:
        """Under train.time, after each optimizer step: time it, plan once enough steps are
        timed, check the plan every tenth of it."""
        budget = self.budget
        assert budget is not None
        steps = self.schedule.last_step
        budget.step_done(steps)
        if budget.ready_to_plan():
            self._plan_budget(None, None)
        elif budget.plan is not None:
            every = max(1, budget.plan.total_steps // 10)
            if steps % every == 0:
                self._plan_budget(None, None)

    @torch.no_grad()
    def _estimate_validation(self) -> float:
        """Seconds one validation will take, before any has run: two batches timed (the first
        pays the loader's start-up, once), extrapolated to the split, plus a quarter for the
        metrics."""
        model = self.eval_model()
        was_training = model.training
        model.eval()
        n = len(self.val_loader)
        times = []
        tick = time.perf_counter()
        for i, batch in enumerate(self.val_loader):
            self.task.forward(model, self.task.to_device(batch, self.device))
            times.append(time.perf_counter() - tick)
            tick = time.perf_counter()
            if i == 1:
                break
        model.train(was_training)
        if was_training:
            self._set_train_mode()
        if not times:
            return 0.0
        per_batch = times[-1]
        return times[0] + 1.25 * per_batch * max(0, n - 1)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self._set_train_mode()
        n_batches = self._batches_per_epoch()
        sums: dict[str, float] = {}
        seen = 0
        self._emit("on_train_epoch_start", epoch, n_batches)
        self.optimizer.zero_grad(set_to_none=True)
        # Data wait: time blocked on the loader for the next batch, as a share of the epoch's
        # step time (the batch-start callbacks, e.g. drawing samples.png, excluded).
        waited = hooked = 0.0
        start = time.perf_counter()
        batches = iter(self.train_loader)
        for i in range(n_batches):
            if self.budget is not None and self._finished():
                break  # the planned steps are done: the last epoch of a budget is partial
            tick = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            waited += time.perf_counter() - tick
            if self._hooks["on_train_batch_start"]:
                tick = time.perf_counter()
                self._emit("on_train_batch_start", i, batch)
                hooked += time.perf_counter() - tick
            batch = self.task.to_device(batch, self.device, self.channels_last)
            losses = self.train_step(batch, epoch, i, n_batches)
            bs = self.task.batch_size(batch)
            seen += bs
            for k, v in losses.items():
                if isinstance(v, torch.Tensor) and v.ndim == 0:
                    sums[k] = sums.get(k, 0.0) + v.item() * bs
            elapsed = max(time.perf_counter() - start - hooked, 1e-9)
            stats = dict(
                loss=f"{sums['loss'] / seen:.4f}",
                lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                img_s=f"{seen / elapsed:.1f}",
                wait=f"{100 * waited / elapsed:.0f}%",
            )
            self._emit("on_train_batch_end", i, stats)
        self._emit("on_train_epoch_end")
        elapsed = max(time.perf_counter() - start - hooked, 1e-9)
        out = {f"train/{k}": v / max(1, seen) for k, v in sums.items()}
        out["img_s"] = seen / elapsed
        out["data_wait"] = waited / elapsed
        return out

    def train_step(
        self, batch: dict, epoch: int, index: int, n_batches: int
    ) -> dict[str, torch.Tensor]:
        """Forward, loss and backward of one batch (on the device); the optimizer step when the
        batch closes an accumulation group (``train.accumulate``) or the epoch. The loss terms."""
        s = self.settings
        if not self._compile_reported:
            compile_start = time.perf_counter()
        steps = (index + 1) % s.accumulate == 0 or index + 1 == n_batches
        # DDP all-reduces gradients on optimizer steps only (no_sync while accumulating).
        with self.dist.no_sync(self.train_model, steps):
            with self.precision.autocast():
                outputs = self._first_call("model", training_forward, self.task, self.train_model,
                                           batch)
            # Losses (photometric/SSIM, box coding, matching) and metrics run in fp32.
            loss_fn = self._compiled_loss or self.task.loss
            losses = self._first_call("loss", loss_fn, to_float32(outputs), batch)
            loss = losses["loss"]
            if not self.dist.all_finite(loss):
                raise TrainingDiverged(
                    f"loss is {loss.item()} at epoch {epoch + 1}, step {index + 1} (batch "
                    f"{index}); the last good checkpoint is {self.weights_dir / 'last.ckpt'} "
                    "— lower optim.lr or set train.grad_clip"
                )
            self.scaler.scale(loss / s.accumulate).backward()
        if steps:
            self.optimizer_step()
        if not self._compile_reported:
            self._compile_reported = True
            self._compile_s = time.perf_counter() - compile_start
            print(f"torch.compile: first step (compilation) took {self._compile_s:.1f}s",
                  flush=True)
        return losses

    def optimizer_step(self) -> None:
        """One optimizer step: unscale and clip (``train.grad_clip``), the scaler's step and
        update, the schedule, the EMA, and the time budget's bookkeeping."""
        if self.settings.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        if self.ema:
            self.ema.update(self.model)
        if self.budget is not None:
            self._after_step()

    def _first_call(self, part: str, fn, *args):
        """``fn(*args)``; on the first step, when torch.compile compiles ``part`` ("model" or
        "loss"), a failure is named with the key that turns it off instead of a deep trace (an
        uncompiled part's errors stay its own)."""
        if self._compile_reported or part not in self.settings.compile:
            return fn(*args)
        try:
            return fn(*args)
        except VisbricksError:
            raise
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            value = str(self.cfg.train.compile).lower()
            raise ConfigError(
                f"train.compile={value}: torch.compile failed on the first step "
                f"({type(e).__name__}: {first}); set train.compile=false"
            ) from e

    @torch.no_grad()
    def evaluate(self, plots: bool = False, plots_dir: Path | None = None) -> EvalResult:
        """Validation result of the evaluation weights (EMA if on), in fp32 (``.metrics``,
        ``.table``); with ``plots``, the task's plots and predictions.png go to ``plots_dir``
        (default: the run's plots/). The latest is also kept as ``last_eval``."""
        model = self.eval_model()
        was_training = model.training
        model.eval()
        out_dir = Path(plots_dir) if plots_dir is not None else self.plots_dir
        if plots:
            out_dir.mkdir(parents=True, exist_ok=True)
        result = self.dist.evaluate(  # several processes: all ranks' predictions, gathered
            self.task, model, self.val_loader, self.device, out_dir if plots else None
        )
        self.last_eval = result
        if plots and self.dist.is_main:
            batch = next(iter(self.val_loader))
            outputs = self.task.forward(model, self.task.to_device(batch, self.device))
            self.task.draw_batch(batch, out_dir / "predictions.png", outputs)
        model.train(was_training)
        return result


def _with_value(cfg: Config, keys: tuple[str, ...], value: object) -> Config:
    """A copy of ``cfg`` with the key at ``keys`` set to ``value``."""
    out = copy.deepcopy(cfg)
    node = out
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return out


def _cell(text: str) -> float | str:
    """A results.csv value: a number, or text (the ``amp`` column)."""
    try:
        return float(text)
    except ValueError:
        return text
