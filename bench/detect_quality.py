"""Our ``detect-shapes`` SSD against torchvision's ``ssdlite320_mobilenet_v3_large``, side by side.

    python bench/detect_quality.py [--budget 300] [--budget-torchvision 900] [--data DIR]

Both detectors start from random weights and train on the same batches, each for its own
wall-clock budget: ours for the demo's 300 s, torchvision's for 900 s by default, long enough
that it has learned (its 320-px input costs it several times more per step); both budgets are
printed with the result. The batches are one DataLoader stream of the preset's shapes data with
the preset's box-aware augmentation, replayed from the same seed for each. torchvision's model
gets the images back on the 0..1 scale it expects (it normalises and resizes to 320 x 320
itself) and labels shifted by one (its class 0 is background). Both follow the same recipe
(the preset's AdamW learning rate, warm-up then cosine decay over the budget) and are scored by
the same code: detections mapped back to original-image pixels, VOC AP at IoU 0.5 against the
annotations as written.

Ours trains with the Trainer's ``auto`` precision and layout (bf16 + channels-last on CPUs
with native bf16); torchvision's model in fp32 as before, its own recipe having no autocast.
Prints the mAP@0.5 of both and their ratio (goal: ours / torchvision >= 1.0).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.models.detection import ssdlite320_mobilenet_v3_large

from visbricks.config import load_config
from visbricks.data.normalize import denormalize
from visbricks.tasks import build_task
from visbricks.tasks.detect import DetectTask, loader_dataset

WARMUP = 0.05  # fraction of the budget spent warming the learning rate up


def batches(loader: DataLoader, seed: int) -> Iterator[dict]:
    """An endless stream of training batches, identical for every caller with the same seed."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=loader.collate_fn,
        generator=generator,
    )
    while True:
        yield from loader


