"""``optim.lr: auto`` against the preset's hand-chosen learning rate: the range test's suggestion
(``visbricks tune lr PRESET``) as a ratio to the preset's lr, then two trainings of the preset
that differ only in ``optim.lr`` (the preset's, and ``auto``), scored on the val split.

Equal epochs by default, so the comparison is of the learning rate, not of the machine's load
(``--time S`` uses a wall-clock budget instead, which then also pays for the range test).

    python bench/lr_auto.py [--preset classify-shapes] [--epochs 10 | --time 340]
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from visbricks.config import load_config


def visbricks(cwd: Path, *argv: str) -> str:
    """Run ``visbricks ARGV`` in ``cwd`` as a user would; its output (also echoed)."""
    print("$ visbricks " + " ".join(argv), flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "visbricks.cli", *argv],
        cwd=cwd, check=True, capture_output=True, text=True,
    )
    return done.stdout + done.stderr


def best_and_last(run: Path, metric: str) -> tuple[float, float]:
    with open(run / "results.csv", newline="") as f:
        values = [float(r[metric]) for r in csv.DictReader(f) if r.get(metric)]
    return max(values), values[-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="classify-shapes")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--time", type=float, default=None, help="train.time instead of epochs")
    ap.add_argument("--metric", default="val/top1")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vb-lr-auto-"))
    preset_lr = float(load_config(args.preset).optim.lr)
    if args.time:
        length = [f"train.time={args.time:g}"]
    else:
        length = [f"epochs={args.epochs}", "train.time=null"]
    task = load_config(args.preset).task

    text = visbricks(work, "tune", "lr", args.preset, "--out", str(work / "tune"))
    suggestion = float(re.search(r"optim\.lr=([0-9.eE+-]+)", text.split("use it:")[-1]).group(1))
    rows = []
    for name, lr in (("preset", f"{preset_lr:g}"), ("auto", "auto")):
        start = time.time()
        out = visbricks(
            work, "train", args.preset, *length, f"optim.lr={lr}", f"name={name}",
            "train.tensorboard=false",
        )
        seconds = time.time() - start
        chosen = re.search(r"optim\.lr=auto: ([0-9.eE+-]+)", out)
        best, last = best_and_last(work / "runs" / task / name, args.metric)
        rows.append((name, chosen.group(1) if chosen else f"{preset_lr:g}", best, last, seconds))

    print(f"\n{args.preset}: preset lr {preset_lr:g}, `tune lr` suggests {suggestion:.3g} "
          f"({suggestion / preset_lr:.2f}x the preset's)")
    print(f"{'run':<8}{'lr':>10}{'best ' + args.metric:>18}{'last':>8}{'wall s':>9}")
    for name, lr, best, last, seconds in rows:
        print(f"{name:<8}{lr:>10}{best:>18.4f}{last:>8.4f}{seconds:>9.0f}")
    gap = 100 * (rows[0][3] - rows[1][3])
    print(f"auto vs preset (last epoch): {-gap:+.1f} points; goal: suggestion within 3x, "
          "auto within 1 point")


if __name__ == "__main__":
    main()
