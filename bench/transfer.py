"""Transfer learning on real photos: torchvision's ImageNet MobileNetV2 file fine-tuned on the
hymenoptera (ants vs bees) set of PyTorch's transfer-learning tutorial.

The head is reported as shape-mismatched (1000 → 2 classes), the backbone is frozen for the
first epochs (only the head trains, BatchNorm statistics fixed), then everything trains with a
10x smaller learning rate on the backbone. Prints validation accuracy.

    python bench/transfer.py [--epochs 8]        # needs ../shared/data beside the checkout
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--freeze", type=int, default=2, help="epochs with the backbone frozen")
    args = ap.parse_args()
    weights = SHARED / "weights" / "mobilenet_v2-b0353104.pth"
    data = SHARED / "hymenoptera"
    if not (weights.is_file() and data.is_dir()):
        print(f"skipped: real data not found under {SHARED}")
        return

    from visbricks.cli import run_training
    from visbricks.config import load_config

    cfg = load_config(
        {
            "task": "classify",
            "name": "transfer-hymenoptera",
            "project": tempfile.mkdtemp(prefix="vb-transfer-"),
            "epochs": args.epochs,
            "batch_size": 16,
            "img_size": 224,
            "data": {
                "root": str(data),
                "format": "imagefolder",
                "cache": True,
                # torchvision's reference recipe: random-resized crops for training,
                # resize 256 + centre crop 224 for validation.
                "aug": {"scale": [0.25, 1.0], "color_jitter": 0.1, "crop_ratio": 0.875},
            },
            "model": {"backbone": "mobilenet_v2", "pretrained": str(weights), "dropout": 0.2},
            "optim": {"name": "sgd", "lr": 0.005, "momentum": 0.9, "weight_decay": 1e-4},
            "loss": {"label_smoothing": 0.1},
            "sched": {"name": "cosine", "warmup_epochs": 0.5},
            "train": {
                "freeze": {"backbone": args.freeze},
                "lr_mult": {"backbone": 0.1},
                "tensorboard": False,
            },
        }
    )
    start = time.time()
    trainer, metrics = run_training(cfg)
    best = max(r.get("val/top1", 0.0) for r in trainer.history)
    print("\nhymenoptera (train 245, val 153), mobilenet_v2 from torchvision's ImageNet file")
    print(
        f"final val top-1: {metrics['val/top1']:.4f}  best epoch: {best:.4f}  "
        f"({time.time() - start:.0f}s, {args.epochs} epochs, backbone frozen {args.freeze})"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
