"""Issue 22: a depth model trained by visbricks orders a real street scene correctly.

The self-supervised Monodepth2 ``depth`` task trains from scratch (no downloaded or committed
weights) on small synthetic streets (``write_driving``, generated in ``tmp_path``); ``predict``
of the trained run (``load_run``) on the real forward-driving pair in ``../shared/data/depth-pair``
must give the road at the bottom a nearer depth than the far scene at the image centre. The
untrained model has no such ordering. Skipped when ``../shared/data`` is absent.

Recipe (128x64, the smallest size the depth net takes; the pair's intrinsics are the synthetic
streets' normalised KITTI K): 6 synthetic sequences x 48 frames (5 train, 230 targets, 1 val),
``data.frame_ids=[0, -1]``, mobilenet_v3_small depth encoder with a narrow decoder
(channels 8..128), one loss scale, fixed_scale, no automask, Adam lr 1e-3 constant, batch 2,
6 epochs = 690 optimizer steps, and two settings without which it does not learn in time:

* ``model.min_depth=0.001, max_depth=1`` (same 1000x range, scale-free for a monocular loss):
  with 0.1..100 m the net starts at 3.16 units of depth and the pose net, whose outputs are
  scaled by 0.01, must grow its translation ~15x further; in 200 steps it did not (flat map,
  val abs_rel = the constant baseline);
* ``train.lr_mult`` 0.1 for the pose encoder and decoder: at the full lr the pose net
  overshoots (forward translation ~0.3 where ~0.002 is right, loss above the no-motion loss)
  and the depth map collapses to a constant (ratio 1.000) for some seeds.

Measured, one CPU thread (ratio = median depth of the bottom band / of the centre box; the
untrained model gives ~1.00), target / source frame: seed 0: 0.461 / 0.477, seed 1:
0.230 / 0.113, seed 2: 0.334 / 0.344, seed 3: 0.278 / 0.388, seed 4: 0.515 / 0.734; ~40 s
of training, ~3 s of data generation, the whole test ~44 s. 5 epochs (575 steps, ~33 s) is not
enough: 0.685, 0.485, 0.594, 0.664, 0.733 on the target for seeds 0-4.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import shared_data

pytestmark = pytest.mark.cost(59)  # seconds here: scheduled early (conftest.py)

SEED = 2


def bottom_over_centre(depth: np.ndarray) -> float:
    """Median depth of the road (rows 85-100 %, central half of the width) over that of the far
    scene (rows 40-55 %, columns 40-60 %)."""
    h, w = depth.shape
    bottom = np.median(depth[int(0.85 * h) :, int(0.25 * w) : int(0.75 * w)])
    centre = np.median(depth[int(0.40 * h) : int(0.55 * h), int(0.40 * w) : int(0.60 * w)])
    return float(bottom / centre)


def predicted_depth(task, model, image: np.ndarray) -> np.ndarray:
    x, meta = task.preprocess(image)
    model.eval()
    with torch.no_grad():
        return task.postprocess(model(x[None]), [meta])[0]["_depth"]


@pytest.mark.slow
def test_trained_on_synthetic_streets_the_real_road_is_nearer_than_the_centre(tmp_path):
    pair = shared_data("depth-pair")
    from visbricks.cli import run_training
    from visbricks.config import load_config
    from visbricks.data.io import read_image
    from visbricks.data.synth.driving import write_driving
    from visbricks.deploy.loading import load_run
    from visbricks.tasks import build_task

    root = write_driving(
        tmp_path / "drive", sequences=6, frames=48, width=128, height=64, val_sequences=1, seed=0
    )
    cfg = load_config(
        "depth-driving",
        [
            f"data.root={root}",
            "data.synth=null",
            f"project={tmp_path / 'runs'}",
            "img_size={width: 128, height: 64}",
            "data.frame_ids=[0, -1]",
            "data.cache=true",
            "model.pretrained=null",
            "model.backbone=mobilenet_v3_small",
            "model.head_args={channels: [8, 16, 32, 64, 128]}",
            # The preset's stride-2 skip made this short one-scale run collapse to a
            # constant depth (bottom/centre 1.0); the recipe measured here has none.
            "model.backbone_args={}",
            # The pin measured for this recipe (the preset's `running` passed seeds 0-4 on an
            # AMD EPYC, 0.17-0.33 on the target, but once stayed flat on a Xeon).
            "model.fixed_scale_over=batch",
            "model.min_depth=0.001",
            "model.max_depth=1",
            "loss.scales=1",
            "optim.lr=0.001",
            "sched.name=constant",
            "train.lr_mult={pose_encoder: 0.1, pose_decoder: 0.1}",
            "batch_size=2",
            "epochs=6",
            "train.val_every=100",  # validate once, after the last epoch
            "train.time=null",
            "train.amp=fp32",
            "train.plots=false",
            "train.tensorboard=false",
            "workers=0",
            "deterministic=true",
            f"seed={SEED}",
        ],
    )
    frames = {name: read_image(pair / f"test_sequence_{name}.jpg") for name in ("target", "source")}
    task = build_task(cfg)
    untrained = task.build_model()
    for name, image in frames.items():
        ratio = bottom_over_centre(predicted_depth(task, untrained, image))
        assert 0.9 < ratio < 1.1, f"{name}: untrained bottom/centre {ratio:.3f}"

    trainer, _ = run_training(cfg)
    run = load_run(trainer.run_dir)
    ratios = {}
    for name, image in frames.items():
        depth = predicted_depth(run.task, run.model, image)
        assert depth.shape == image.shape[:2] and np.isfinite(depth).all() and (depth > 0).all()
        ratios[name] = bottom_over_centre(depth)
    print(f"bottom/centre depth: {ratios}")  # shown with -s or on failure
    # Seeds 0-4 gave at most 0.515 on the target and 0.734 on the source (module docstring).
    assert ratios["target"] < 0.7, ratios
    assert ratios["source"] < 0.9, ratios
