"""Our ``segment-shapes`` U-Net against segmentation_models_pytorch's ``Unet("resnet18")``.

    python bench/segment_quality.py [--budget 300] [--data DIR] [--smp-site DIR]

Both models start from random weights (``encoder_weights=None``) and train on the same batches
(one DataLoader stream of the preset's shapes data with the preset's mask-aware augmentation,
replayed from the same seed for each), with the same optimizer (the preset's AdamW learning rate
and weight decay, warm-up then cosine decay over the budget), the same loss (our CE with ignore
index 255), the same precision (the Trainer's ``auto``: bf16 autocast on CPUs with native bf16)
and the same wall-clock budget. Both are scored by the same code: our dataset-level
confusion-matrix mIoU on the validation split. Prints the mIoU of both, their ratio (goal: ours /
smp >= 1.0) and the training images/s of each.

segmentation_models_pytorch is never a dependency of visbricks: install it into a side venv,
e.g. ``python3 -m venv /tmp/smp-venv && /tmp/smp-venv/bin/pip install --no-deps
segmentation_models_pytorch`` and pass ``--smp-site /tmp/smp-venv/lib/python3.*/site-packages``
(its own needs, timm and huggingface_hub, come from our dev environment). Without it the script
prints ``skipped`` and exits 0.
"""

from __future__ import annotations

import argparse
import glob
import math
import sys
import time
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader

from visbricks.config import load_config
from visbricks.tasks import build_task

WARMUP = 0.05  # fraction of the budget spent warming the learning rate up


def import_smp(site: str | None):
    if site:
        for path in sorted(glob.glob(site)):
            sys.path.append(path)
    try:
        import segmentation_models_pytorch as smp
    except ImportError as e:
        return None, str(e)
    return smp, ""


def batches(dataset, batch_size: int, collate_fn, seed: int) -> Iterator[dict]:
    """An endless stream of training batches, identical for every caller with the same seed."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=collate_fn,
        generator=generator,
    )
    while True:
        yield from loader


def train_for(
    budget: float,
    model: nn.Module,
    lr: float,
    weight_decay: float,
    stream: Iterator[dict],
    step_loss: Callable[[dict], torch.Tensor],
) -> tuple[int, int, float]:
    """Train until ``budget`` seconds have passed; (steps, images, seconds)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    start = time.time()
    steps = images = 0
    while (elapsed := time.time() - start) < budget:
        t = elapsed / budget
        cosine = 0.5 * (1 + math.cos(math.pi * (t - WARMUP) / (1 - WARMUP)))
        factor = t / WARMUP if t < WARMUP else cosine
        for group in optimizer.param_groups:
            group["lr"] = lr * max(factor, 0.01)
        batch = next(stream)
        loss = step_loss(batch)
        if not torch.isfinite(loss):
            raise RuntimeError(f"loss became {loss.item()} at step {steps}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        images += len(batch["image"])
    return steps, images, time.time() - start


class SMPOutputs(nn.Module):
    """smp's tensor output as the task's ``{"logits": ...}``, so our evaluator scores it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.model(images)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=300.0, help="training seconds for each model")
    p.add_argument("--data", default="data/shapes-seg/segment.yaml", help="the preset's data")
    p.add_argument("--smp-site", default=None, help="site-packages holding smp (glob allowed)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    smp, why = import_smp(args.smp_site)
    if smp is None:
        print(f"skipped: segmentation_models_pytorch is not importable ({why}); see --help")
        return 0

    from visbricks.engine.precision import (
        resolve_amp,
        resolve_channels_last,
        select_device,
        to_float32,
    )

    cfg = load_config("segment-shapes", [f"data.root={args.data}"])
    task = build_task(cfg)
    data = task.build_data()  # generates the shapes data on first use
    device = select_device(cfg.device)
    precision = resolve_amp(cfg.train.amp, device)
    channels_last = resolve_channels_last(cfg.model.channels_last, device, precision)
    val = DataLoader(data.val, batch_size=cfg.batch_size, collate_fn=data.collate_fn)
    lr, wd = cfg.optim.lr, cfg.optim.weight_decay
    print(
        f"{len(data.train)} train / {len(data.val)} val images at {cfg.img_size} px, "
        f"{len(data.classes)} classes, AdamW lr {lr}, batch {cfg.batch_size}, "
        f"{precision.describe()}, channels_last={channels_last}, budget {args.budget:.0f}s each"
    )

    def run(name: str, model: nn.Module) -> tuple[float, float]:
        model = model.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)

        def loss(batch: dict) -> torch.Tensor:
            batch = task.to_device(batch, device, channels_last)
            with precision.autocast():
                outputs = task.forward(model, batch)
            return task.loss(to_float32(outputs), batch)["loss"]

        stream = batches(data.train, cfg.batch_size, data.collate_fn, args.seed)
        steps, images, seconds = train_for(args.budget, model, lr, wd, stream, loss)
        model.eval()
        miou = task.evaluate(model, val, device).metrics["val/mIoU"]
        speed = images / seconds
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(
            f"{name}: {params:.2f} M params, {steps} steps ({speed:.1f} train images/s), "
            f"val mIoU {miou:.4f}",
            flush=True,
        )
        return miou, speed

    torch.manual_seed(args.seed)
    ours, ours_speed = run(
        f"visbricks segment-shapes ({cfg.model.backbone} + {cfg.model.head})", task.build_model()
    )
    torch.manual_seed(args.seed)
    theirs_model = smp.Unet("resnet18", encoder_weights=None, classes=len(data.classes))
    theirs, theirs_speed = run("smp Unet(resnet18)", SMPOutputs(theirs_model))
    print(
        f"mIoU ratio ours / smp: {ours / max(theirs, 1e-9):.3f} (goal >= 1.0); "
        f"training speed ratio ours / smp: {ours_speed / max(theirs_speed, 1e-9):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
