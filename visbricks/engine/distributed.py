"""Several processes training one model (DDP): the mechanics the Trainer calls through one object.

``visbricks train`` under ``torchrun`` (or ``devices=N``, which starts ``torchrun --standalone``)
runs one process per device. Then:

- the process group is gloo on CPU and NCCL on CUDA; each process drives ``cuda:LOCAL_RANK``;
- ``batch_size`` is the *global* batch: each of the N processes loads ``batch_size / N`` samples
  per step through a :class:`~torch.utils.data.DistributedSampler` whose shuffle equals the
  one-process shuffle (seed ``seed*1000 + epoch``, reseeded with ``set_epoch``), so N processes
  see the same global batches as one process does;
- gradients are averaged by DDP, skipped with ``no_sync`` on the gradient-accumulation steps
  that do not step the optimizer; BatchNorm becomes SyncBatchNorm on CUDA (on CPU each process
  normalizes its own share, as gloo has no SyncBatchNorm);
- validation runs on every process over its share of the val set (no padding, no duplicates);
  every ``update`` an evaluator received is gathered and replayed into one evaluator, so the
  metrics are those of all predictions together (exact mAP, not a mean of per-rank mAPs);
- only rank 0 writes files and prints (the other ranks' stdout goes to /dev/null).

One process (no ``WORLD_SIZE`` > 1 in the environment) gets :class:`Single`, whose hooks cost
nothing: no sampler change, no wrapper, no extra synchronisation.

Several machines: run the same command on each with torchrun's rendezvous flags, e.g. on both
nodes ``torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d
--rdzv_endpoint=HOST:29500 --rdzv_id=myrun -m visbricks.cli train detect-shapes ...`` (every
node needs the data at the same path and a shared ``project`` folder for the run's files).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from ..errors import ConfigError


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


class Single:
    """One process: every hook is the identity (nothing added to the single-process path)."""

    active = False
    rank = 0
    world_size = 1
    is_main = True

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def run_on_main(self, fn: Callable[[], Any]) -> Any:
        return fn()

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def loader(self, dataset: Dataset, train: bool, batch_size: int, seed: int, **kw):
        raise AssertionError("single-process loaders are the Trainer's own")

    def set_epoch(self, loader: DataLoader, epoch: int) -> None:
        pass

    def no_sync(self, model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def all_finite(self, loss: torch.Tensor) -> bool:
        return bool(torch.isfinite(loss))

    def evaluate(self, task, model, loader, device, plots_dir):
        return task.evaluate(model, loader, device, plots_dir)

    def close(self) -> None:
        pass


class Distributed(Single):
    """Process ``rank`` of ``world_size`` in an initialised process group."""

    active = True

    def __init__(self, device: torch.device) -> None:
        import torch.distributed as dist

        self.dist = dist
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        super().__init__(device)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.is_main = self.rank == 0
        if not self.is_main:  # rank 0 alone logs; errors still reach stderr
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process

    # ---- setup ---------------------------------------------------------------------------------
    def run_on_main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on rank 0 (e.g. claim the run folder), its result sent to every rank."""
        box = [fn() if self.is_main else None]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def prepare_model(self, model: nn.Module) -> nn.Module:
        if self.device.type == "cuda":
            # Statistics over the global batch; same parameters and buffers, same state_dict.
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        """The DDP wrapper the training step calls (rebuilt when frozen modules change)."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(model, device_ids=ids)  # buffers (BN statistics) follow rank 0's

    # ---- data ------------------------------------------------------------------------------------
    def loader(self, dataset: Dataset, train: bool, batch_size: int, seed: int, **kw) -> DataLoader:
        if batch_size % self.world_size:
            raise ConfigError(
                f"batch_size={batch_size} is the global batch and must divide by the "
                f"{self.world_size} processes"
            )
        per_rank = batch_size // self.world_size
        if train:
            # seed + epoch (set_epoch) = seed*1000 + epoch: the permutation one process draws.
            sampler = DistributedSampler(
                dataset,
                self.world_size,
                self.rank,
                shuffle=True,
                seed=seed * 1000,
                drop_last=True,
            )
            drop = len(dataset) // self.world_size > per_rank
            return DataLoader(dataset, batch_size=per_rank, sampler=sampler, drop_last=drop, **kw)
        # Validation: this rank's share, every sample exactly once over all ranks.
        share = Subset(dataset, range(self.rank, len(dataset), self.world_size))
        return DataLoader(share, batch_size=per_rank, shuffle=False, **kw)

    def set_epoch(self, loader: DataLoader, epoch: int) -> None:
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)

    # ---- the step --------------------------------------------------------------------------------
    def no_sync(self, model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        """No gradient all-reduce on accumulation steps that do not step the optimizer."""
        if sync or not hasattr(model, "no_sync"):
            return contextlib.nullcontext()
        return model.no_sync()

    def all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on *every* rank (all stop together instead of hanging)."""
        flag = torch.tensor(
            [1.0 if bool(torch.isfinite(loss)) else 0.0],
            device=self.device if self.device.type == "cuda" else "cpu",
        )
        self.dist.all_reduce(flag, op=self.dist.ReduceOp.MIN)
        return bool(flag.item() > 0)

    # ---- evaluation ------------------------------------------------------------------------------
    def gather_evaluator(self, recorder: Recorder) -> Any:
        """Every rank's recorded calls, replayed in rank order into one fresh evaluator."""
        everyone: list[Any] = [None] * self.world_size
        self.dist.all_gather_object(everyone, recorder.calls)
        evaluator = recorder.fresh()
        for calls in everyone:
            Recorder.replay(calls, evaluator)
        return evaluator

    def evaluate(self, task, model, loader, device, plots_dir):
        dataset = loader.dataset.dataset if isinstance(loader.dataset, Subset) else loader.dataset
        recorder = Recorder(lambda: task.evaluator(dataset, "val"))
        with torch.no_grad():
            for batch in loader:
                task.eval_step(model, task.to_device(batch, device), recorder)
        result = self.gather_evaluator(recorder).compute()
        if plots_dir is not None and self.is_main:
            result.plots(plots_dir)
        return result

    def close(self) -> None:
        if self.dist.is_initialized():
            self.dist.destroy_process_group()


