"""Behaviour fingerprint of the training code: per preset, a seeded deterministic tiny run and
the SHA-256 of its trained weights and its metrics.

A refactor that should change nothing is checked by running this on the old and the new tree
(same machine, same torch) and diffing the two outputs:

    git worktree add /tmp/old-tree HEAD~N
    PYTHONPATH=/tmp/old-tree python bench/state_hashes.py > old.txt
    python bench/state_hashes.py > new.txt
    diff old.txt new.txt

Bitwise equality holds only between runs on one CPU and one torch build (kernels differ across
CPU generations), so the hashes are compared, never stored as expectations.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import torch

# The tiny sizes of the README harness (tests/readme_harness.py TINY), deterministic, 1 epoch.
COMMON = (
    "epochs=1 batch_size=4 workers=0 train.max_batches=3 train.plots=false "
    "train.tensorboard=false deterministic=true seed=3"
).split()
SHAPES = "data.synth.n_train=12 data.synth.n_val=6 data.synth.size=32".split()
BOXES = "data.synth.n_train=8 data.synth.n_val=4 data.synth.width=64 data.synth.height=64".split()
DRIVING = (
    "data.synth.sequences=2 data.synth.frames=5 data.synth.width=96 data.synth.height=64 "
    "data.synth.val_sequences=1 data.synth.workers=1"
).split()
LANES = (
    "data.synth.streets=3 data.synth.frames=2 data.synth.width=160 data.synth.height=64 "
    "data.synth.val_streets=1 data.synth.workers=1"
).split()
PRESETS = {
    "classify-shapes": ["img_size=32", *SHAPES],
    "multilabel-shapes": ["img_size=32", *SHAPES],
    "locate-shapes": ["img_size=64", *BOXES],
    "detect-shapes": ["img_size=64", *BOXES],
    "segment-shapes": ["img_size=64", *BOXES],
    "depth-driving": ["img_size={width: 96, height: 64}", *DRIVING],
    "lanes-driving": ["img_size={width: 128, height: 64}", "model.head_args={hidden: 32}", *LANES],
}


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(value.dtype).encode())
        digest.update(value.numpy().tobytes() if value.dtype != torch.bfloat16 else
                      value.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()


def fingerprint(preset: str, extra: list[str]) -> dict:
    from visbricks import Trainer, build_task, load_config

    cfg = load_config(preset, [*COMMON, *PRESETS[preset], *extra])
    task = build_task(cfg)
    data = task.build_data()
    model = task.build_model()
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = Trainer(cfg, model, data, task=task)
        metrics = trainer.fit()
    numbers = {k: round(float(v), 10) for k, v in metrics.items() if not isinstance(v, str)}
    return {
        "preset": preset,
        "weights": state_sha256(trainer.model.state_dict()),
        "metrics": hashlib.sha256(json.dumps(numbers, sort_keys=True).encode()).hexdigest()[:16],
        "loss": round(float(trainer.history[-1]["train/loss"]), 8),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("overrides", nargs="*", help="key=value added to every preset")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        Path("runs").mkdir()
        for preset in args.presets.split(","):
            print(json.dumps(fingerprint(preset, args.overrides)), flush=True)


if __name__ == "__main__":
    main()
