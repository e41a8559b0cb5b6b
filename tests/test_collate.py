"""DetectionDataset, pad_collate and GroupedBatchSampler: from files on disk to padded batches."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torch.utils.data import DataLoader
from torchvision.ops import masks_to_boxes

from visbricks.data.collate import pad_collate
from visbricks.data.detection import DetectionDataset
from visbricks.data.io import write_image
from visbricks.data.records import DetectionSet, ImageRecord
from visbricks.data.samplers import GroupedBatchSampler
from visbricks.data.transforms import build_detection_transforms, unletterbox_boxes
from visbricks.errors import DataError

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _record(root: Path, name: str, height: int, width: int, boxes, image_id: int) -> ImageRecord:
    rng = np.random.default_rng(image_id)
    write_image(root / name, rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return ImageRecord(
        file=name,
        width=width,
        height=height,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.arange(len(boxes)) % 2,
        image_id=image_id,
    )


@pytest.fixture
def tiny_set(tmp_path: Path) -> DetectionSet:
    records = [
        _record(tmp_path, "a.png", 40, 60, [[5, 5, 30, 35], [40, 10, 58, 20]], 10),
        _record(tmp_path, "b.png", 50, 30, [[2, 3, 20, 40]], 11),
        _record(tmp_path, "c.png", 24, 24, [], 12),
    ]
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return DetectionSet(root=tmp_path, classes=["cat", "dog"], records=records)


def test_item_types_and_letterbox_round_trip(tiny_set):
    ds = DetectionDataset(tiny_set, build_detection_transforms((64, 64), False))
    item = ds[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 64, 64)
    assert type(item["image"]) is torch.Tensor and type(item["boxes"]) is torch.Tensor
    assert item["boxes"].dtype == torch.float32 and item["labels"].dtype == torch.int64
    assert item["labels"].tolist() == [0, 1]
    assert item["image_id"] == 10 and item["orig_size"] == (40, 60)
    back = unletterbox_boxes(item["boxes"], *item["letterbox"], item["orig_size"])
    assert torch.allclose(back, torch.from_numpy(tiny_set.records[0].boxes), atol=1.0)
    assert ds.aspect_ratios() == [60 / 40, 30 / 50, 1.0]


def test_corrupt_image_is_warned_skipped_and_counted(tiny_set):
    ds = DetectionDataset(tiny_set, build_detection_transforms((32, 32), False))
    with pytest.warns(UserWarning, match=r"b\.png"):
        item = ds[1]
    assert item["image_id"] == 12  # the next readable sample, deterministically
    assert ds.num_skipped == 1 and list(ds.bad_files) == ["b.png"]
    assert ds[1]["image_id"] == 12 and ds.num_skipped == 2  # known-bad: not decoded again


def test_corrupt_image_in_strict_mode_raises_naming_the_file(tiny_set):
    ds = DetectionDataset(tiny_set, build_detection_transforms((32, 32), False), strict=True)
    with pytest.raises(DataError, match=r"b\.png"):
        ds[1]


def test_dataset_with_no_readable_image_raises(tmp_path):
    (tmp_path / "x.png").write_bytes(b"garbage")
    records = [ImageRecord(file="x.png", width=4, height=4)]
    ds = DetectionDataset(DetectionSet(root=tmp_path, classes=["a"], records=records))
    with pytest.warns(UserWarning), pytest.raises(DataError, match="no readable sample"):
        ds[0]


def test_cache_serves_decoded_images_without_touching_disk(tiny_set):
    transform = build_detection_transforms((32, 32), False)
    cached = DetectionDataset(tiny_set, transform, cache=True)
    first = cached[0]["image"]
    (tiny_set.root / "a.png").unlink()
    assert torch.equal(cached[0]["image"], first)
    uncached = DetectionDataset(tiny_set, transform)
    with pytest.warns(UserWarning) as caught:
        assert uncached[0]["image_id"] == 12  # a.png gone, b.png corrupt -> c.png
    messages = [str(w.message) for w in caught]
    assert "a.png" in messages[0] and "not found" in messages[0] and "b.png" in messages[1]
    assert uncached.num_skipped == 2


def _rect(height: int, width: int, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y1:y2, x1:x2] = 1
    return mask


def test_masks_from_polygons_and_rle(tmp_path):
    height, width = 30, 40
    boxes = [[4, 4, 14, 12], [20, 5, 35, 25], [1, 20, 9, 29]]
    compressed = mask_utils.encode(np.asfortranarray(_rect(height, width, 20, 5, 35, 25)))
    compressed["counts"] = compressed["counts"].decode()  # as read back from COCO JSON
    # Uncompressed RLE, as COCO stores crowd regions: column-major run lengths from 0s.
    column_major = _rect(height, width, 1, 20, 9, 29).flatten(order="F")
    changes = np.flatnonzero(np.diff(np.r_[0, column_major, 1 - column_major[-1]]))
    uncompressed = {"size": [height, width], "counts": np.diff(np.r_[0, changes]).tolist()}
    record = _record(tmp_path, "m.png", height, width, boxes, 1)
    record.segmentations = [[[4, 4, 14, 4, 14, 12, 4, 12]], compressed, uncompressed]
    ds_set = DetectionSet(root=tmp_path, classes=["a", "b"], records=[record])
    # Letterbox to the image's own size is the identity, so masks compare pixel for pixel.
    ds = DetectionDataset(ds_set, build_detection_transforms((30, 40), False), with_masks=True)
    masks = ds[0]["masks"]
    assert masks.shape == (3, height, width)
    assert np.array_equal(masks[1].numpy(), _rect(height, width, 20, 5, 35, 25))
    assert np.array_equal(masks[2].numpy(), _rect(height, width, 1, 20, 9, 29))
    # pycocotools rasterises a polygon's edges inclusively: within a pixel of the rectangle.
    assert torch.allclose(masks_to_boxes(masks[:1]), torch.tensor([[4.0, 4, 13, 11]]), atol=1)


def test_missing_segmentation_is_a_bad_sample(tmp_path):
    record = _record(tmp_path, "n.png", 20, 20, [[2, 2, 10, 10]], 1)
    ds_set = DetectionSet(root=tmp_path, classes=["a"], records=[record, record])
    with pytest.raises(DataError, match=r"object 0 of n\.png has no segmentation"):
        DetectionDataset(ds_set, with_masks=True, strict=True)[0]


def test_pad_collate_pads_to_stride_multiple_and_keeps_targets():
    gen = torch.Generator().manual_seed(0)
    shapes = [(30, 50), (64, 33), (7, 7)]
    batch = [
        {
            "image": torch.rand(3, h, w, generator=gen),
            "boxes": torch.tensor([[0.0, 0.0, w, h]]),
            "labels": torch.tensor([i]),
            "masks": torch.ones(1, h, w, dtype=torch.uint8),
            "image_id": i,
            "orig_size": (h, w),
        }
        for i, (h, w) in enumerate(shapes)
    ]
    out = pad_collate(batch, stride=32, pad_value=-1.0)
    assert out["image"].shape == (3, 3, 64, 64)
    assert out["image_sizes"] == shapes
    for i, (h, w) in enumerate(shapes):
        assert torch.equal(out["image"][i, :, :h, :w], batch[i]["image"])
        padded = torch.ones(64, 64, dtype=torch.bool)
        padded[:h, :w] = False
        assert (out["image"][i][:, padded] == -1.0).all()
        # Masks of different sizes stay the sample's own tensors; boxes and labels become
        # views of one storage (one shared-memory segment from a loader worker) with equal values.
        assert out["masks"][i] is batch[i]["masks"]
        assert torch.equal(out["boxes"][i], batch[i]["boxes"])
        assert torch.equal(out["labels"][i], batch[i]["labels"])
    for key in ("boxes", "labels"):
        storages = {t.untyped_storage().data_ptr() for t in out[key]}
        assert len(storages) == 1, key
    assert out["image_id"].tolist() == [0, 1, 2]
    assert out["orig_size"] == shapes
    assert pad_collate(batch, stride=1)["image"].shape == (3, 3, 64, 50)


def test_pad_collate_packs_per_image_targets_only_where_they_agree():
    boxes = [torch.rand(n, 4) for n in (3, 0, 2)]
    batch = [
        {"image": torch.zeros(3, 8, 8), "boxes": b, "labels": torch.arange(len(b))} for b in boxes
    ]
    out = pad_collate(batch, stride=8)
    assert [tuple(b.shape) for b in out["boxes"]] == [(3, 4), (0, 4), (2, 4)]
    assert all(torch.equal(a, b) for a, b in zip(out["boxes"], boxes))
    out["boxes"][0][0, 0] = -1.0  # a view of a copy: the samples are not touched
    assert boxes[0][0, 0] >= 0
    # Mixed dtypes (or trailing shapes) are left as they came.
    batch[1]["labels"] = batch[1]["labels"].to(torch.int32)
    out = pad_collate(batch, stride=8)
    assert [t is s["labels"] for t, s in zip(out["labels"], batch)] == [True] * 3


def test_pad_collate_pads_semantic_masks_with_ignore_index():
    batch = [
        {"image": torch.zeros(3, 4, 4), "semantic": torch.zeros(4, 4, dtype=torch.uint8)},
        {"image": torch.zeros(3, 2, 6), "semantic": torch.ones(2, 6, dtype=torch.uint8)},
    ]
    out = pad_collate(batch, stride=4)
    assert out["semantic"].shape == (2, 4, 8)
    assert (out["semantic"][0, :, 4:] == 255).all() and (out["semantic"][1, 2:] == 255).all()
    assert (out["semantic"][1, :2, :6] == 1).all()


def test_grouped_batch_sampler_covers_every_index_once_in_homogeneous_groups():
    rng = np.random.default_rng(0)
    ratios = rng.uniform(0.4, 2.5, size=103).tolist()
    ratios[:3] = [1.0, 1.0, 0.999]  # the edge value belongs to the landscape group
    sampler = GroupedBatchSampler(ratios, batch_size=8, generator=torch.Generator().manual_seed(1))
    batches = list(sampler)
    assert len(batches) == len(sampler)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(103))
    for b in batches:
        assert 1 <= len(b) <= 8
        assert len({ratios[i] >= 1 for i in b}) == 1
    assert len([b for b in batches if len(b) < 8]) <= 2  # at most one short batch per group

    again = GroupedBatchSampler(ratios, batch_size=8, generator=torch.Generator().manual_seed(1))
    assert list(again) == batches
    other = GroupedBatchSampler(ratios, batch_size=8, generator=torch.Generator().manual_seed(2))
    assert list(other) != batches

    dropped = GroupedBatchSampler(ratios, batch_size=8, drop_last=True, shuffle=False)
    full = list(dropped)
    assert len(full) == len(dropped) and all(len(b) == 8 for b in full)
    assert full == list(dropped)  # no shuffle: the same every epoch


def test_grouped_batch_sampler_with_quantised_bins():
    ratios = [0.5, 0.7, 1.0, 1.4, 2.0, 3.0] * 4
    sampler = GroupedBatchSampler(ratios, batch_size=4, shuffle=False, bin_edges=(0.75, 1.5))
    for b in sampler:
        assert len({int(np.digitize(ratios[i], [0.75, 1.5])) for i in b}) == 1


def test_dataloader_end_to_end(tiny_set):
    (tiny_set.root / "b.png").unlink()
    tiny_set.records.pop(1)
    ds = DetectionDataset(tiny_set, build_detection_transforms((48, 40), True), cache=True)
    sampler = GroupedBatchSampler(ds.aspect_ratios(), 2, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=partial(pad_collate, stride=32))
    seen = []
    for batch in loader:
        assert batch["image"].shape[-2:] == (64, 64)
        seen += batch["image_id"].tolist()
        for boxes, labels in zip(batch["boxes"], batch["labels"]):
            assert boxes.shape == (len(labels), 4)
    assert sorted(seen) == [10, 12]


def test_real_coco_instance_masks_follow_boxes_through_augmentation():
    folder = REAL_DATA / "labelme" / "instance_segmentation" / "data_dataset_coco"
    if not folder.is_dir():
        pytest.skip(f"real data not found at {folder}")
    coco = json.loads((folder / "annotations.json").read_text())
    records = []
    for image in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        records.append(
            ImageRecord(
                file=image["file_name"],
                width=image["width"],
                height=image["height"],
                boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                labels=[a["category_id"] - 1 for a in anns],
                segmentations=[a["segmentation"] for a in anns],
                image_id=image["id"],
            )
        )
    classes = [c["name"] for c in coco["categories"][1:]]
    ds_set = DetectionSet(root=folder, classes=classes, records=records)
    torch.manual_seed(0)
    for train in (False, True):
        transform = build_detection_transforms((160, 192), train, {"min_box_size": 4})
        ds = DetectionDataset(ds_set, transform, with_masks=True)
        for i in range(len(ds)):
            item = ds[i]
            masks, boxes = item["masks"], item["boxes"]
            keep = masks.flatten(1).bool().any(1)
            assert keep.sum() >= len(boxes) - 1  # a sliver may vanish under nearest resizing
            from_masks = masks_to_boxes(masks[keep]) + torch.tensor([0.0, 0, 1, 1])
            assert (from_masks - boxes[keep]).abs().max() <= 2.0
