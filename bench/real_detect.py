"""Real data, as a new user would: the raccoon photos (VOC XML written by labelImg) through a
data YAML and the own-data presets of the ``visbricks`` command line
(``visbricks train locate|detect data=raccoon.yaml ...``) with an ImageNet-initialised
MobileNetV2 backbone.

    python bench/real_detect.py [--epochs-locate N] [--epochs-detect N] [--out DIR]

Prints the locate task's mean IoU and class accuracy and the detector's VOC mAP@0.5 (goal:
>= 0.70) on the last 40 images. Skips (exit 0) when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RACCOON = SHARED / "raccoon"
WEIGHTS = SHARED / "weights" / "mobilenet_v2-b0353104.pth"
GOAL_MAP50 = 0.70


# The data YAML a user writes for a folder of labelImg files without split lists: the last 40
# images (by file name) are val, the other 160 train.
RACCOON_YAML = {
    "format": "voc",
    "root": str(RACCOON),
    "annotations": "annotations",
    "images": "images",
    "classes": ["raccoon"],
    "split": {"val_last": 40},
}
# The model and recipe overrides of both own-data presets here (locate and detect): MobileNetV2,
# AdamW; `pretrained_args` adds the backbone's initialisation.
MODEL_ARGS = [
    "batch_size=16",
    "model.backbone=mobilenet_v2",
    "optim.name=adamw",
    "optim.weight_decay=0.0001",
]
# On top for `visbricks train detect`: 256 px, a light FPN, anchors for objects that fill the photo.
DETECT_ARGS = [
    "img_size=256",
    "model.neck_args={out_channels: 96, levels: [1, 2, 3], extra_levels: 2}",
    # Raccoons fill much of the photo: anchors from 15 % to 95 % of the side.
    "model.anchors={smin: 0.15, smax: 0.95}",
    "optim.lr=0.001",
    "sched.warmup_epochs=2.0",
]


def pretrained_args(weights: Path | None) -> list[str]:
    """The backbone's initialisation: the ImageNet file with a smaller backbone learning rate,
    or random (``null``: never the preset's ``auto``, which takes a cached torchvision file)."""
    if weights is None:
        return ["model.pretrained=null"]
    # Pretrained features need smaller steps than the freshly initialised head.
    return [f"model.pretrained={weights}", "train.lr_mult={backbone: 0.3}"]


def visbricks(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    """One ``visbricks`` command in a fresh process, exactly as typed in a shell; ``capture``
    keeps its output (text) and leaves a failure to the caller."""
    cmd = [sys.executable, "-m", "visbricks.cli", *args]
    print("$ visbricks " + " ".join(args), flush=True)
    return subprocess.run(cmd, check=not capture, capture_output=capture, text=capture)


def write_yaml(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_raccoon_yaml(path: Path) -> Path:
    return write_yaml(path, RACCOON_YAML)


def train_and_eval(train_args: list[str], run_dir: Path) -> dict:
    visbricks("train", *train_args)
    out = run_dir / "eval"
    visbricks("eval", str(run_dir), "--out", str(out))
    return json.loads((out / "metrics.json").read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs-locate", type=int, default=20)
    p.add_argument("--epochs-detect", type=int, default=30)
    p.add_argument("--out", type=Path, default=Path("runs/bench-raccoon"))
    args = p.parse_args()
    missing = [str(x) for x in (RACCOON / "annotations", WEIGHTS) if not x.exists()]
    if missing:
        print(f"skipped: real data not available ({', '.join(missing)})")
        return 0

    out = args.out.resolve()
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} is not empty; give another --out (runs are never overwritten)")
    data = write_raccoon_yaml(out / "raccoon.yaml")
    visbricks("data", "check", str(data))
    # The own-data presets (`visbricks train locate|detect data=...`) with the overrides a user
    # would type: the ImageNet MobileNetV2 file, and anchors for objects that fill the photo.
    common = [
        f"data={data}",
        "data.cache=true",
        f"project={out}",
        "workers=0",
        *MODEL_ARGS,
        *pretrained_args(WEIGHTS),
        "train.val_every=5",
    ]
    locate = [
        "locate",
        *common,
        "name=locate",
        f"epochs={args.epochs_locate}",
        "img_size=224",
        "model.dropout=0.2",
        "optim.lr=0.001",
        "sched.warmup_epochs=1.0",
    ]
    detect = [
        "detect",
        *common,
        "name=detect",
        f"epochs={args.epochs_detect}",
        *DETECT_ARGS,
    ]

    start = time.time()
    loc = train_and_eval(locate, out / "locate" / "locate")
    loc_time = time.time() - start
    start = time.time()
    det = train_and_eval(detect, out / "detect" / "detect")
    det_time = time.time() - start

    print("\n=== raccoon (160 train / 40 val images, ImageNet MobileNetV2) ===")
    print(
        f"locate: mean IoU {loc['val/iou']:.3f}, class accuracy {loc['val/acc']:.3f}, "
        f"right class and IoU>=0.5 {loc['val/acc_iou50']:.3f}  ({loc_time:.0f}s)"
    )
    verdict = "meets" if det["val/mAP50"] >= GOAL_MAP50 else "BELOW"
    print(
        f"detect: VOC mAP@0.5 {det['val/mAP50']:.3f} (11-point {det['val/mAP50_07']:.3f}), "
        f"COCO AP {det['val/AP']:.3f}  ({det_time:.0f}s) — {verdict} the {GOAL_MAP50} goal"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
