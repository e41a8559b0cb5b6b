"""Mosaic (``data.aug.mosaic``): four images in one window, boxes and masks moved with their
pixels, slivers dropped; built by the detection dataset for the train split only."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_transforms import PROPERTY, samples
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes

from visbricks.config import load_config
from visbricks.data.mosaic import mosaic4
from visbricks.errors import ConfigError
from visbricks.tasks import build_task


def _solid(colour: int, height: int, width: int, image_id: int) -> dict:
    """An image of one grey level whose one object is the whole image."""
    return {
        "image": tv_tensors.Image(torch.full((3, height, width), colour, dtype=torch.uint8)),
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor([[0.0, 0.0, width, height]]), format="XYXY", canvas_size=(height, width)
        ),
        "labels": torch.tensor([colour]),
        "image_id": image_id,
        "orig_size": (height, width),
    }


@pytest.mark.parametrize("seed", range(8))
def test_each_box_covers_the_pixels_of_its_own_image(seed):
    # Four flat images of different sizes (one portrait, one tiny) and grey levels: a kept box
    # must lie on its image's grey, its label being that grey, and the window is filled with them.
    four = [
        _solid(10, 60, 80, 1),
        _solid(70, 100, 40, 2),
        _solid(130, 12, 20, 3),
        _solid(190, 64, 64, 4),
    ]
    out = mosaic4(four, (64, 96), fill=250, generator=torch.Generator().manual_seed(seed))
    image = out["image"]
    assert image.shape == (3, 64, 96) and tuple(out["boxes"].canvas_size) == (64, 96)
    assert out["image_id"] == 1 and out["orig_size"] == (60, 80)
    assert len(out["boxes"]) == len(out["labels"]) >= 1
    for box, label in zip(out["boxes"].round().long(), out["labels"]):
        x1, y1, x2, y2 = box.tolist()
        inside = image[0, y1 + 1 : y2 - 1, x1 + 1 : x2 - 1]  # a pixel's margin for the resize
        assert inside.numel() == 0 or (inside == label).all(), (seed, box, label)
    # Every grey present in the window belongs to a kept box or to a sliver under 10 %.
    kept = set(out["labels"].tolist())
    for grey in (10, 70, 130, 190):
        share = (image[0] == grey).float().mean()
        assert grey in kept or share < 0.1, (seed, grey, share)


def test_a_box_cut_to_a_sliver_by_the_window_is_dropped():
    # Four 64x64 images around the junction (34, 34) of a 128x128 canvas whose window is
    # [32, 96)^2: the above-left image shows a 2x2 corner, the above-right and below-left ones
    # 2-pixel strips (all under 10 % of their boxes), the below-right one 62x62 of 64x64.
    four = [_solid(10 * (k + 1), 64, 64, k) for k in range(4)]
    out = mosaic4(four, (64, 64), junction=(34, 34))
    assert out["labels"].tolist() == [40]
    boxes = out["boxes"].as_subclass(torch.Tensor)
    torch.testing.assert_close(boxes, torch.tensor([[2.0, 2.0, 64.0, 64.0]]))
    # Just above the threshold a strip is kept: 7 rows by 62 columns, 10.6 % of its box.
    out = mosaic4(four, (64, 64), junction=(39, 34))
    assert sorted(out["labels"].tolist()) == [20, 40]


@PROPERTY
@given(samples(), samples(), samples(), samples(), st.integers(16, 80), st.integers(16, 80))
def test_boxes_stay_with_their_masks_inside_the_window(a, b, c, d, out_h, out_w):
    four = []
    for i, s in enumerate((a, b, c, d)):
        s = dict(s)
        s.update(image_id=i, orig_size=tuple(s["image"].shape[-2:]))
        four.append(s)
    out = mosaic4(four, (out_h, out_w))
    boxes, masks = out["boxes"], out["masks"].as_subclass(torch.Tensor)
    assert out["image"].shape == (3, out_h, out_w)
    assert len(boxes) == len(out["labels"]) == len(masks)
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 2] <= out_w).all()
    assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 3] <= out_h).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    # Each mask (a rectangle filling its box before) still fills its box, to the pixel that
    # nearest-neighbour resizing may move an edge by.
    visible = masks.flatten(1).bool().any(1)
    tight = masks_to_boxes(masks[visible]) + torch.tensor([0.0, 0.0, 1.0, 1.0])
    torch.testing.assert_close(tight, boxes[visible], atol=1.01, rtol=0)


def test_only_the_detect_train_split_gets_mosaics(tmp_path):
    from visbricks.data.synth.shapes import write_detection

    data = write_detection(tmp_path / "shapes", n_train=6, n_val=2, width=64, height=48, seed=0)
    cfg = load_config(
        "detect-shapes",
        [f"data.root={data}", "data.synth=null", "img_size=64", "data.aug={mosaic: 1.0}"],
    )
    bundle = build_task(cfg).datasets()
    assert bundle.train.mosaic == 1.0 and bundle.val.mosaic == 0.0
    torch.manual_seed(0)
    for i in range(4):
        item = bundle.train[i]
        assert item["image"].shape == (3, 64, 64)
        boxes = item["boxes"]
        assert ((boxes >= 0) & (boxes <= 64)).all() and len(boxes) == len(item["labels"])
    # Single-object localisation has no mosaic: the key is unknown there, and named.
    with pytest.raises(ConfigError, match="mosaic"):
        load_config("locate-shapes", ["data.aug={mosaic: 0.5}"])
    with pytest.raises(ConfigError, match="mosaic"):
        load_config("detect-shapes", ["data.aug={mosaic: 1.5}"])


def test_close_mosaic_trains_the_last_epochs_on_whole_images(tmp_path, capsys):
    from visbricks.data.synth.shapes import write_detection
    from visbricks.engine.callbacks import Callback
    from visbricks.engine.trainer import Trainer

    class Spy(Callback):
        order = 10  # after CloseMosaic (5): sees what the epoch trains on
        main_only = False

        def __init__(self) -> None:
            self.seen: list[tuple[float, int]] = []

        def on_train_epoch_start(self, trainer, epoch, n_batches):
            self.seen.append((trainer.data.train.mosaic, id(trainer.train_loader)))

    data = write_detection(tmp_path / "shapes", n_train=8, n_val=2, width=64, height=48, seed=0)
    cfg = load_config(
        "detect-shapes",
        [f"data.root={data}", "data.synth=null", "img_size=64", "batch_size=4", "epochs=4",
         "train.time=null", "train.plots=false", "train.tensorboard=false", "workers=1",
         "data.aug={mosaic: 1.0, close_mosaic: 2}", f"project={tmp_path / 'runs'}"],
    )  # fmt: skip
    task = build_task(cfg)
    spy = Spy()
    Trainer(cfg, task.build_model(), task.build_data(), task=task, callbacks=[spy]).fit()
    mosaic = [m for m, _ in spy.seen]
    loaders = [loader for _, loader in spy.seen]
    assert mosaic == [1.0, 1.0, 0.0, 0.0]
    # The loader (and its persistent worker, which holds a copy of the dataset) is new from
    # epoch 3 on, built once.
    assert loaders[0] == loaders[1] != loaders[2] == loaders[3]
    assert capsys.readouterr().out.count("mosaics off for the last 2 epochs") == 1
    with pytest.raises(ConfigError, match="close_mosaic"):
        load_config("detect-shapes", ["data.aug={close_mosaic: -1}"])