class Recorder:
    """Stands in for an evaluator during a sharded evaluation: keeps every ``add_losses`` and
    ``update`` call (tensors moved to the CPU) so they can be gathered and replayed."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.fresh = make
        self.calls: list[tuple[str, tuple]] = []

    def add_losses(self, losses: dict, n: int) -> None:
        plain = {k: float(v) for k, v in losses.items() if not torch.is_tensor(v) or v.ndim == 0}
        self.calls.append(("add_losses", (plain, n)))

    def update(self, predictions: Any, targets: Any) -> None:
        self.calls.append(("update", (_cpu(predictions), _cpu(targets))))

    @staticmethod
    def replay(calls: list[tuple[str, tuple]], evaluator: Any) -> None:
        for name, args in calls:
            getattr(evaluator, name)(*args)


def _cpu(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu(v) for v in value)
    return value


def setup(device: torch.device) -> Single:
    """:class:`Distributed` under torchrun with several processes, else :class:`Single`."""
    if env_world_size() > 1:
        return Distributed(device)
    return Single(device)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def check_devices(devices: int, batch_size: int | str, device: str) -> None:
    """Refuse a ``devices=N`` that cannot run before any process starts: ``batch_size`` is the
    global batch, so N must divide it; and N is at most the CUDA GPUs visible (on CUDA) or the
    CPU cores (on the CPU: gloo processes beyond the cores only queue for them, and thousands
    would exhaust the machine). Refused, never capped: a capped N would change the
    per-process batch the user planned. Every problem in one ConfigError line."""
    problems = []
    if isinstance(batch_size, int) and batch_size % devices:
        problems.append(
            f"batch_size={batch_size} is the global batch and must divide by devices={devices} "
            f"(one share per process): give a multiple of {devices}"
        )
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if wants_cuda:
        gpus = torch.cuda.device_count()
        if devices > gpus:
            problems.append(
                f"devices={devices} asks for one process per GPU but {gpus} CUDA GPU"
                f"{'s are' if gpus != 1 else ' is'} visible (refused, not capped)"
            )
    else:
        cores = usable_cores()
        if devices > cores:
            problems.append(
                f"devices={devices} asks for {devices} CPU training processes but this machine "
                f"gives {cores} CPU core{'s' if cores != 1 else ''} (refused, not capped: give "
                f"devices={cores} or fewer)"
            )
    if problems:
        raise ConfigError("; ".join(problems))


def launch_standalone(devices: int, argv: list[str]) -> int:
    """``devices=N`` on one machine: the same command under ``torchrun --standalone``."""
    import subprocess

    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={devices}",
        "-m",
        "visbricks.cli",
        *argv,
    ]
    print("launching: " + " ".join(command[1:]), flush=True)
    return subprocess.call(command)
