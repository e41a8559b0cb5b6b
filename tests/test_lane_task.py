"""The lanes task: head shapes, loss terms, the synthetic generator, and overfitting 8 images."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from visbricks.config import load_config
from visbricks.data.formats.tusimple import TuSimple
from visbricks.data.io import write_image
from visbricks.data.lanes import LaneRecord, LaneSet
from visbricks.data.synth.lanes import render_street, write_lanes
from visbricks.errors import ConfigError
from visbricks.models.heads import build_head
from visbricks.models.lane_losses import cell_ce, expectation_loss, ufld_loss

pytestmark = pytest.mark.cost(19)  # seconds here: scheduled early (conftest.py)

W, H = 160, 64


def _config(root, project, *extra):
    rows = 21  # the sample rows written below: 23, 25, ..., 63 of 64
    return load_config(
        "lanes-driving",
        [
            f"data.root={root}",
            "data.synth=null",
            "data.val=train",
            f"project={project}",
            "img_size={width: 160, height: 64}",
            "batch_size=8",
            "workers=0",
            f"model.row_anchors={rows}",
            "model.row_range=[0.359375, 0.984375]",
            "model.col_anchors=16",
            "model.row_cells=40",
            "model.col_cells=20",
            "model.head_args={hidden: 256}",
            "train.plots=false",
            "train.tensorboard=false",
            "deterministic=true",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def eight_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("lanes8")
    records = []
    for f, (rgb, lanes, rows) in enumerate(render_street(3, 8, W, H, 2, stride=5)):
        write_image(root / f"img/{f}.png", rgb)
        records.append(LaneRecord(f"img/{f}.png", W, H, lanes, h_samples=rows.tolist()))
    TuSimple().write(LaneSet(root, records), root, "train")
    return root


def test_head_outputs_and_aux_only_in_training():
    head = build_head(
        "ufld",
        [64, 128, 256, 512],
        [4, 8, 16, 32],
        {"hidden": 32},
        input_size=(64, 160),
        num_lanes=4,
        num_rows=7,
        num_cols=5,
        row_cells=20,
        col_cells=10,
        aux_seg=True,
    )
    feats = [
        torch.randn(2, c, 64 // s, 160 // s) for c, s in zip([64, 128, 256, 512], [4, 8, 16, 32])
    ]
    out = head.train()(feats, (64, 160))
    assert out["loc_row"].shape == (2, 20, 7, 4) and out["loc_col"].shape == (2, 10, 5, 4)
    assert out["exist_row"].shape == (2, 2, 7, 4) and out["exist_col"].shape == (2, 2, 5, 4)
    assert out["seg"].shape == (2, 5, 8, 20)
    assert "seg" not in head.eval()(feats, (64, 160))  # predict/export never see it
    other = head(feats[:-1] + [torch.randn(2, 512, 3, 5)], (96, 160))  # pooled to its grid
    assert other["loc_row"].shape == (2, 20, 7, 4)
    with pytest.raises(ConfigError, match="hiden"):
        build_head("ufld", [512], [32], {"hiden": 3}, input_size=(64, 160))


def test_loss_terms_against_hand_computation():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 3, 2)
    pos = torch.tensor([[[2.0, -1], [0.4, 5], [-1, 3.6]], [[1, 1], [-1, -1], [4.5, 0]]])
    labels = torch.where(pos >= 0, pos.round(), torch.tensor(-1.0)).long()
    want = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-1)
    assert torch.allclose(cell_ce(logits, pos), want)
    # soft targets: 0.8 on the cell, 0.1 on each neighbour (folded back at the ends)
    logp = logits.log_softmax(1)
    total, n = 0.0, 0
    for b, a, k in zip(*torch.nonzero(labels >= 0, as_tuple=True)):
        c = int(labels[b, a, k])
        lo, hi = max(c - 1, 0), min(c + 1, 5)
        total += -(0.8 * logp[b, c, a, k] + 0.1 * logp[b, lo, a, k] + 0.1 * logp[b, hi, a, k])
        n += 1
    assert torch.allclose(cell_ce(logits, pos, soft=0.2), total / n)
    expect = (logits.softmax(1) * torch.arange(6.0).view(1, -1, 1, 1)).sum(1)
    valid = pos >= 0
    want = torch.nn.functional.smooth_l1_loss(expect[valid], pos[valid])
    assert torch.allclose(expectation_loss(logits, pos), want)
    out = {
        "loc_row": logits,
        "loc_col": logits,
        "exist_row": torch.zeros(2, 2, 3, 2),
        "exist_col": torch.zeros(2, 2, 3, 2),
    }
    terms = ufld_loss(out, pos, pos, mean_weight=0.05)
    assert set(terms) == {"loss", "loss_cls", "loss_exist", "loss_mean"}
    assert torch.allclose(
        terms["loss"], terms["loss_cls"] + terms["loss_exist"] + 0.05 * terms["loss_mean"]
    )
    assert torch.allclose(terms["loss_exist"], torch.tensor(2 * np.log(2.0), dtype=torch.float32))


def test_synth_is_deterministic_and_writes_both_formats(tmp_path):
    a = write_lanes(tmp_path / "a", streets=2, frames=2, width=96, height=48, val_streets=1)
    b = write_lanes(tmp_path / "b", streets=2, frames=2, width=96, height=48, val_streets=1)
    for name in ("train.json", "val.json", "list/train_gt.txt", "data.yaml"):
        assert (a / name).read_text() == (b / name).read_text()
    png = "clips/street_000/0001.png"
    assert (a / png).read_bytes() == (b / png).read_bytes()
    doc = json.loads((a / "train.json").read_text().splitlines()[0])
    assert 2 <= len(doc["lanes"]) <= 4 and len(doc["lanes"][0]) == len(doc["h_samples"])
    assert (a / "clips/street_000/0001.lines.txt").is_file()
    with pytest.raises(ConfigError, match="val_streets"):
        write_lanes(tmp_path / "c", streets=2, val_streets=2)


@pytest.mark.slow
def test_overfits_eight_images(eight_images, tmp_path):
    from visbricks.engine.trainer import Trainer
    from visbricks.tasks import build_task

    cfg = _config(
        eight_images,
        tmp_path,
        "epochs=30",
        "optim.lr=0.004",
        "sched.warmup_epochs=0",
        "model.col_lanes=[]",
        "model.aux_seg=true",
        "train.val_every=30",
        "data.aug.hflip=0",
        "data.aug.rotate=0",
        "data.aug.shift=0",
        "data.aug.photometric=0",
        # At 160 px wide, CULane's 30 px of 1640 scale to 2.9 px and TuSimple's 20 of 1280 to
        # 2.5 px, below the 4-px cells of this tiny model: memorisation is checked with lanes
        # 6 px wide and a 4-px point threshold.
        "eval.scale_to_image=false",
        "eval.culane_width=6",
        "eval.tusimple_px=4",
    )
    task = build_task(cfg)
    trainer = Trainer(cfg, task.build_model(), task.build_data(), task)
    trainer.fit()
    result = trainer.evaluate()
    assert result["val/culane_f1"] >= 0.95, result.table
    assert result["val/tusimple_f1"] >= 0.95, result.table
    assert result["val/tusimple_acc"] >= 0.93, result.table


@settings(max_examples=15, deadline=None)
@given(
    flip=st.booleans(),
    rotate=st.floats(0, 8),
    shift=st.floats(0, 0.1),
    seed=st.integers(0, 10_000),
)
def test_augmentation_moves_lanes_with_the_pixels(flip, rotate, shift, seed):
    from visbricks.data.lanes import _affine

    h, w = 96, 160
    lanes = [np.array([[40.0 + 10 * k, 30], [20.0 + 40 * k, 90]]) for k in range(3)]
    image = np.zeros((h, w, 3), np.uint8)
    for ln in lanes:
        cv2.polylines(image, [np.round(ln).astype(np.int32)], False, (255, 255, 255), 5)
    aug = {"hflip": float(flip), "rotate": rotate, "shift": shift}
    out, moved = _affine(image, lanes, np.random.default_rng(seed), aug)
    assert out.shape == image.shape
    for ln in moved:
        for t in np.linspace(0.1, 0.9, 9):  # points along each moved lane
            x, y = ln[0] + t * (ln[1] - ln[0])
            if 3 <= x < w - 3 and 3 <= y < h - 3:
                assert out[int(round(y)), int(round(x))].max() > 100, (x, y)
    if flip:  # mirrored: the lane that was leftmost is now rightmost
        assert moved[0][1, 0] > moved[2][1, 0]


def test_commands_predict_video_and_export(eight_images, tmp_path):
    from visbricks.cli import main

    args = [
        f"data.root={eight_images}",
        "data.synth=null",
        "data.val=train",
        f"project={tmp_path}",
        "img_size={width: 160, height: 64}",
        "batch_size=8",
        "workers=0",
        "epochs=1",
        "model.head_args={hidden: 32}",
        "train.tensorboard=false",
    ]
    assert main(["train", "lanes-driving", *args]) == 0
    run = tmp_path / "lanes" / "lanes-driving"
    assert (run / "plots" / "predictions.png").is_file()
    assert main(["eval", str(run)]) == 0
    frames = sorted((eight_images / "img").glob("*.png"))
    video = tmp_path / "drive.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (W, H))
    for f in frames:
        writer.write(cv2.imread(str(f)))
    writer.release()
    weights = run / "weights" / "best.safetensors"
    assert main(["predict", str(weights), str(video), "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "drive.mp4").is_file()
    preds = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert len(preds) == len(frames) and all("lanes" in p for p in preds)
    assert main(["export", str(weights), "--format", "onnx"]) == 0
    side = json.loads((run / "weights" / "best.json").read_text())
    assert side["decode"]["kind"].startswith("lanes") and "seg" not in str(side["outputs"])
