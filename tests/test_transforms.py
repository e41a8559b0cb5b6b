"""Box/mask-aware augmentation: geometric invariants as hypothesis properties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes
from torchvision.transforms import v2

from visbricks.data.transforms import (
    IGNORE_INDEX,
    Letterbox,
    SanitizeBoxes,
    _IoUCrop,
    build_detection_transforms,
    resolve_aug,
    unletterbox_boxes,
)
from visbricks.errors import ConfigError

PROPERTY = settings(max_examples=30, deadline=None)


@st.composite
def samples(draw, max_side: int = 96, max_boxes: int = 5):
    """A uint8 image with integer boxes (>= 2 px) and rectangle masks filling exactly each box."""
    height = draw(st.integers(8, max_side))
    width = draw(st.integers(8, max_side))
    boxes = []
    for _ in range(draw(st.integers(0, max_boxes))):
        x1 = draw(st.integers(0, width - 2))
        y1 = draw(st.integers(0, height - 2))
        boxes.append([x1, y1, draw(st.integers(x1 + 2, width)), draw(st.integers(y1 + 2, height))])
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    masks = torch.zeros(len(boxes), height, width, dtype=torch.uint8)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes):
        mask[y1:y2, x1:x2] = 1
    torch.manual_seed(seed)  # the transforms draw from the global RNG: make failures replayable
    return {
        "image": tv_tensors.Image(torch.randint(0, 256, (3, height, width), generator=gen).byte()),
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            format="XYXY",
            canvas_size=(height, width),
        ),
        "labels": torch.arange(len(boxes), dtype=torch.int64),
        "masks": tv_tensors.Mask(masks),
    }


def assert_valid(sample: dict, min_size: float = 1.0) -> None:
    """Boxes inside the image, none degenerate, one label and one mask per box."""
    height, width = sample["image"].shape[-2:]
    boxes = sample["boxes"]
    assert tuple(boxes.canvas_size) == (height, width)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert (boxes[:, 2] - boxes[:, 0] >= min_size).all()
    assert (boxes[:, 3] - boxes[:, 1] >= min_size).all()
    assert len(sample["labels"]) == len(boxes)
    if "masks" in sample:
        assert sample["masks"].shape == (len(boxes), height, width)


def assert_masks_follow_boxes(sample: dict, tol: float = 2.0) -> None:
    """The bounding box of each transformed mask matches the transformed box within ``tol`` px."""
    masks, boxes = sample["masks"], sample["boxes"].as_subclass(torch.Tensor)
    nonempty = masks.flatten(1).bool().any(1)
    # Every surviving box of >= 2 px must still cover mask pixels.
    assert nonempty.all(), (boxes, masks.sum((1, 2)))
    from_masks = masks_to_boxes(masks[nonempty]) + torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert torch.allclose(from_masks, boxes[nonempty], atol=tol), (from_masks, boxes)


SINGLE_STEPS = {
    "hflip": v2.RandomHorizontalFlip(p=1.0),
    "photometric": v2.RandomPhotometricDistort(p=1.0),
    "zoom_out": v2.RandomZoomOut(fill={tv_tensors.Image: 114}, side_range=(1.0, 3.0), p=1.0),
    "iou_crop": _IoUCrop(),
    "rotate": v2.RandomRotation(degrees=15),
    "resize": v2.Resize((40, 56)),
    "letterbox": Letterbox((48, 64)),
    "letterbox_jitter": Letterbox((48, 64), scale_range=(0.5, 2.0)),
}
# Steps that move pixels without ever pushing a whole object out of the frame.
KEEPS_ALL_BOXES = {"hflip", "photometric", "zoom_out"}


@pytest.mark.parametrize("name", sorted(SINGLE_STEPS))
def test_every_step_keeps_boxes_inside_and_drops_degenerate(name):
    step, sanitize = SINGLE_STEPS[name], SanitizeBoxes(min_size=1)

    @PROPERTY
    @given(samples())
    def check(sample):
        out = sanitize(step(sample))
        assert_valid(out)
        if name in KEEPS_ALL_BOXES:
            assert torch.equal(out["labels"], sample["labels"])

    check()


@pytest.mark.parametrize("name", ["hflip", "resize", "letterbox", "letterbox_jitter", "iou_crop"])
def test_masks_stay_aligned_with_boxes(name):
    # Not tightened to the masks: this checks that v2 moves boxes and masks consistently.
    step, sanitize = SINGLE_STEPS[name], SanitizeBoxes(min_size=2, tighten_to_masks=False)

    @PROPERTY
    @given(samples())
    def check(sample):
        out = sanitize(step(sample))
        assert_masks_follow_boxes(out)

    check()


@PROPERTY
@given(samples(), st.integers(16, 80), st.integers(16, 80))
def test_train_pipeline_output_is_valid(sample, out_h, out_w):
    pipeline = build_detection_transforms((out_h, out_w), True, {"rotate": 10, "min_box_size": 2})
    out = pipeline(sample)
    assert out["image"].dtype == torch.float32
    assert out["image"].shape == (3, out_h, out_w)
    assert_valid(out, min_size=2)
    # Labels that survive are a subset of the originals, in order (no invention, no shuffling).
    kept = out["labels"].tolist()
    assert kept == sorted(set(kept)) and set(kept) <= set(sample["labels"].tolist())


@PROPERTY
@given(samples())
def test_hflip_twice_is_identity(sample):
    flip = v2.RandomHorizontalFlip(p=1.0)
    twice = flip(flip(sample))
    assert torch.equal(twice["image"], sample["image"])
    assert torch.equal(twice["boxes"], sample["boxes"])
    assert torch.equal(twice["masks"], sample["masks"])
    once = flip(sample)
    width = sample["image"].shape[-1]
    # Independent check of one flip: x' = W - x with the corners swapped.
    expected = sample["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1.0, 1, -1, 1])
    expected += torch.tensor([width, 0.0, width, 0])
    assert torch.equal(once["boxes"].as_subclass(torch.Tensor), expected.as_subclass(torch.Tensor))


@PROPERTY
@given(samples(max_side=400), st.integers(16, 128), st.integers(16, 128), st.booleans())
def test_letterbox_then_unletterbox_recovers_boxes(sample, out_h, out_w, jitter):
    # (0.3, 1.0) never overflows the canvas, so nothing is cropped and the map is invertible.
    letterbox = Letterbox((out_h, out_w), scale_range=(0.3, 1.0) if jitter else None)
    out = letterbox(sample)
    scale, pad_x, pad_y = out["letterbox"]
    height, width = sample["image"].shape[-2:]
    back = unletterbox_boxes(out["boxes"], scale, pad_x, pad_y, (height, width))
    assert torch.allclose(back, sample["boxes"].as_subclass(torch.Tensor), atol=1.0)

    # Exactly the requested size; everything outside the pasted image is the fill value.
    image = out["image"]
    assert image.shape == (3, out_h, out_w)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    inside = torch.zeros(out_h, out_w, dtype=torch.bool)
    inside[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = True
    assert (image[:, ~inside] == 114).all()
    if not jitter:  # centred: padding split evenly
        assert abs((out_w - new_w - pad_x) - pad_x) <= 1
        assert abs((out_h - new_h - pad_y) - pad_y) <= 1


def test_unletterbox_clips_to_the_original_image():
    boxes = torch.tensor([[0.0, 0.0, 64.0, 64.0]])  # the whole canvas, padding included
    back = unletterbox_boxes(boxes, scale=0.5, pad_x=0, pad_y=16, orig_size=(64, 128))
    assert back.tolist() == [[0.0, 0.0, 128.0, 64.0]]


def test_letterbox_overflow_crops_and_records_negative_padding():
    torch.manual_seed(0)
    image = tv_tensors.Image(torch.full((3, 20, 20), 7, dtype=torch.uint8))
    boxes = tv_tensors.BoundingBoxes([[0.0, 0.0, 20.0, 20.0]], format="XYXY", canvas_size=(20, 20))
    out = Letterbox((10, 10), scale_range=(2.0, 2.0))(
        {"image": image, "boxes": boxes, "labels": torch.tensor([0])}
    )
    scale, pad_x, pad_y = out["letterbox"]
    assert scale == 1.0 and -10 <= pad_x <= 0 and -10 <= pad_y <= 0
    assert out["image"].shape == (3, 10, 10) and (out["image"] == 7).all()  # no padding at all
    assert out["boxes"].tolist() == [[0.0, 0.0, 10.0, 10.0]]  # clipped to the crop


def test_sanitize_tightens_clipped_boxes_to_the_visible_mask():
    # An L-shaped object; a crop keeps only its vertical bar, so the clipped box is too wide.
    mask = torch.zeros(1, 20, 20, dtype=torch.uint8)
    mask[0, 2:18, 2:6] = 1
    mask[0, 14:18, 2:18] = 1
    sample = {
        "image": tv_tensors.Image(torch.zeros(3, 20, 20, dtype=torch.uint8)),
        "boxes": tv_tensors.BoundingBoxes([[2.0, 2, 18, 18]], format="XYXY", canvas_size=(20, 20)),
        "labels": torch.tensor([0]),
        "masks": tv_tensors.Mask(mask),
    }
    crop = {"top": 0, "left": 0, "height": 12, "width": 20}
    cropped = {k: v2.functional.crop(v, **crop) if k != "labels" else v for k, v in sample.items()}
    assert cropped["boxes"].tolist() == [[2.0, 2.0, 18.0, 12.0]]  # v2 only clips
    assert SanitizeBoxes()(cropped)["boxes"].tolist() == [[2.0, 2.0, 6.0, 12.0]]
    untouched = SanitizeBoxes(tighten_to_masks=False)(cropped)
    assert untouched["boxes"].tolist() == [[2.0, 2.0, 18.0, 12.0]]


def test_semantic_mask_is_padded_with_ignore_index_and_not_sanitized():
    image = tv_tensors.Image(torch.zeros(3, 3, 8, dtype=torch.uint8))
    # As many boxes as mask rows, one degenerate: a naive sanitize would drop a semantic row.
    boxes = [[0.0, 0.0, 4.0, 3.0], [4.0, 0.0, 8.0, 3.0], [2.0, 1.0, 2.0, 1.0]]
    sample = {
        "image": image,
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(3, 8)),
        "labels": torch.tensor([0, 1, 2]),
        "semantic": tv_tensors.Mask(torch.ones(3, 8, dtype=torch.uint8)),
    }
    sanitized = SanitizeBoxes()(sample)
    assert sanitized["labels"].tolist() == [0, 1]
    assert sanitized["semantic"].shape == (3, 8)

    out = build_detection_transforms((8, 8), False, mean=None, std=None)(sample)
    _, pad_x, pad_y = out["letterbox"]
    assert (pad_x, pad_y) == (0, 2)
    semantic = out["semantic"]
    assert (semantic[:2] == IGNORE_INDEX).all() and (semantic[5:] == IGNORE_INDEX).all()
    assert (semantic[2:5] == 1).all()


def test_normalisation_uses_given_mean_and_std():
    image = tv_tensors.Image(torch.full((3, 4, 4), 255, dtype=torch.uint8))
    boxes = tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(4, 4))
    sample = {"image": image, "boxes": boxes, "labels": torch.zeros(0, dtype=torch.int64)}
    out = build_detection_transforms(4, False, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))(sample)
    assert out["image"][:, 0, 0].tolist() == [1.0, 3.0, 0.5]
    raw = build_detection_transforms(4, False, mean=None, std=None)(sample)
    assert raw["image"].dtype == torch.float32 and (raw["image"] == 1.0).all()


def test_train_pipeline_handles_images_without_boxes():
    image = tv_tensors.Image(torch.zeros(3, 30, 40, dtype=torch.uint8))
    boxes = tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(30, 40))
    sample = {"image": image, "boxes": boxes, "labels": torch.zeros(0, dtype=torch.int64)}
    pipeline = build_detection_transforms((32, 32), True, {"iou_crop": 1.0})
    for _ in range(5):
        out = pipeline(sample)
        assert out["image"].shape == (3, 32, 32) and out["boxes"].shape == (0, 4)


def test_zero_probabilities_disable_steps():
    off = {"hflip": 0, "photometric": 0, "zoom_out": 0, "iou_crop": 0, "scale_jitter": None}
    pipeline = build_detection_transforms((32, 32), True, off)
    names = [type(t).__name__ for t in pipeline.transforms]
    assert names == ["_TagSemantic", "Letterbox", "SanitizeBoxes", "ToDtype", "Normalize"]
    on = build_detection_transforms((32, 32), True, {"rotate": 5})
    on_names = {type(t).__name__ for t in on.transforms}
    assert {"RandomPhotometricDistort", "RandomZoomOut", "RandomApply"} <= on_names
    assert {"RandomHorizontalFlip", "RandomRotation"} <= on_names
    eval_names = [type(t).__name__ for t in build_detection_transforms(32, False).transforms]
    assert eval_names == ["_TagSemantic", "Letterbox", "ToDtype", "Normalize"]


def test_unknown_aug_key_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="'hflp'.*did you mean 'hflip'"):
        resolve_aug({"hflp": 0.5})
    with pytest.raises(ConfigError, match="'zoom_out'"):
        resolve_aug({"zoom_out": 1.5})
    with pytest.raises(ConfigError, match="'scale_jitter'"):
        resolve_aug({"scale_jitter": [1.5, 0.5]})
    with pytest.raises(ConfigError, match="img_size"):
        build_detection_transforms((0, 32), True)
    assert resolve_aug(None)["hflip"] == 0.5
    assert resolve_aug({"scale_jitter": [1, 1]})["scale_jitter"] is None
