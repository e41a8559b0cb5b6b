"""kill -9 at random moments of a deterministic CPU training, then resume: are the final weights
bitwise-equal to an uninterrupted run, and is no temp file left? Prints k/n.

Half of the kills aim at a checkpoint write (the process is killed as soon as an atomic-write temp
file appears in ``weights/``); the others land at a uniformly random time of the run. After a kill
the run is resumed from its ``last.ckpt`` (or, killed before its first checkpoint, started again)
through the real command line until it finishes.

    python bench/kill_resume.py [--kills 20] [--epochs 4] [--seed 0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import write_colour_folder  # noqa: E402


def train_args(root: Path, project: Path, epochs: int) -> list[str]:
    return [
        "classify-shapes",
        f"data.root={root}",
        "data.synth=null",
        "data.cache=false",
        f"project={project}",
        "name=run",
        f"epochs={epochs}",
        "img_size=24",
        "batch_size=8",
        "workers=0",
        "deterministic=true",
        "train.amp=false",
        "model.channels_last=false",
        "model.backbone=mobilenet_v3_small",
        "train.plots=false",
        "train.tensorboard=false",
    ]


def cli(*args: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "visbricks.cli", "train", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"training failed ({proc.returncode}): {err.decode()[-2000:]}")


def temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".tmp" in p.name]


def model_state(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["model"]


def bitwise_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def kill_then_resume(
    root: Path, project: Path, epochs: int, rng: random.Random, duration: float, at_write: bool
) -> tuple[Path, str]:
    """One trial: start, kill -9, resume to the end; returns (run folder, how it was killed)."""
    proc = cli(*train_args(root, project, epochs))
    run = project / "classify" / "run"
    how = ""
    if at_write:
        target = rng.randint(1, epochs)  # which last.ckpt write to interrupt
        deadline = time.time() + 4 * duration
        seen: set[str] = set()
        while proc.poll() is None and time.time() < deadline:
            weights = run / "weights"
            writing = [p.name for p in weights.glob(".last.ckpt.tmp*")] if weights.is_dir() else []
            seen.update(writing)
            if writing and len(seen) >= target:  # a missed target: the next write after it
                os.kill(proc.pid, signal.SIGKILL)
                how = f"during checkpoint write {len(seen)}"
                break
            time.sleep(0.0002)
    else:
        delay = rng.uniform(0.0, duration)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            how = f"at {delay:.1f}s"
    proc.wait()
    if not how:
        how = "finished before the kill"
    ckpt = run / "weights" / "last.ckpt"
    if ckpt.is_file():
        finish(cli(*train_args(root, project, epochs), f"resume={ckpt}"))
    else:  # killed before the first checkpoint: nothing to resume, start again in a new folder
        how += " (before the first checkpoint: restarted)"
        finish(cli(*train_args(root, project, epochs)))
        run = max((project / "classify").iterdir(), key=lambda p: p.stat().st_mtime)
    return run, how


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", help="work folder to keep (default: a temporary one)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(args.keep or tempfile.mkdtemp(prefix="kill_resume_"))
    root = write_colour_folder(work / "data", n_per_class=16, size=24)

    start = time.time()
    finish(cli(*train_args(root, work / "reference", args.epochs)))
    duration = time.time() - start
    reference = model_state(work / "reference" / "classify" / "run" / "weights" / "last.ckpt")
    print(f"reference run: {duration:.1f}s")

    ok = 0
    for i in range(args.kills):
        project = work / f"trial{i:02d}"
        run, how = kill_then_resume(root, project, args.epochs, rng, duration, at_write=i % 2 == 0)
        equal = bitwise_equal(model_state(run / "weights" / "last.ckpt"), reference)
        left = temps(project)
        good = equal and not left
        ok += good
        print(
            f"kill {i + 1:2d} {how}: weights {'bitwise-equal' if equal else 'DIFFER'}"
            + (f", temp files left: {[p.name for p in left]}" if left else "")
        )
    print(f"kill -9 then resume, final weights bitwise-equal and no temp files: {ok}/{args.kills}")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