def train_for(
    budget: float,
    params: list[nn.Parameter],
    lr: float,
    weight_decay: float,
    stream: Iterator[dict],
    step_loss: Callable[[dict], torch.Tensor],
) -> int:
    """Train until ``budget`` seconds have passed; the learning rate follows the clock."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    start = time.time()
    steps = 0
    while (elapsed := time.time() - start) < budget:
        t = elapsed / budget
        factor = (
            t / WARMUP
            if t < WARMUP
            else 0.5 * (1 + math.cos(math.pi * (t - WARMUP) / (1 - WARMUP)))
        )
        for group in optimizer.param_groups:
            group["lr"] = lr * max(factor, 0.01)
        loss = step_loss(next(stream))
        if not torch.isfinite(loss):
            raise RuntimeError(f"loss became {loss.item()} at step {steps}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    return steps


def loop_precision(cfg, device):
    """The Trainer's ``auto`` precision, with bf16 for its fp16 + scaler where the GPU has bf16:
    this plain loop has no GradScaler."""
    from visbricks.engine.precision import Precision, cuda_has_bf16, resolve_amp

    precision = resolve_amp(cfg.train.amp, device)
    if precision.needs_scaler and cuda_has_bf16(device):
        precision = Precision("bf16", device.type)
    return precision


def train_ours(cfg, budget: float, seed: int) -> tuple[float, int]:
    """(VOC mAP@0.5 on val, steps) of the preset's model trained for ``budget`` seconds with
    the preset's recipe and the Trainer's ``auto`` precision and memory layout: in fp32 on a CPU
    the layout the Trainer measures faster on this model (engine/layout.py), the probe's seconds
    counted in the budget as the Trainer counts them in ``train.time``."""
    from visbricks.engine.layout import choose_channels_last, layout_probe_applies
    from visbricks.engine.precision import resolve_channels_last, select_device, to_float32

    task = build_task(cfg)
    data = task.build_data()  # generates the shapes data on first use
    device = select_device(cfg.device)
    precision = loop_precision(cfg, device)
    train = DataLoader(data.train, batch_size=cfg.batch_size, collate_fn=data.collate_fn)
    val = DataLoader(data.val, batch_size=cfg.batch_size, collate_fn=data.collate_fn)
    torch.manual_seed(seed)
    model = task.build_model().to(device)
    if layout_probe_applies(cfg, device):
        tick = time.time()
        choice = choose_channels_last(cfg, model, data, task, device, cfg.batch_size)
        print(f"  ours: {choice.describe()}", flush=True)
        channels_last = choice.channels_last
        budget -= time.time() - tick
    else:
        channels_last = resolve_channels_last(cfg.model.channels_last, device, precision)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    print(f"  ours: {precision.describe()}, channels_last={channels_last}", flush=True)

    def loss(batch: dict) -> torch.Tensor:
        batch = task.to_device(batch, device, channels_last)
        with precision.autocast():
            outputs = task.forward(model, batch)
        return task.loss(to_float32(outputs), batch)["loss"]

    params = list(model.parameters())
    steps = train_for(
        budget, params, cfg.optim.lr, cfg.optim.weight_decay, batches(train, seed), loss
    )
    model.eval()
    return task.evaluate(model, val, device).metrics[task.metric], steps


def torchvision_inputs(task: DetectTask, batch: dict) -> tuple[list[torch.Tensor], list[dict]]:
    images = [denormalize(x, task.mean, task.std).clamp(0, 1) for x in batch["image"]]
    targets = [{"boxes": b, "labels": c + 1} for b, c in zip(batch["boxes"], batch["labels"])]
    return images, targets


@torch.no_grad()
def torchvision_map50(task: DetectTask, model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    dataset = loader_dataset(loader, "detect")
    by_id = {}
    for batch in loader:
        images, _ = torchvision_inputs(task, batch)
        for out, image_id, lb, orig in zip(
            model(images), batch["image_id"].tolist(), batch["letterbox"], batch["orig_size"]
        ):
            boxes = task.to_original(out["boxes"], lb, orig)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            by_id[image_id] = {
                "boxes": boxes[keep],
                "scores": out["scores"][keep],
                "labels": out["labels"][keep] - 1,
            }
    predictions = [by_id[int(r.image_id)] for r in dataset.records]
    return task.score(predictions, dataset).metrics[task.metric]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=300.0, help="our training seconds")
    p.add_argument(
        "--budget-torchvision", type=float, default=900.0, help="torchvision's training seconds"
    )
    p.add_argument("--data", default="data/shapes-det/data.yaml", help="where the preset's data is")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    cfg = load_config("detect-shapes", [f"data.root={args.data}", "eval.coco=false"])
    task = build_task(cfg)
    data = task.build_data()  # generates the shapes data on first use
    train = DataLoader(data.train, batch_size=cfg.batch_size, collate_fn=data.collate_fn)
    val = DataLoader(data.val, batch_size=cfg.batch_size, collate_fn=data.collate_fn)
    lr, wd = cfg.optim.lr, cfg.optim.weight_decay
    print(
        f"{len(data.train)} train / {len(data.val)} val images, {len(data.classes)} classes, "
        f"AdamW lr {lr}; budgets: ours {args.budget:.0f}s, "
        f"torchvision {args.budget_torchvision:.0f}s"
    )

    ours_map, steps = train_ours(cfg, args.budget, args.seed)
    print(
        f"visbricks detect-shapes ({cfg.model.backbone} + {cfg.model.neck} + SSD head): "
        f"{steps} steps in {args.budget:.0f}s, mAP@0.5 {ours_map:.4f}",
        flush=True,
    )

    torch.manual_seed(args.seed)
    theirs = ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=len(data.classes) + 1
    )
    theirs.train()

    def their_loss(batch: dict) -> torch.Tensor:
        losses = theirs(*torchvision_inputs(task, batch))
        return sum(losses.values())

    steps = train_for(
        args.budget_torchvision,
        list(theirs.parameters()),
        lr,
        wd,
        batches(train, args.seed),
        their_loss,
    )
    theirs_map = torchvision_map50(task, theirs, val)
    print(
        f"torchvision ssdlite320_mobilenet_v3_large: {steps} steps in "
        f"{args.budget_torchvision:.0f}s, mAP@0.5 {theirs_map:.4f}"
    )

    ratio = ours_map / theirs_map if theirs_map > 0 else math.inf
    print(
        f"\nmAP@0.5  ours {ours_map:.4f} ({args.budget:.0f}s)  torchvision {theirs_map:.4f} "
        f"({args.budget_torchvision:.0f}s)  ratio {ratio:.2f} "
        f"({'meets' if ratio >= 1.0 else 'BELOW'} the 1.0 goal)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
