"""Our SSD against Ultralytics YOLO26n (and YOLO11n) at equal wall-clock budgets: on the
``detect-shapes`` preset's generated shapes (default) or on real photos (``--data raccoon``).

    python bench/detect_vs_ultralytics.py [--budgets 300,600,1800] [--models yolo26n,yolo11n]
        [--amp auto|fp32] [--only ours|yolo26n|yolo11n] [--json results.jsonl] [--install]
    python bench/detect_vs_ultralytics.py --data raccoon [--budgets 600]
        [--only ours|ours-imagenet|yolo26n] [--json results.jsonl] ...
    python bench/detect_vs_ultralytics.py --table results.jsonl     # combine, no training

What is compared (shapes). The preset's generated shapes data is converted to YOLO format by
our own ``data convert`` (the converted ``data.yaml`` must pass Ultralytics' ``check_det_dataset``
unchanged). Every detector starts from random weights on that same converted data at the same
image size (128), for each budget in turn, one after the other:

- each Ultralytics model of ``--models`` is built from its model YAML (``YOLO("yolo26n.yaml")``:
  ``cfg/models/26/yolo26.yaml`` at scale n; ``yolo11n.yaml``: ``11/yolo11.yaml``) and trained
  with its default recipe for the budget (Ultralytics' own ``time=`` argument, which fits its
  epochs and schedule to it); plots and per-epoch validation are off so the budget goes to
  training. It trains in fp32 on a CPU: its default ``amp=True`` goes through ``check_amp``,
  which returns False for a CPU device (``ultralytics/utils/checks.py``), so no autocast and no
  scaler; the worker reports what its trainer actually used. On a CPU it also sets torch's
  threads to ``min(8, cores - 1)`` (``utils/torch_utils.select_device``): the threads each side
  ran with are printed and recorded. ``--yolo-threads N`` overrides that constant (both sides then
  compute on the same cores; its loader workers still run beside them).
- ours: the demo as a user runs it, in a fresh process: ``visbricks train detect-shapes
  train.time=BUDGET`` on the converted copy (``data.root=.../yolo/data.yaml data.synth=null``),
  the preset's recipe otherwise (AdamW with no decay on norms and biases, warm-up then cosine
  laid over the budget, its augmentation and loader workers), in the Trainer's ``auto``
  precision and layout (bf16 + channels-last on a CPU with native bf16) or, with ``--amp
  fp32``, in fp32 (what a CPU without native bf16 gets) in the layout the Trainer times faster
  on this model (engine/layout.py). The budget is the Trainer's ``train.time`` clock, which also
  pays for its probes and the one validation after the last step (see raccoon below). Until
  2026-12-06 this side was a hand-written loop (``bench/detect_quality.train_ours``, still the
  torchvision comparison's) with torch's default AdamW and in-process loading; benchmark rows
  before that date were measured with it.

What is compared (raccoon): a real-photo comparison, ours from scratch vs ours from ImageNet
vs YOLO26n from scratch. The raccoon photos of ``bench/real_detect.py`` (labelImg VOC XML; its
data YAML, written by the same function: 160 train / the last 40 by file name val) at 256 px,
real_detect's size, for both sides (the ``detect`` preset's own default is 320). The train and
val splits are converted to YOLO format by our ``data convert`` as above; Ultralytics trains on
that copy, ours on the data YAML itself: the same images and boxes, as our reader reads them.
Without the photos or the weights file (``../shared/data``) the bench prints ``skipped``.

- ours: ``visbricks train detect data=raccoon.yaml train.time=BUDGET ...`` in a fresh process,
  as a user types it: the ``detect`` preset (SSD head on an FPN; the preset's backbone is
  ResNet-18 with ``pretrained: auto``) with real_detect's overrides (``real_detect.MODEL_ARGS``,
  ``DETECT_ARGS``): MobileNetV2 backbone (the ImageNet file is a MobileNetV2), FPN of 96
  channels on levels 1-3 + 2 extra, anchors 15-95 % of the side, AdamW lr 0.001 wd 1e-4,
  batch 16, warm-up 2 of the preset's 30 epochs (``train.time`` lays the schedule over the
  budget, ``epochs`` only scales the warm-up). Two variants: ``ours`` (``model.pretrained=null``,
  random init, never the preset's ``auto``) and ``ours-imagenet``
  (``model.pretrained=/work/shared/data/weights/mobilenet_v2-b0353104.pth`` with real_detect's
  ``train.lr_mult={backbone: 0.3}``, which only the pretrained backbone gets). The Trainer's
  ``train.time`` is the whole run's clock (training, its layout/batch probes, validation); like
  Ultralytics' ``val=False, plots=False`` it validates only after its last step
  (``train.val_every`` past the run) and draws no plots; ``data.cache=true``, ``eval.coco=false``,
  the Trainer's ``auto`` precision (``--amp``) and loader workers (``--workers`` sets both
  sides'). Its score is that last validation (``results.csv``): our VOC AP on the 40 val images
  in original pixels, the code the Ultralytics predictions are scored by.
- YOLO26n from ``yolo26n.yaml`` (random init: no weights are fetched offline) with its default
  recipe and ``time=``, ``imgsz=256``, exactly as on shapes (below for the scoring). No goals
  apply (the issue's ratios are for shapes); the table prints ours / YOLO26n for each variant.

How it is scored. All are scored by our VOC AP code on the same val images, predictions in
original-image pixels at conf 0.001, up to 300 per image. YOLO11n's boxes go through NMS (IoU
0.7). YOLO26n trains two heads (one-to-many and one-to-one); in ultralytics 8.4.190 ``predict``
still reads the one-to-many head through NMS unless ``nms=False`` selects the NMS-free
one-to-one head (``engine/predictor.setup_model``), whose boxes are its top 300
(anchor, class) pairs by score, with no IoU step. A model with a one-to-one head is therefore
read both ways (``nms`` and ``end2end``), both are printed and recorded, and its score is the
better of the two — the figure least favourable to us.

Output. One line per side and budget as it finishes, then a table with one row per budget (and
our precision): VOC mAP@0.5, training steps (batches: ours one AdamW step per batch of 16;
Ultralytics batch 16, its optimizer stepping every 64 images once warm), epochs (images trained /
training images) and training images/s of each side (ours: per second of the Trainer's
budget clock), and ours / the better peer (shapes goals: >= 1.5 at 300 s, >= 1.2 at
600 s, >= 1.0 at 1,800 s). ``--only`` runs a single side (each can then be run
alone on an idle machine); ``--json PATH`` appends every result as one JSON line (model, budget,
precision, mAP, steps, epochs, images/s, seconds, CPU model, torch threads, our
``$VISBRICKS_OVERRIDES``, ours' ``how``: ``visbricks train``, absent on the old loop's records,
...), and ``--table PATH`` prints the combined table of such a file, one
per data set (each record's ``data``: shapes, raccoon or a given path; records without it are
shapes), a later result of the same data, model, budget, precision, overrides and CPU replacing an
earlier one. ``--quick`` checks the plumbing: 20 s budgets (shapes: on 64/16 generated images;
raccoon: on all 200 photos).

Ultralytics is never a dependency of visbricks: it is imported from this interpreter if present,
else from a side virtual environment (``--venv``, default /tmp/visbricks-ultralytics) that
``--install`` creates (ultralytics installed with pip, reusing this environment's torch through a
.pth file). Without either the bench prints ``skipped`` and exits 0 (unless only ours run).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import site
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_VENV = Path(os.environ.get("VISBRICKS_ULTRALYTICS_VENV", "/tmp/visbricks-ultralytics"))
SIDE_PACKAGES = [
    "ultralytics",
    "ultralytics-thop",
    "ultralytics-platform",
    "polars",
    "psutil",
    "requests",
    "nvidia-ml-py",
]
QUIET_ULTRALYTICS = {
    "YOLO_OFFLINE": "true",  # no hub, no asset downloads
    "YOLO_AUTOINSTALL": "false",  # never pip-install behind our back
    "YOLO_VERBOSE": "false",
}
OURS = "ours"
OURS_IMAGENET = "ours-imagenet"  # raccoon only: the backbone from the ImageNet MobileNetV2 file
OUR_SIDES = (OURS, OURS_IMAGENET)
# Per data set: default budgets and Ultralytics models, and our sides.
MODES = {
    "shapes": {"budgets": "300,600", "models": "yolo26n,yolo11n", "ours": (OURS,)},
    "raccoon": {"budgets": "600", "models": "yolo26n", "ours": OUR_SIDES},
}
GOALS = {300.0: 1.5, 600.0: 1.2, 1800.0: 1.0}  # shapes: ours / the better peer (issue 23)
# Ours validates only after its last epoch (Ultralytics: val=False) and draws no plots.
VAL_ONLY_AT_END = 1_000_000
CONF, NMS_IOU, MAX_DET = 0.001, 0.7, 300  # YOLO's usual evaluation settings


# ---- the Ultralytics side (runs in the interpreter that has ultralytics) ------------------------
def yolo_worker(args: argparse.Namespace) -> None:
    """Check the data YAML, train ``args.model`` from its YAML for the budget, predict the val
    images (both ways for a model with a one-to-one head) → JSON."""
    import torch
    import ultralytics
    from ultralytics import YOLO
    from ultralytics.data.utils import check_det_dataset

    info = check_det_dataset(args.data_yaml)  # raises on anything it does not accept
    if args.yolo_threads:
        import ultralytics.utils.torch_utils as torch_utils

        # select_device sets torch's threads from this module constant (min(8, cores - 1)).
        torch_utils.NUM_THREADS = args.yolo_threads
    device = "0" if args.device == "cuda" else "cpu"
    model = YOLO(f"{args.model}.yaml")  # random init from the model YAML
    count = {"batches": 0, "images": 0, "epoch_batches": 0, "start": 0.0, "end": 0.0}

    def on_train_start(trainer) -> None:
        count["start"] = trainer.train_time_start

    def on_train_epoch_start(trainer) -> None:
        count["epoch_batches"] = 0

    def on_train_batch_start(trainer) -> None:  # the time check breaks before batch_end
        count["epoch_batches"] += 1

    def on_train_epoch_end(trainer) -> None:  # only an epoch's last batch can be short
        n = count["epoch_batches"]
        count["batches"] += n
        count["images"] += min(n * trainer.batch_size, len(trainer.train_loader.dataset))
        count["end"] = time.time()

    for event, hook in [
        ("on_train_start", on_train_start),
        ("on_train_epoch_start", on_train_epoch_start),
        ("on_train_batch_start", on_train_batch_start),
        ("on_train_epoch_end", on_train_epoch_end),
    ]:
        model.add_callback(event, hook)
    start = time.time()
    model.train(
        data=args.data_yaml,
        imgsz=args.img,
        time=args.budget / 3600,  # hours; Ultralytics fits its epochs and schedule to it
        device=device,
        project=args.project,
        name=f"{args.model}-{int(args.budget)}s",
        exist_ok=True,
        plots=False,
        val=False,
        seed=args.seed,
        verbose=False,
        **({} if args.workers is None else {"workers": args.workers}),
    )
    wall = time.time() - start
    trainer = model.trainer
    threads = torch.get_num_threads()  # as its select_device left it for training
    amp = trainer.amp and ("bf16" if trainer.args.amp == "bf16" else "fp16")
    head = trainer.model.model[-1] if hasattr(trainer.model, "model") else None
    # nms=None: the checkpoint's own mode (the one-to-many head + NMS, as its validator reads
    # it); nms=False: the NMS-free one-to-one head, where the model has one.
    ways = {"nms": None}
    if getattr(head, "one2one_cv2", None) is not None:
        ways["end2end"] = False
    val_dir = Path(info["val"]) if isinstance(info["val"], str) else Path(info["val"][0])
    files = sorted(p for p in val_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    readings = {}
    for way, nms in ways.items():
        predictor = YOLO(trainer.last)
        predictions = {}
        for r in predictor.predict(
            source=[str(f) for f in files],
            imgsz=args.img,
            conf=CONF,
            iou=NMS_IOU,
            max_det=MAX_DET,
            nms=nms,
            device=device,
            verbose=False,
            stream=True,
        ):
            predictions[Path(r.path).name] = {
                "boxes": r.boxes.xyxy.cpu().tolist(),
                "scores": r.boxes.conf.cpu().tolist(),
                "labels": r.boxes.cls.cpu().int().tolist(),
            }
        used = bool(predictor.predictor.model.end2end)  # the head the predictor really read
        if used != (way == "end2end"):
            raise RuntimeError(f"{args.model}: predict(nms={nms}) read end2end={used}")
        readings[way] = predictions
    out = {
        "check_det_dataset": {"nc": info["nc"], "names": list(info["names"].values())},
        "ultralytics": ultralytics.__version__,
        "precision": amp or "fp32",
        "torch_threads": threads,
        "batch_size": trainer.batch_size,
        "train_images": len(trainer.train_loader.dataset),
        "epochs_done": int(trainer.epoch) + 1,
        "steps": count["batches"],
        "images": count["images"],
        "train_seconds": count["end"] - count["start"],
        "wall_seconds": wall,
        "readings": readings,
    }
    Path(args.out).write_text(json.dumps(out))


# ---- finding or making the side environment ----------------------------------------------------
def ultralytics_python(venv: Path, install: bool) -> str | None:
    try:
        import ultralytics  # noqa: F401

        return sys.executable
    except ImportError:
        pass
    python = venv / "bin" / "python"
    if python.is_file() and _has_ultralytics(python):
        return str(python)
    if not install:
        return None
    print(f"creating the side environment {venv} (ultralytics; torch reused from this one)")
    # From inside a venv, ``-m venv`` builds on the same base interpreter (same Python version).
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
    # addsitedir (not a bare path) so the .pth files there — our editable install — work too.
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in ours)
    Path(purelib, "_visbricks_env.pth").write_text(lines)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--no-deps", *SIDE_PACKAGES[:3]], check=True)
    subprocess.run([*pip, *SIDE_PACKAGES[3:]], check=True)
    return str(python) if _has_ultralytics(python) else None


def _has_ultralytics(python: Path) -> bool:
    probe = subprocess.run([str(python), "-c", "import ultralytics"], capture_output=True)
    return probe.returncode == 0


# ---- our side and the shared scoring ------------------------------------------------------------
class Bench:
    """The converted data and everything both sides are measured with."""

    def __init__(
        self, cfg, args: argparse.Namespace, python: str | None, work: Path, data_name: str
    ) -> None:
        import torch

        from visbricks.engine.precision import select_device
        from visbricks.tasks import build_task
        from visbricks.tasks.detect import detection_set

        self.cfg, self.args, self.python, self.work = cfg, args, python, work
        self.device = select_device(cfg.device)
        self.task = build_task(cfg)
        data = self.task.build_data()
        self.train_images = len(data.train)
        self.val_set = detection_set(data.val, "detect")
        self.common = {
            "data": data_name,  # shapes, raccoon or the given path
            "cpu": cpu_name(),
            "device": self.device.type
            if self.device.type != "cuda"
            else torch.cuda.get_device_name(self.device),
            "img": cfg.img_size,
            "seed": args.seed,
            "quick": args.quick,
        }

    def record(self, model: str, budget: float, images: int, train_images: int, **fields) -> dict:
        """One result: ``fields`` plus epochs and images/s from the images trained."""
        return {
            "model": model,
            "budget": budget,
            **fields,
            "epochs": images / train_images,
            "img_per_s": images / fields["train_s"] if fields["train_s"] > 0 else 0.0,
            **self.common,
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def run_ours(self, side: str, budget: float, data_yaml: Path) -> dict | None:
        """Ours as a user types it, in a fresh process: on shapes ``visbricks train
        detect-shapes train.time=BUDGET`` on the converted copy (``data.root=DATA_YAML``, the
        generator off); on raccoon ``visbricks train detect data=DATA_YAML train.time=BUDGET``
        with real_detect's model and recipe, from scratch (``ours``) or from the ImageNet file
        (``ours-imagenet``). Scored by its validation after the last step."""
        import torch
        from real_detect import DETECT_ARGS, MODEL_ARGS, WEIGHTS, pretrained_args, visbricks

        args = self.args
        weights = WEIGHTS if side == OURS_IMAGENET else None
        if self.common["data"] == "raccoon":
            recipe = ["detect", f"data={data_yaml}", *MODEL_ARGS, *DETECT_ARGS]
            recipe += pretrained_args(weights)
        else:
            recipe = ["detect-shapes", f"data.root={data_yaml}", "data.synth=null"]
        start = time.time()
        done = visbricks(
            "train",
            *recipe,
            f"train.time={budget:g}",
            f"train.amp={args.amp}",
            f"train.val_every={VAL_ONLY_AT_END}",
            "train.plots=false",
            "data.cache=true",
            "eval.coco=false",
            f"device={args.device}",
            f"seed={args.seed}",
            *([] if args.workers is None else [f"workers={args.workers}"]),
            f"project={self.work / 'runs'}",
            f"name={side}-{budget:g}s",
            capture=True,
        )
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
            print(f"  {side} FAILED (output above)")
            return None
        lines = done.stdout.splitlines()
        run_dir = Path(next(x for x in lines if x.startswith("run folder: ")).split(": ", 1)[1])
        print("".join(f"  {x}\n" for x in lines if x.startswith("train.time")), end="")
        with (run_dir / "results.csv").open(newline="") as f:
            last = list(csv.DictReader(f))[-1]  # the last epoch, validated under train.time
        steps = int(float(last["steps"]))
        return self.record(
            side,
            budget,
            map50=float(last[self.task.metric]),
            amp=last["amp"],
            amp_requested=args.amp,
            pretrained=str(weights) if weights else None,
            steps=steps,
            images=steps * self.cfg.batch_size,
            train_images=self.train_images,
            train_s=float(last["elapsed"]),  # the Trainer's budget clock
            wall_s=time.time() - start,
            batch_size=self.cfg.batch_size,
            torch_threads=torch.get_num_threads(),  # the same environment as the child's
            run_dir=str(run_dir),
            # Shapes records from before 2026-12-06 have no "how": a hand-written loop trained them.
            how="visbricks train",
            overrides=os.environ.get("VISBRICKS_OVERRIDES", ""),  # the child inherits them
        )

    def run_yolo(self, model: str, budget: float, data_yaml: Path) -> dict | None:
        out_json = self.work / f"{model}-{int(budget)}.json"
        env = {**os.environ, **QUIET_ULTRALYTICS, "YOLO_CONFIG_DIR": str(self.work / "ultralytics")}
        command = [
            self.python,
            str(Path(__file__).resolve()),
            "--yolo-worker",
            f"--model={model}",
            f"--data-yaml={data_yaml}",
            f"--budget={budget}",
            f"--img={self.cfg.img_size}",
            f"--project={self.work / 'runs'}",
            f"--device={self.device.type}",
            f"--seed={self.args.seed}",
            f"--out={out_json}",
            f"--yolo-threads={self.args.yolo_threads or 0}",
            *([] if self.args.workers is None else [f"--workers={self.args.workers}"]),
        ]
        start = time.time()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
            print(f"  {model} side FAILED (output above)")
            return None
        result = json.loads(out_json.read_text())
        print(
            f"  check_det_dataset accepted our data.yaml unchanged: "
            f"nc={result['check_det_dataset']['nc']}"
        )
        readings = {}
        for way, predictions in result["readings"].items():
            boxes = sum(len(p["scores"]) for p in predictions.values())
            readings[way] = self.score(model, predictions)
            print(
                f"  {model} read via {way}: {boxes / max(len(predictions), 1):.0f} boxes/image, "
                f"VOC mAP@0.5 {readings[way]:.4f}"
            )
        best = max(readings, key=readings.get)
        return self.record(
            model,
            budget,
            map50=readings[best],
            read_via=best,
            readings=readings,
            amp=result["precision"],
            steps=result["steps"],
            images=result["images"],
            train_images=result["train_images"],
            epochs_done=result["epochs_done"],
            train_s=result["train_seconds"],
            wall_s=time.time() - start,
            batch_size=result["batch_size"],
            torch_threads=result["torch_threads"],
            ultralytics=result["ultralytics"],
        )

    def score(self, model: str, predictions: dict) -> float:
        """VOC mAP@0.5 of original-pixel predictions keyed by val image file name."""
        import torch

        ordered = []
        missing = 0
        for record in self.val_set.records:
            p = predictions.get(Path(record.file).name)
            if p is None:
                missing += 1
                p = {"boxes": [], "scores": [], "labels": []}
            ordered.append(
                {
                    "boxes": torch.tensor(p["boxes"], dtype=torch.float32).reshape(-1, 4),
                    "scores": torch.tensor(p["scores"], dtype=torch.float32),
                    "labels": torch.tensor(p["labels"], dtype=torch.int64),
                }
            )
        if missing:
            print(f"  warning: {model} made no prediction for {missing} val images")
        return self.task.score(ordered, self.val_set).metrics[self.task.metric]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(r: dict) -> str:
    how = f", read via {r['read_via']}" if "read_via" in r else ""
    how += f", with {r['overrides']}" if r.get("overrides") else ""
    return (
        f"  {r['model']}: {r['amp']}, {r['torch_threads']} threads, {r['steps']} steps "
        f"({r['epochs']:.1f} epochs, {r['img_per_s']:.0f} img/s), {r['wall_s']:.0f} s wall{how}: "
        f"VOC mAP@0.5 {r['map50']:.4f}"
    )


# ---- the combined table -------------------------------------------------------------------------
def data_of(r: dict) -> str:
    return r.get("data", "shapes")  # records from before --data raccoon were all shapes


def variant(r: dict) -> str:
    """Our precision, plus the overrides a run was given (``bf16 loss.assigner=atss``)."""
    return f"{r['amp']} {r['overrides']}" if r.get("overrides") else r["amp"]


def print_table(records: list[dict]) -> None:
    """Per data set, one row per CPU, budget and our precision: every side's mAP, steps, epochs
    and img/s, and each of ours / the better peer. A later record of the same data, model,
    budget, precision, overrides and CPU replaces an earlier one."""
    latest: dict[tuple, dict] = {}
    for r in records:
        latest[(data_of(r), r["cpu"], r["budget"], r["model"], variant(r))] = r
    if len(latest) < len(records):
        print(f"\n({len(records) - len(latest)} earlier results replaced by later ones)")
    for data in dict.fromkeys(data_of(r) for r in latest.values()):
        print_data_table(data, [r for r in latest.values() if data_of(r) == data])


def print_data_table(data: str, records: list[dict]) -> None:
    ours_sides = [s for s in OUR_SIDES if any(r["model"] == s for r in records)] or [OURS]
    peers = list(dict.fromkeys(r["model"] for r in records if r["model"] not in OUR_SIDES))
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in records:
        groups.setdefault((r["cpu"], r["budget"]), {}).setdefault(r["model"], []).append(r)

    def cell(r: dict | None) -> str:
        if r is None:
            return f"{'-':>7} {'':>6} {'':>6} {'':>6}"
        return f"{r['map50']:7.4f} {r['steps']:6d} {r['epochs']:6.1f} {r['img_per_s']:6.0f}"

    def ratio(ours: dict | None, peer: dict, goal: float | None) -> str:
        if ours is None:
            return "-"
        if peer["map50"] > 0:
            value = ours["map50"] / peer["map50"]
        else:
            value = math.inf if ours["map50"] > 0 else math.nan
        if goal is None or math.isnan(value):
            return f"{value:.2f}"
        return f"{value:.2f} ({'meets' if value >= goal else 'BELOW'} {goal})"

    sides = [*ours_sides, *peers]
    # The precision column is as wide as its longest entry ("fp32 loss.assigner=atss").
    w = max([5, *(len(variant(r)) for r in records if r["model"] in OUR_SIDES)])
    head = (
        f"{'budget':>7} {'ours':>{w}}  "
        + "  ".join(f"{s:<28}" for s in sides)
        + "  "
        + ", ".join(f"{s}/best" for s in ours_sides)
    )
    sub = f"{'':>7} {'amp':>{w}}  " + "  ".join(
        f"{'mAP50':>7} {'steps':>6} {'epochs':>6} {'img/s':>6}" for _ in sides
    )
    cpu = None
    for (group_cpu, budget), by_model in sorted(groups.items()):
        if group_cpu != cpu:
            cpu = group_cpu
            print(f"\n{data}: {cpu}\n{head}\n{sub}")
        # a peer trains the same whatever our precision: its latest record of this budget
        peer_of = {m: max(by_model[m], key=lambda r: r["when"]) for m in peers if m in by_model}
        variants = sorted({variant(r) for s in ours_sides for r in by_model.get(s, [])})
        for v in variants or ["-"]:
            ours = {
                s: next((r for r in by_model.get(s, []) if variant(r) == v), None)
                for s in ours_sides
            }
            cells = [*(cell(ours[s]) for s in ours_sides), *(cell(peer_of.get(m)) for m in peers)]
            line = f"{budget:>6.0f}s {v:>{w}}  " + "  ".join(cells)
            if any(ours.values()) and peer_of:
                peer = max(peer_of.values(), key=lambda r: r["map50"])
                goal = GOALS.get(budget) if data == "shapes" else None  # the shapes goals
                line += "  " + ", ".join(ratio(ours[s], peer, goal) for s in ours_sides)
                line += f" vs {peer['model']}"
            print(line)
    for model in sides:
        rs = [r for r in records if r["model"] == model]
        if rs:
            amps = ", ".join(sorted({r["amp"] for r in rs}))
            threads = ", ".join(str(t) for t in sorted({r["torch_threads"] for r in rs}))
            batch = ", ".join(str(b) for b in sorted({r["batch_size"] for r in rs}))
            ways = sorted({r.get("read_via", "") for r in rs} - {""})
            how = f"; scored via {', '.join(ways)}" if ways else ""
            extra = sorted({r.get("overrides", "") for r in rs} - {""})
            how += f"; $VISBRICKS_OVERRIDES {' | '.join(extra)}" if extra else ""
            print(f"  {model}: precision {amps}; torch threads {threads}; batch {batch}{how}")


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        default="shapes",
        help="shapes (default: the detect-shapes preset's generated data), raccoon (the real "
        "photos of bench/real_detect.py through the detect preset), or a detection dataset "
        "for the shapes preset",
    )
    p.add_argument(
        "--budgets", help="training seconds per model, comma list (shapes 300,600; raccoon 600)"
    )
    p.add_argument(
        "--models", help="Ultralytics model YAML stems (shapes yolo26n,yolo11n; raccoon yolo26n)"
    )
    p.add_argument(
        "--only", help="run one side: ours, ours-imagenet (raccoon) or an Ultralytics model name"
    )
    p.add_argument("--amp", choices=["auto", "fp32"], default="auto", help="our train.amp")
    p.add_argument("--json", type=Path, help="append each result to this JSONL file")
    p.add_argument("--table", type=Path, help="print the combined table of a JSONL file; no run")
    p.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    p.add_argument("--install", action="store_true", help="create the side venv if needed")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--yolo-threads",
        type=int,
        default=None,
        help="torch threads for Ultralytics' training (default: its own, min(8, cores - 1))",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="loader worker processes of Ultralytics and of ours (default: each side's own)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="plumbing check: 20 s budgets (shapes: 64/16 generated images)",
    )
    # Internal: the Ultralytics half, run by the side interpreter.
    p.add_argument("--yolo-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--data-yaml", help=argparse.SUPPRESS)
    p.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    p.add_argument("--img", type=int, help=argparse.SUPPRESS)
    p.add_argument("--project", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.yolo_worker:
        yolo_worker(args)
        return 0
    if args.table:
        print_table(read_records(args.table))
        return 0

    mode = MODES["raccoon" if args.data == "raccoon" else "shapes"]
    our_sides = mode["ours"]
    if args.only in OUR_SIDES and args.only not in our_sides:
        p.error(f"--only {args.only} runs with --data raccoon (the ImageNet file is a MobileNetV2)")
    models = args.models or mode["models"]
    sides = [args.only] if args.only else [*our_sides, *filter(None, models.split(","))]
    sys.path.insert(0, str(HERE))
    if args.data == "raccoon":
        from real_detect import RACCOON, WEIGHTS

        missing = [str(x) for x in (RACCOON / "annotations", WEIGHTS) if not x.exists()]
        if missing:
            print(f"skipped: real data not available ({', '.join(missing)})")
            return 0
    python = None
    if any(side not in OUR_SIDES for side in sides):
        python = ultralytics_python(args.venv, args.install)
        if python is None:
            print(
                f"skipped: ultralytics is not installed here nor in {args.venv}; run with "
                "--install to create that side environment (it is never a visbricks dependency)"
            )
            return 0

    work = Path(args.out or tempfile.mkdtemp(prefix="vs_ultralytics-"))
    work.mkdir(parents=True, exist_ok=True)
    budgets = (
        [20.0] if args.quick else [float(b) for b in (args.budgets or mode["budgets"]).split(",")]
    )
    if args.data == "raccoon":
        cfg, data_yaml, ours_yaml = raccoon_data(args, work)
        about = f"ours: {ours_yaml} (160 train / last 40 val photos); Ultralytics: {data_yaml}"
    else:
        cfg, data_yaml = shapes_data(args, work)
        ours_yaml = data_yaml
        about = str(data_yaml)
    bench = Bench(cfg, args, python, work, args.data)
    print(
        f"data: {about} (converted by visbricks data convert --to yolo), {cfg.img_size} px; "
        f"{bench.common['cpu']}; sides: {', '.join(sides)}"
    )

    records = []
    for budget in budgets:
        print(f"\nbudget {budget:.0f} s", flush=True)
        for side in sides:
            if side not in OUR_SIDES:
                r = bench.run_yolo(side, budget, data_yaml)
            else:
                r = bench.run_ours(side, budget, ours_yaml)
            if r is None:
                return 1
            print(describe(r), flush=True)
            records.append(r)
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps(r) + "\n")
    print_table(records)
    return 0


def shapes_data(args: argparse.Namespace, work: Path):
    """(our config, the converted data.yaml): the detect-shapes preset's data (or ``--data``),
    converted to YOLO format; both sides train on the converted copy."""
    from visbricks.config import load_config
    from visbricks.data.formats import convert
    from visbricks.tasks import build_task

    overrides = [f"device={args.device}", "eval.coco=false"]
    if args.data != "shapes":
        overrides.append(f"data.root={args.data}")  # a given dataset replaces the generator
    else:
        # The preset's generator, writing into the work folder: a data.synth key given with
        # data.root keeps the generator (config.py), the preset's own seed restated.
        overrides += [f"data.root={work / 'shapes-det' / 'data.yaml'}", "data.synth.seed=0"]
    if args.quick:
        overrides += ["data.synth.n_train=64", "data.synth.n_val=16"]
    source_cfg = load_config("detect-shapes", overrides)
    build_task(source_cfg).prepare_data()  # the preset's generated data, made on first use
    yolo_dir = work / "yolo"
    data_yaml = (
        yolo_dir / "data.yaml"
        if (yolo_dir / "data.yaml").is_file()
        else convert(source_cfg.data.root, yolo_dir, to="yolo")
    )
    cfg = load_config(
        "detect-shapes",
        [
            f"data.root={data_yaml}",
            f"device={args.device}",
            "eval.coco=false",
            "data.synth=null",
            f"train.amp={args.amp}",
        ],
    )
    return cfg, data_yaml


def raccoon_data(args: argparse.Namespace, work: Path):
    """(the config ours is scored with, the converted data.yaml, raccoon.yaml): real_detect's
    data YAML (ours trains on it) and its YOLO conversion (Ultralytics trains on that)."""
    from real_detect import DETECT_ARGS, MODEL_ARGS, pretrained_args, write_raccoon_yaml

    from visbricks.config import load_config
    from visbricks.data.formats import convert

    ours_yaml = write_raccoon_yaml(work / "raccoon.yaml")
    yolo_dir = work / "yolo-raccoon"
    data_yaml = (
        yolo_dir / "data.yaml"
        if (yolo_dir / "data.yaml").is_file()
        else convert(ours_yaml, yolo_dir, to="yolo")
    )
    cfg = load_config(
        "detect",
        [
            f"data.root={ours_yaml}",
            *MODEL_ARGS,
            *DETECT_ARGS,
            *pretrained_args(None),
            f"device={args.device}",
            "eval.coco=false",
            f"train.amp={args.amp}",
        ],
    )
    return cfg, data_yaml, ours_yaml


if __name__ == "__main__":
    sys.exit(main())
