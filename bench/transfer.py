"""Transfer learning on real photos: torchvision's ImageNet MobileNetV2 file fine-tuned on the
hymenoptera (ants vs bees) set of PyTorch's transfer-learning tutorial, through the own-data
preset a user types: ``visbricks train classify data=hymenoptera/ ...``.

The head is reported as shape-mismatched (1000 → 2 classes), the backbone is frozen for the
first epochs (only the head trains, BatchNorm statistics fixed), then everything trains with a
10x smaller learning rate on the backbone. Prints validation accuracy.

    python bench/transfer.py [--epochs 8]        # needs ../shared/data beside the checkout
"""

from __future__ import annotations

import argparse
import csv
import subprocess
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

    project = Path(tempfile.mkdtemp(prefix="vb-transfer-"))
    overrides = [
        f"data={data}",  # an ImageFolder (train/ and val/ of class folders), detected as such
        "data.cache=true",
        # torchvision's reference recipe: random-resized crops for training,
        # resize 256 + centre crop 224 for validation.
        "data.aug={scale: [0.25, 1.0], color_jitter: 0.1, crop_ratio: 0.875}",
        f"project={project}",
        "name=transfer-hymenoptera",
        f"epochs={args.epochs}",
        "batch_size=16",
        "model.backbone=mobilenet_v2",
        f"model.pretrained={weights}",
        "model.dropout=0.2",
        "optim={name: sgd, lr: 0.005, momentum: 0.9, weight_decay: 0.0001}",
        "loss.label_smoothing=0.1",
        "sched.warmup_epochs=0.5",
        f"train.freeze={{backbone: {args.freeze}}}",
        "train.lr_mult={backbone: 0.1}",
        "train.tensorboard=false",
    ]
    print("$ visbricks train classify " + " ".join(overrides), flush=True)
    start = time.time()
    subprocess.run(
        [sys.executable, "-m", "visbricks.cli", "train", "classify", *overrides], check=True
    )
    seconds = time.time() - start
    with open(project / "classify" / "transfer-hymenoptera" / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/top1")]
    best = max(float(r["val/top1"]) for r in rows)
    print("\nhymenoptera (train 245, val 153), mobilenet_v2 from torchvision's ImageNet file")
    print(
        f"final val top-1: {float(rows[-1]['val/top1']):.4f}  best epoch: {best:.4f}  "
        f"({seconds:.0f}s, {args.epochs} epochs, backbone frozen {args.freeze})"
    )


if __name__ == "__main__":
    main()
