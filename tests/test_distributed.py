"""Multi-process training under torchrun (gloo, CPU): the same weights as one process on the same
global batches, and validation metrics over all ranks' predictions gathered.

Tolerance: 2 processes average their gradients with an all-reduce (sum of two half-batch means,
halved) where one process takes one mean over the whole batch, so the float32 results differ by
summation order only: parameters agree to rtol 1e-4, atol 1e-6 after the steps below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import write_colour_folder
from visbricks.cli import main

pytestmark = pytest.mark.cost(36)  # seconds here: scheduled early (conftest.py)


def torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    out = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def train_args(root: Path, project: Path) -> list[str]:
    # vgg11 has no BatchNorm (per-rank statistics would differ from one process's on CPU, where
    # gloo has no SyncBatchNorm) and augmentation is off, so the runs can agree.
    return [
        "train",
        "classify-shapes",
        f"data.root={root}",
        "data.synth=null",
        "data.cache=false",
        f"project={project}",
        "name=run",
        "epochs=2",
        "img_size=32",
        "batch_size=8",
        "workers=0",
        "deterministic=true",
        "train.amp=false",
        "train.accumulate=2",  # no_sync on every other step
        "model.channels_last=false",
        "model.backbone=vgg11",
        "model.dropout=0.0",
        "optim.name=sgd",
        "optim.lr=0.05",
        "sched.name=cosine",
        "data.aug={scale: [1.0, 1.0], ratio: [1.0, 1.0], hflip: 0.0, vflip: 0.0, rotate: 0.0,"
        " color_jitter: 0.0, crop_ratio: 1.0}",
        "train.plots=false",
        "train.tensorboard=false",
    ]


def test_two_gloo_processes_train_and_resume_to_the_same_weights_as_one(tmp_path):
    root = write_colour_folder(tmp_path / "data", n_per_class=16, size=32)  # 32 train images
    # One process and two: one epoch, then resumed for the second (under torchrun for two).
    assert main([*train_args(root, tmp_path / "one"), "epochs=1"]) == 0
    ckpt = tmp_path / "one" / "classify" / "run" / "weights" / "last.ckpt"
    assert main(["train", "classify-shapes", f"resume={ckpt}", "epochs=2"]) == 0
    torchrun("-m", "visbricks.cli", *train_args(root, tmp_path / "two"), "epochs=1")
    ckpt = tmp_path / "two" / "classify" / "run" / "weights" / "last.ckpt"
    torchrun("-m", "visbricks.cli", "train", "classify-shapes", f"resume={ckpt}", "epochs=2")

    def weights(project: Path) -> dict[str, torch.Tensor]:
        ckpt = project / "classify" / "run" / "weights" / "last.ckpt"
        return torch.load(ckpt, map_location="cpu", weights_only=True)["model"]

    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert one.keys() == two.keys()
    moved = 0
    first = torch.load(
        tmp_path / "one" / "classify" / "run" / "weights" / "last.ckpt", weights_only=True
    )
    assert first["epoch"] == 2
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-6, msg=k)
        moved += 1
    assert moved > 0
    # Only rank 0 wrote: one run folder, one results.csv with one row per epoch.
    runs = list((tmp_path / "two" / "classify").iterdir())
    assert [r.name for r in runs] == ["run"]
    rows = (runs[0] / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 3
    # Validation over both ranks' shares (gathered) gives the one-process metrics.
    import csv

    def last_row(project: Path) -> dict[str, str]:
        with open(project / "classify" / "run" / "results.csv", newline="") as f:
            return list(csv.DictReader(f))[-1]

    r1, r2 = last_row(tmp_path / "one"), last_row(tmp_path / "two")
    for key in ("val/top1", "val/f1_macro", "val/loss"):
        assert abs(float(r1[key]) - float(r2[key])) < 1e-4, (key, r1[key], r2[key])


GATHER = textwrap.dedent(
    """
    import json, sys
    import torch
    from visbricks.engine.distributed import Distributed, Recorder
    from visbricks.metrics.classification import MultiLabelEvaluator

    d = Distributed(torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(41, 4, generator=g)
    labels = (torch.rand(41, 4, generator=g) > 0.6).float()
    recorder = Recorder(lambda: MultiLabelEvaluator(list("abcd")))
    mine = list(range(d.rank, 41, d.world_size))  # this rank's share, as the val loader has it
    for start in range(0, len(mine), 6):
        chunk = mine[start : start + 6]
        recorder.add_losses({"loss": torch.tensor(float(len(chunk)))}, len(chunk))
        recorder.update(scores[chunk], labels[chunk])
    metrics = d.gather_evaluator(recorder).compute().metrics
    if d.is_main:
        json.dump(metrics, open(sys.argv[1], "w"))
    d.close()
    """
)


def test_gathered_map_equals_the_single_process_map(tmp_path):
    from visbricks.metrics.classification import MultiLabelEvaluator

    script = tmp_path / "gather.py"
    script.write_text(GATHER)
    torchrun(str(script), str(tmp_path / "metrics.json"))
    gathered = json.loads((tmp_path / "metrics.json").read_text())

    g = torch.Generator().manual_seed(0)
    scores = torch.rand(41, 4, generator=g)
    labels = (torch.rand(41, 4, generator=g) > 0.6).float()
    single = MultiLabelEvaluator(list("abcd"))
    single.update(scores, labels)
    expected = single.compute().metrics
    assert gathered["val/mAP"] == expected["val/mAP"]
    # ... and it is not the mean of the per-rank mAPs.
    per_rank = []
    for rank in range(2):
        ev = MultiLabelEvaluator(list("abcd"))
        ev.update(scores[rank::2], labels[rank::2])
        per_rank.append(ev.compute().metrics["val/mAP"])
    assert abs(sum(per_rank) / 2 - expected["val/mAP"]) > 1e-6
