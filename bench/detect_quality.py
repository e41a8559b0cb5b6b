"""Our ``detect-shapes`` SSD against torchvision's ``ssdlite320_mobilenet_v3_large``, side by side.

    python bench/detect_quality.py [--budget SECONDS] [--data DIR]

Both detectors start from random weights and train for the same wall-clock budget on the same
batches: one DataLoader stream of the preset's shapes data with the preset's box-aware
augmentation, replayed from the same seed for each. torchvision's model gets the images back on
the 0..1 scale it expects (it normalises and resizes to 320 x 320 itself) and labels shifted by
one (its class 0 is background). Both follow the same recipe (the preset's AdamW learning rate,
warm-up then cosine decay over the budget) and are scored by the same code: detections mapped
back to original-image pixels, VOC AP at IoU 0.5 against the annotations as written.

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
    return task.score(predictions, dataset)[task.metric]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=240.0, help="training seconds per model")
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
        f"{args.budget:.0f}s of training each, AdamW lr {lr}"
    )

    torch.manual_seed(args.seed)
    ours = task.build_model()
    ours.train()

    def our_loss(batch: dict) -> torch.Tensor:
        return task.loss(task.forward(ours, batch), batch)["loss"]

    steps = train_for(
        args.budget, list(ours.parameters()), lr, wd, batches(train, args.seed), our_loss
    )
    ours.eval()
    ours_map = task.evaluate(ours, val, torch.device("cpu"))[task.metric]
    print(
        f"visbricks detect-shapes ({cfg.model.backbone} + {cfg.model.neck} + SSD head): "
        f"{steps} steps, mAP@0.5 {ours_map:.4f}",
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
        args.budget, list(theirs.parameters()), lr, wd, batches(train, args.seed), their_loss
    )
    theirs_map = torchvision_map50(task, theirs, val)
    print(f"torchvision ssdlite320_mobilenet_v3_large: {steps} steps, mAP@0.5 {theirs_map:.4f}")

    ratio = ours_map / theirs_map if theirs_map > 0 else math.inf
    print(
        f"\nmAP@0.5  ours {ours_map:.4f}  torchvision {theirs_map:.4f}  ratio {ratio:.2f} "
        f"({'meets' if ratio >= 1.0 else 'BELOW'} the 1.0 goal)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
