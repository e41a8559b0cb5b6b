"""Our ``detect-shapes`` SSD against Ultralytics YOLO11n at equal wall-clock budgets.

    python bench/detect_vs_ultralytics.py [--budgets 300,600] [--install] [--data DIR]

The preset's generated shapes data is converted to YOLO format by our own ``data convert``
(the converted ``data.yaml`` must pass Ultralytics' ``check_det_dataset`` unchanged). Both
detectors start from random weights on that same converted data at the same image size (128):

- YOLO11n is built from its model YAML (``YOLO("yolo11n.yaml")``) and trained with its default
  recipe for the budget (Ultralytics' own ``time=`` argument, which fits its schedule to it);
  plots and per-epoch validation are off so the budget goes to training.
- ours: the preset's recipe (AdamW, preset lr, warm-up then cosine over the budget; the
  Trainer's ``auto`` precision and layout), on the preset's augmented batches.

Both are scored by our VOC AP code on the same val images (predictions in original-image pixels;
YOLO at its usual conf 0.001 / NMS IoU 0.7). Prints mAP@0.5 of both and ours / YOLO11n per
budget (goal: >= 1.5 at 300 s, >= 1.1 at 600 s).

Ultralytics is never a dependency of visbricks: it is imported from this interpreter if present,
else from a side virtual environment (``--venv``, default /tmp/visbricks-ultralytics) that
``--install`` creates (ultralytics installed with pip, reusing this environment's torch through a
.pth file). Without either the bench prints ``skipped`` and exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import site
import subprocess
import sys
import tempfile
import time
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


# ---- the Ultralytics side (runs in the interpreter that has ultralytics) ------------------------
def yolo_worker(args: argparse.Namespace) -> None:
    """Check the data YAML, train YOLO11n for the budget, predict the val images → JSON."""
    from ultralytics import YOLO
    from ultralytics.data.utils import check_det_dataset

    info = check_det_dataset(args.data_yaml)  # raises on anything it does not accept
    device = "0" if args.device == "cuda" else "cpu"
    model = YOLO("yolo11n.yaml")  # random init from the model YAML
    start = time.time()
    model.train(
        data=args.data_yaml,
        imgsz=args.img,
        time=args.budget / 3600,  # hours; Ultralytics fits its epochs and schedule to it
        device=device,
        project=args.project,
        name=f"yolo11n-{int(args.budget)}s",
        exist_ok=True,
        plots=False,
        val=False,
        seed=0,
        verbose=False,
    )
    trained = time.time() - start
    weights = model.trainer.last
    predictor = YOLO(weights)
    predictions = {}
    val_dir = Path(info["val"]) if isinstance(info["val"], str) else Path(info["val"][0])
    files = sorted(p for p in val_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    for r in predictor.predict(
        source=[str(f) for f in files],
        imgsz=args.img,
        conf=0.001,
        iou=0.7,
        max_det=300,
        device=device,
        verbose=False,
        stream=True,
    ):
        predictions[Path(r.path).name] = {
            "boxes": r.boxes.xyxy.cpu().tolist(),
            "scores": r.boxes.conf.cpu().tolist(),
            "labels": r.boxes.cls.cpu().int().tolist(),
        }
    out = {
        "check_det_dataset": {"nc": info["nc"], "names": list(info["names"].values())},
        "train_seconds": trained,
        "epochs": int(model.trainer.epoch) + 1,
        "predictions": predictions,
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


# ---- our side ---------------------------------------------------------------------------------
def score_yolo(cfg, predictions: dict) -> float:
    import torch

    from visbricks.tasks import build_task
    from visbricks.tasks.detect import detection_set

    task = build_task(cfg)
    dataset = detection_set(task.build_data().val, "detect")
    ordered = []
    missing = 0
    for record in dataset.records:
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
        print(f"  warning: YOLO11n made no prediction file for {missing} val images")
    return task.score(ordered, dataset).metrics[task.metric]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", default="300,600", help="training seconds per model, comma list")
    p.add_argument("--data", default="data/shapes-det/data.yaml", help="the preset's data (made)")
    p.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    p.add_argument("--install", action="store_true", help="create the side venv if needed")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="plumbing check: tiny data, 20 s budgets")
    # Internal: the Ultralytics half, run by the side interpreter.
    p.add_argument("--yolo-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data-yaml", help=argparse.SUPPRESS)
    p.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    p.add_argument("--img", type=int, help=argparse.SUPPRESS)
    p.add_argument("--project", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.yolo_worker:
        yolo_worker(args)
        return 0

    python = ultralytics_python(args.venv, args.install)
    if python is None:
        print(
            f"skipped: ultralytics is not installed here nor in {args.venv}; run with --install "
            "to create that side environment (it is never a visbricks dependency)"
        )
        return 0

    sys.path.insert(0, str(HERE))
    from detect_quality import train_ours  # the shared time-budget recipe

    from visbricks.config import load_config
    from visbricks.data.formats import convert
    from visbricks.engine.precision import select_device
    from visbricks.tasks import build_task

    work = Path(args.out or tempfile.mkdtemp(prefix="vs_ultralytics-"))
    work.mkdir(parents=True, exist_ok=True)
    budgets = [float(b) for b in args.budgets.split(",")]
    overrides = [f"data.root={args.data}", f"device={args.device}", "eval.coco=false"]
    if args.quick:
        budgets = [20.0]
        overrides[0] = f"data.root={work / 'shapes-det' / 'data.yaml'}"
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
        [f"data.root={data_yaml}", f"device={args.device}", "eval.coco=false", "data.synth=null"],
    )
    img = cfg.img_size
    device = select_device(cfg.device)
    print(f"data: {data_yaml} (converted by visbricks data convert --to yolo), {img} px")

    rows = []
    for budget in budgets:
        print(f"\nbudget {budget:.0f} s", flush=True)
        ours, steps = train_ours(cfg, budget, args.seed)
        print(f"  ours (detect-shapes SSD): {steps} steps, VOC mAP@0.5 {ours:.4f}", flush=True)
        out_json = work / f"yolo-{int(budget)}.json"
        env = {**os.environ, **QUIET_ULTRALYTICS, "YOLO_CONFIG_DIR": str(work / "ultralytics")}
        command = [
            python,
            str(Path(__file__).resolve()),
            "--yolo-worker",
            f"--data-yaml={data_yaml}",
            f"--budget={budget}",
            f"--img={img}",
            f"--project={work / 'runs'}",
            f"--device={device.type}",
            f"--out={out_json}",
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
            print("  YOLO11n side FAILED (output above)")
            return 1
        result = json.loads(out_json.read_text())
        print(
            f"  check_det_dataset accepted our data.yaml unchanged: "
            f"nc={result['check_det_dataset']['nc']}"
        )
        theirs = score_yolo(cfg, result["predictions"])
        print(
            f"  Ultralytics YOLO11n (yolo11n.yaml, default recipe): {result['epochs']} epochs in "
            f"{result['train_seconds']:.0f} s, VOC mAP@0.5 {theirs:.4f}",
            flush=True,
        )
        rows.append((budget, ours, theirs))

    goals = {300.0: 1.5, 600.0: 1.1}
    print("\nbudget   ours    YOLO11n  ours/YOLO11n")
    for budget, ours, theirs in rows:
        ratio = ours / theirs if theirs > 0 else math.inf
        goal = goals.get(budget)
        verdict = "" if goal is None else f"  ({'meets' if ratio >= goal else 'BELOW'} {goal})"
        print(f"{budget:>5.0f}s  {ours:.4f}  {theirs:.4f}   {ratio:.2f}{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
